"""The fused-era track: its release table, upstream's module from each wheel, the series applied.

A track is a base file (fused/base/, pinned by sha256), a series of patches against it
(fused/patches/series) and a release table (fused/RELEASES.toml). Everything here reads those
three; nothing names a release. The series is moved and applied by harness.series, as the 0.5.6
track's is (`make apply-<stage>`, `make refresh TRACK=fused`): the base and every stage are read
from HEAD and the patch files, never from the working tree, so a fused stage applied in fused/base/
changes nothing the tests or the GPU check call "the base" or "patched".

Upstream's kernels run on CPU through the Triton interpreter with two changes made for that run
alone, neither to what the kernels compute: `assert <tensor>.is_cuda` statements are removed with
`ast`, and `interpreter_bool_masks()` hands the interpreter's load/store a boolean copy of a mask
that it built as 0/1 integers (triton 3.9 builds `scalar_mask & vector_mask` as int32, then
refuses it: "mask has unsupported dtype"); every such mask is checked to hold only 0 and 1.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import re
import sys
import tomllib
import zipfile
from functools import cache
from pathlib import Path
from types import ModuleType


TRACK_DIR = Path(__file__).resolve().parent
REPO_ROOT = TRACK_DIR.parent
WHEEL_CACHE = Path.home() / ".cache" / "nsa-verify-patches"
# A GPU machine without the wheels gets their modules as plain files (see gpu_check.py).
MODULE_CACHE = REPO_ROOT / "build" / "fused"


class TrackError(Exception):
    """A one-line refusal: what is wrong and what to type."""


@cache
def table() -> dict:
    with open(TRACK_DIR / "RELEASES.toml", "rb") as f:
        return tomllib.load(f)


def versions() -> list[str]:
    return [r["version"] for r in table()["release"]]


def release(version: str) -> dict:
    for entry in table()["release"]:
        if entry["version"] == version:
            return entry
    raise TrackError(
        f"sglang {version} is not in the fused track ({versions()[0]} - {versions()[-1]}); "
        f"choose one of: {' '.join(versions())}"
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def upstream_source(version: str) -> str:
    """Release `version`'s fused metadata module, from its wheel, else from the copy `prepare_build`
    left in build/fused/ (a GPU host without the wheels)."""
    entry = release(version)
    wheels = sorted((WHEEL_CACHE / f"sglang-{version}").glob("sglang-*.whl"))
    copied = MODULE_CACHE / version / "metadata.py"
    if wheels:
        with zipfile.ZipFile(wheels[0]) as wheel:
            text = wheel.read(entry["module"].removeprefix("python/")).decode()
    elif copied.exists():
        text = copied.read_text()
    else:
        raise TrackError(
            f"no wheel for sglang {version} in {WHEEL_CACHE}: run "
            f"python -c \"from harness.releases import fetch_wheel; fetch_wheel('{version}')\""
        )
    if _sha256(text) != entry["module_sha256"]:
        raise TrackError(f"sglang {version}'s {entry['module']} differs from fused/RELEASES.toml")
    return text


def _series():
    """The track's harness.series.Series in this checkout, or None on a host without git (or
    without a repository): there the base is the file, which nothing applies patches to."""
    try:
        import git  # here, not at the top: a GPU host without git loads the prepared copy instead

        from harness.series import Series
        from harness.tracks import FUSED
    except ImportError:
        return None
    try:
        return Series(REPO_ROOT, FUSED)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def series() -> list[Path]:
    """The series' patch files, in fused/patches/series order (plain file reads: no git needed)."""
    from harness.tracks import FUSED

    return [REPO_ROOT / FUSED.patch_dir / name for name in FUSED.patch_files(REPO_ROOT)]


def base_source() -> str:
    """sglang's file the series is against: the track's baseline as HEAD holds it, byte for byte."""
    track = table()["track"]
    series = _series()
    if series is None:
        text = (REPO_ROOT / track["base_file"]).read_text()
    else:
        text = series.baseline[track["base_file"]].decode()
    if _sha256(text) != track["base_sha256"]:
        raise TrackError(f"{track['base_file']} is not sglang {track['base_version']}'s file")
    return text


def patched_source(stage: str | None = None) -> str:
    """The base at `stage` of the series (default: the last), as `make apply-<stage>` writes it."""
    series = _series()
    if series is None:
        raise TrackError("applying the series needs git and this repository: on a GPU host, run "
                         "`python -m fused.gpu_check prepare` where they are and carry build/")
    return series.materialize(stage or series.names()[-1])[table()["track"]["base_file"]].decode()


def derived_source(version: str) -> str:
    """The patched base as release `version`'s module: its page-size parameter's name.

    The only difference of interface across the track (see RELEASES.toml); the module path is
    where the file goes, not what it holds."""
    text = patched_source()
    name = page_size_arg(version)
    if name != "physical_page_size":
        text = re.sub(r"\bphysical_page_size\b", name, text)
    return text


class _StripCudaAsserts(ast.NodeTransformer):
    def visit_Assert(self, node: ast.Assert):
        test = node.test
        return None if isinstance(test, ast.Attribute) and test.attr == "is_cuda" else node


def without_cuda_asserts(source: str) -> str:
    tree = _StripCudaAsserts().visit(ast.parse(source))
    return ast.unparse(ast.fix_missing_locations(tree))


def load(source: str, name: str) -> ModuleType:
    """`source` as a module named `name` (Triton reads a kernel's source from its file)."""
    MODULE_CACHE.mkdir(parents=True, exist_ok=True)
    path = MODULE_CACHE / f"{name}-{_sha256(source)[:12]}.py"
    if not path.exists():
        path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@cache
def upstream_module(version: str, cpu: bool = True) -> ModuleType:
    source = upstream_source(version)
    name = "fused_upstream_" + version.replace(".", "_")
    return load(without_cuda_asserts(source) if cpu else source, name + ("_cpu" if cpu else ""))


PREPARED_PATCHED = MODULE_CACHE / "patched" / "metadata.py"


def prepare_build() -> list[Path]:
    """Copy every release's module and the patched base into build/fused/ (for a host without
    the wheels or git: the GPU check reads them from there)."""
    written = []
    for version in versions():
        text = upstream_source(version)
        path = MODULE_CACHE / version / "metadata.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    PREPARED_PATCHED.parent.mkdir(parents=True, exist_ok=True)
    PREPARED_PATCHED.write_text(patched_source())
    return written + [PREPARED_PATCHED]


@cache
def patched_module(cpu: bool = True) -> ModuleType:
    source = patched_source() if not PREPARED_PATCHED.exists() or cpu else PREPARED_PATCHED.read_text()
    return load(without_cuda_asserts(source) if cpu else source, "fused_patched" + ("_cpu" if cpu else ""))


def page_size_arg(version: str) -> str:
    """The name of the page-size parameter in `version` (real_page_size became physical_page_size)."""
    return release(version)["page_size_arg"]


@contextlib.contextmanager
def interpreter_bool_masks():
    """Let triton's interpreter accept masks it built as 0/1 integers (see the module docstring)."""
    import numpy as np
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    load_, store = builder.create_masked_load, builder.create_masked_store

    def as_bool(mask):
        if mask.data.dtype == np.bool_:
            return mask
        if not np.isin(mask.data, (0, 1)).all():
            raise AssertionError(f"a mask holding values other than 0/1: {np.unique(mask.data)}")
        return interpreter.TensorHandle(mask.data.astype(np.bool_), mask.dtype)

    builder.create_masked_load = lambda self, ptrs, mask, *rest: load_(self, ptrs, as_bool(mask), *rest)
    builder.create_masked_store = lambda self, ptrs, value, mask, *rest: store(self, ptrs, value, as_bool(mask), *rest)
    try:
        yield
    finally:
        builder.create_masked_load, builder.create_masked_store = load_, store
