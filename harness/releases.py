"""The series for every sglang release in patches/releases.toml, derived from the canonical one.

patches/ is written against the stub of the reference release (0.5.6). For another release R the
series is derived in a scratch git repository: the reference's real upstream files (every file
vendor_stub/UPSTREAM_PIN.toml pins: nsa_backend.py, model_executor/cuda_graph_runner.py) are
committed at their upstream paths, each canonical patch (paths mapped by `to_upstream`: a pinned
stub file to its upstream path, any other vendor_stub/<rel> to python/sglang/srt/layers/attention/
<rel>; an sglang test under vendor_stub/test/ to the folder R's test layout keeps its kernel tests
in, with R's CI registration where that layout asks for one) is committed on top of them; then R's
files are committed on the same base and each patch is applied, else its commit cherry-picked
(three-way), in order. A patch whose hunks
conflict takes its hand resolution from patches/releases/<patch stem>.toml, else derivation stops
with a one-line error naming the release, the patch and the hunk.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import git

from .loader import UPSTREAM_DIR  # noqa: F401 (where vendor_stub/ sits in sglang's repository)
from .names import Names, part, rename, word
from .series import PATCH_DIR, REPO_ROOT, STUB_DIR, Files, Series, SeriesError

TABLE = REPO_ROOT / PATCH_DIR / "releases.toml"
RESOLUTIONS = REPO_ROOT / PATCH_DIR / "releases"
WHEEL_DIR = "sglang/srt/layers/attention"  # the same folder inside the wheel
REPO_PREFIX = "python/"  # a wheel path sglang/... sits at python/sglang/... in sglang's repository
STUB_TESTS = f"{STUB_DIR}/test/"  # sglang tests the series adds, placed by each release's test layout

# Scratch repositories must not depend on whoever runs them: no user or system config, fixed
# identity and dates (derived commits, hence exported patches, are reproducible).
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "nsa-verify-patches",
    "GIT_AUTHOR_EMAIL": "nsa-verify-patches@users.noreply.github.com",
    "GIT_COMMITTER_NAME": "nsa-verify-patches",
    "GIT_COMMITTER_EMAIL": "nsa-verify-patches@users.noreply.github.com",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_EDITOR": "true",
}
GIT_CONFIG = {
    ("merge", "conflictStyle"): "merge",
    ("rerere", "enabled"): "false",
    ("core", "autocrlf"): "false",
    ("commit", "gpgSign"): "false",
}


class ReleaseError(SeriesError):
    """A release the matrix cannot handle; the one-line message says why and what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("NSA_UPSTREAM_CACHE", Path.home() / ".cache" / "nsa-verify-patches"))


def version_key(version: str) -> tuple:
    """0.5.5 < 0.5.5.post1 < 0.5.6 (PEP 440 for the plain and .postN forms sglang uses)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)*)(?:\.post(\d+))?", version)
    if not m:
        raise ReleaseError(f"'{version}' is not a release version (expected e.g. 0.5.6 or 0.5.6.post1)")
    return tuple(int(x) for x in m.group(1).split(".")), int(m.group(2) or -1)


@dataclass(frozen=True)
class Release:
    version: str
    what: str
    status: str
    model_runner: dict = field(default_factory=dict)  # extra attributes this release's __init__ reads
    # Identifiers the release renamed (the series' name -> the release's), whole words: the series is
    # derived on the release's files with its names put back, then every derived file is renamed.
    renames: dict = field(default_factory=dict)
    # What the release's replay does on the host, for its cover letter ("": the table's host_work).
    host_work: str = ""
    # Parts of identifiers and of paths the release renamed (the series' part -> the release's):
    # 0.5.13's NSA -> DSA takes nsa_backend.py to dsa_backend.py, NSAMetadata to DSAMetadata,
    # nsa_cache_seqlens_int32 to dsa_cache_seqlens_int32 (`rename`).
    name_parts: dict = field(default_factory=dict)
    # Files the release moved: the series' repository path -> the release's (after name_parts).
    paths: dict = field(default_factory=dict)

    @property
    def names(self) -> Names:
        return Names(self.renames, self.name_parts, self.paths)

    def path(self, series_path: str) -> str:
        """Where the release keeps the file the series has at `series_path` (a repository path)."""
        return self.names.path(series_path)


@dataclass(frozen=True)
class TestLayout:
    """Where sglang keeps its attention kernel tests from release `since` on."""

    since: str
    folder: str  # repository path
    why: str
    registration: str = ""  # the module-level CI registration a test there must make ("" where none)


@dataclass(frozen=True)
class Table:
    reference: str
    releases: tuple[Release, ...]
    replaced: tuple[dict, ...]
    test_layouts: tuple[TestLayout, ...] = ()  # newest first

    @classmethod
    def load(cls, path: Path = TABLE) -> "Table":
        data = tomllib.loads(path.read_text())
        common = data.get("model_runner", {})
        return cls(
            data["reference"],
            tuple(Release(**{**r, "model_runner": {**common, **r.get("model_runner", {})},
                             "host_work": r.get("host_work", data.get("host_work", ""))}) for r in data["release"]),
            tuple(sorted(data.get("replaced", ()), key=lambda r: version_key(r["since"]), reverse=True)),
            tuple(sorted((TestLayout(**t) for t in data.get("test_layout", ())),
                         key=lambda t: version_key(t.since), reverse=True)),
        )

    def test_layout(self, version: str | None = None) -> TestLayout:
        """The test layout of `version` (default: the reference release)."""
        key = version_key(version or self.reference)
        for layout in self.test_layouts:  # newest first: the latest one `version` has
            if key >= version_key(layout.since):
                return layout
        raise ReleaseError(
            f"sglang {version or self.reference} predates every [[test_layout]] in "
            f"{TABLE.relative_to(REPO_ROOT)}: add the folder it keeps its kernel tests in"
        )

    @property
    def versions(self) -> list[str]:
        return [r.version for r in self.releases]

    def release(self, version: str) -> Release:
        for r in self.releases:
            if r.version == version:
                return r
        key = version_key(version)
        for r in self.replaced:  # newest first: the latest replacement that covers `version`
            if key >= version_key(r["since"]):
                raise ReleaseError(
                    f"sglang {version} has no slow target-verify replay to patch: upstream replaced it "
                    f"in {r['since']} with {r['by']}; choose one of {', '.join(self.versions)}"
                )
        raise ReleaseError(
            f"sglang {version} is not in {TABLE.relative_to(REPO_ROOT)}: choose one of {', '.join(self.versions)}"
        )


def fetch_wheel(version: str, package: str = "sglang") -> Path:
    """The release's wheel from the cache, downloaded once with pip into a scratch folder then renamed."""
    folder = cache_dir() / f"{package}-{version}"
    wheels = sorted(folder.glob(f"{package}-{version}-*.whl"))
    if wheels:
        return wheels[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}.", dir=folder.parent) as staging:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
             "--disable-pip-version-check", "-d", staging, f"{package}=={version}"],
            capture_output=True, text=True,
        )
        got = sorted(Path(staging).glob(f"{package}-{version}-*.whl"))
        if proc.returncode or not got:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1].strip()
            raise ReleaseError(
                f"no wheel of {package}=={version} in {folder} and pip could not download it ({last}): "
                f"connect to PyPI, or put the wheel in {folder}"
            )
        folder.mkdir(exist_ok=True)
        os.replace(got[0], folder / got[0].name)
    return folder / got[0].name


def wheel_files(version: str, under: str = WHEEL_DIR) -> dict[str, bytes]:
    """Files of the release's wheel under `under` (wheel paths: sglang/...)."""
    with zipfile.ZipFile(fetch_wheel(version)) as z:
        return {n: z.read(n) for n in z.namelist() if n.startswith(under + "/") and not n.endswith("/")}


def wheel_file(version: str, path: str) -> bytes:
    with zipfile.ZipFile(fetch_wheel(version)) as z:
        try:
            return z.read(path)
        except KeyError:
            raise ReleaseError(f"sglang {version}'s wheel has no {path}") from None


def pinned_files(pin_text: str | None = None) -> dict[str, str]:
    """Every upstream file the stub reproduces: vendor_stub/<file> -> its path inside the wheel.

    From vendor_stub/UPSTREAM_PIN.toml: nsa_backend.py (the top-level `path`) and each [[file]].
    """
    pin = tomllib.loads(pin_text if pin_text is not None else (REPO_ROOT / STUB_DIR / "UPSTREAM_PIN.toml").read_text())
    files = {f"{STUB_DIR}/nsa_backend.py": pin["path"]}
    files.update({f"{STUB_DIR}/{f['stub']}": f["path"] for f in pin.get("file", ())})
    return files


UPSTREAM_FILES = pinned_files()  # vendor_stub/<file> -> wheel path, for the files the stub pins


def to_upstream(stub_path: str, layout: TestLayout | None = None) -> str:
    """A stub path's place in sglang's repository: a pinned file's upstream path; a test
    vendor_stub/test/<name> -> <the release's test folder>/<name> (`layout`, default the
    reference's); else vendor_stub/<rel> -> python/sglang/srt/layers/attention/<rel> (files the
    series adds)."""
    if stub_path in UPSTREAM_FILES:
        return REPO_PREFIX + UPSTREAM_FILES[stub_path]
    if stub_path.startswith(STUB_TESTS):
        return f"{(layout or Table.load().test_layout()).folder}/{stub_path[len(STUB_TESTS):]}"
    if not stub_path.startswith(STUB_DIR + "/"):
        raise ReleaseError(f"the series touches {stub_path}, outside {STUB_DIR}/: only {STUB_DIR}/ maps to upstream")
    return UPSTREAM_DIR + stub_path[len(STUB_DIR) :]


def upstream_roots(table: Table | None = None) -> list[str]:
    """The repository paths (folders or files) holding everything the series can touch upstream."""
    table = table or Table.load()
    moved = [p for r in table.releases for p in r.paths.values()]  # where a release moved a file
    extra = {REPO_PREFIX + p for p in UPSTREAM_FILES.values()} | set(moved)
    tests = {t.folder for t in table.test_layouts}
    return [UPSTREAM_DIR, *sorted(p for p in extra if not p.startswith(UPSTREAM_DIR + "/")), *sorted(tests)]


def registered(test: str, registration: str) -> str:
    """An sglang test module with `registration` (e.g. register_cuda_ci(...)) made at module level
    after its imports, and the registry's import sorted among its sglang imports."""
    module = "sglang.test.ci.ci_register"
    lines = test.splitlines(keepends=True)
    imports = [n for n in ast.parse(test).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    end = imports[-1].end_lineno
    later = [n.lineno - 1 for n in imports if isinstance(n, ast.ImportFrom) and (n.module or "") > module
             and (n.module or "").startswith("sglang.")]
    at = later[0] if later else end
    wanted = f"from {module} import {registration.split('(', 1)[0]}\n"
    return "".join(lines[:at] + [wanted] + lines[at:end] + ["\n", registration + "\n"] + lines[end:])


def release_files(version: str, release: Release | None = None) -> dict[str, bytes]:
    """The release's unpatched files the series touches, at their sglang repository paths; with
    `release`, read where it keeps them (Release.path) and keyed by the series' paths."""
    series_paths = [REPO_PREFIX + wheel for wheel in UPSTREAM_FILES.values()]
    where = release.path if release is not None else str
    return {p: wheel_file(version, where(p).removeprefix(REPO_PREFIX)) for p in series_paths}


def release_tree(version: str, table: Table | None = None) -> dict[str, bytes]:
    """The release's own files the series touches, at the release's repository paths: the tree its
    exported series `git am`s onto (0.5.13's backend at dsa_backend.py)."""
    table = table or Table.load()
    release = table.release(version) if version != table.reference else None
    files = release_files(version, release)
    return {release.path(p) if release else p: data for p, data in files.items()}


def map_patch(text: bytes, layout: TestLayout | None = None) -> bytes:
    """A canonical patch with its vendor_stub/ paths moved to sglang's repository layout (tests to
    `layout`'s folder, default the reference's); a test it adds registers as `layout` asks."""
    header, sep, diff = (b"\n" + text).partition(b"\ndiff --git ")
    if not sep:
        return b""
    out = []
    for block in re.split(rb"(?m)^(?=diff --git )", b"diff --git " + diff):
        if layout is not None and layout.registration and _adds_test(block):
            block = _registered_block(block, layout.registration)
        for line in block.splitlines(keepends=True):
            if line.startswith((b"diff --git ", b"--- a/", b"+++ b/", b"rename from ", b"rename to ")):
                line = re.sub(
                    rb"(a/|b/|rename from |rename to )(" + re.escape(STUB_DIR.encode()) + rb"/[^\s]+)",
                    lambda m: m.group(1) + to_upstream(m.group(2).decode(), layout).encode(),
                    line,
                )
            out.append(line)
    return b"".join(out)


def _adds_test(block: bytes) -> bool:
    """Whether one file's diff creates an sglang test (vendor_stub/test/test_*.py)."""
    return b"\n--- /dev/null\n" in block and re.search(
        rb"\n\+\+\+ b/" + re.escape(STUB_TESTS.encode()) + rb"test_[^\s/]*\.py\n", block
    ) is not None


def _registered_block(block: bytes, registration: str) -> bytes:
    """A new test file's diff, its content `registered` (one hunk, regenerated)."""
    head, _, body = block.partition(b"\n@@ ")
    added = [line[1:] for line in body.split(b"\n", 1)[1].splitlines(keepends=True) if line.startswith(b"+")]
    text = registered(b"".join(added).decode(), registration)
    lines = text.splitlines(keepends=True)
    head = re.sub(rb"\nindex 0+\.\.[0-9a-f]+", b"", head)  # the blob id no longer matches
    return head + f"\n@@ -0,0 +1,{len(lines)} @@\n".encode() + b"".join(b"+" + line.encode() for line in lines)


def black_formatted(renamed: bytes, upstream: bytes | None) -> bytes:
    """A renamed file as black (88) writes it, where the release's own file (`upstream`; None for a
    file the series adds) is black's already: a longer name can push a line past 88 columns, and
    sglang's pre-commit runs black. Where upstream's file is not, its formatting is left alone."""
    import black  # the lint's pinned black (requirements.txt)

    mode = black.Mode(line_length=88)
    if upstream is not None and black.format_str(upstream.decode(), mode=mode) != upstream.decode():
        return renamed
    return black.format_str(renamed.decode(), mode=mode).encode()


def renamed_back(data: bytes, renames: dict, version: str, path: str, parts: dict | None = None) -> bytes:
    """The release's file with its names put back to the series' (`renames` and `parts` inverted).
    Refused where the file already uses a series name: renaming forward again would not give the
    file back."""
    for key, table, pattern in (("renames", renames, word), ("name_parts", parts or {}, part)):
        for old, new in table.items():
            if pattern(old).search(data):
                raise ReleaseError(
                    f"sglang {version}'s {path} uses '{old}' and renames it to '{new}': a rename map must "
                    f"not name an identifier the release still has; drop it from the release's {key} in "
                    f"{TABLE.name}"
                )
            data = pattern(new).sub(old.encode(), data)
    return data


@dataclass(frozen=True)
class Conflict:
    start: int  # 1-based lines of the conflict block in the conflicted file
    end: int
    function: str
    sha256: str  # of the block with its marker labels stripped (labels hold commit ids)

    def where(self) -> str:
        return f"lines {self.start}-{self.end} in {self.function}"


def conflicts(text: str) -> list[Conflict]:
    lines = text.splitlines(keepends=True)
    found, start = [], None
    for i, line in enumerate(lines):
        if line.startswith("<<<<<<< "):
            start = i
        elif line.startswith(">>>>>>> ") and start is not None:
            block = "".join(normalize_marker(marker_line) for marker_line in lines[start : i + 1])
            found.append(Conflict(start + 1, i + 1, enclosing_function(lines, start), sha256(block)))
            start = None
    return found


def normalize_marker(line: str) -> str:
    for marker in ("<<<<<<<", ">>>>>>>"):
        if line.startswith(marker + " "):
            return marker + "\n"
    return line


def enclosing_function(lines: list[str], index: int) -> str:
    for line in reversed(lines[:index]):
        m = re.match(r"\s*(?:async\s+)?def\s+(\w+)", line)
        if m:
            return m.group(1)
    return "module level"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def conflict_hashes(resolution: dict) -> list[str]:
    """The conflicts a resolution resolves: one hash, or a list where releases whose own code differs
    outside the hunk (so the blocks hash differently) take the same resolved text."""
    sha = resolution["conflict_sha256"]
    return [sha] if isinstance(sha, str) else list(sha)


def resolve(text: str, resolutions: list[dict], where: str) -> str | None:
    """`text` with each conflict block replaced by its reviewed resolution; None if one is missing."""
    by_hash = {sha: r["resolved"] for r in resolutions for sha in conflict_hashes(r)}
    blocks = conflicts(text)
    if not all(c.sha256 in by_hash for c in blocks):
        return None
    lines = text.splitlines(keepends=True)
    for c in reversed(blocks):  # bottom-up: earlier line numbers stay valid
        lines[c.start - 1 : c.end] = [by_hash[c.sha256]]
    return "".join(lines)


@dataclass(frozen=True)
class Applied:
    patch: str  # canonical file name, e.g. 0002-list-elim.patch
    how: str  # "clean" (the mapped patch applies as is), "3-way", "resolved", "dropped" (a [[drop]])
    commit: str  # the derived commit in the scratch repository
    message: str  # the canonical patch's header (DEP-3 fields), for export


class Derivation:
    """A scratch repository holding the reference base, the canonical commits and one branch per release."""

    def __init__(self, series: Series | None = None, table: Table | None = None):
        self.series = series or Series()
        self.table = table or Table.load(self.series.root / PATCH_DIR / "releases.toml")
        self._tmp = tempfile.TemporaryDirectory(prefix="nsa-releases-")
        self.root = Path(self._tmp.name)
        self.repo = git.Repo.init(self.root)
        self.repo.git.update_environment(**GIT_ENV)
        with self.repo.config_writer() as cw:
            for (section, option), value in GIT_CONFIG.items():
                cw.set_value(section, option, value)
        self._derived: dict[str, list[Applied]] = {}
        self._bases: dict[str, str] = {}  # version -> the commit holding its unpatched file

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> "Derivation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _commit_release_files(self, version: str, series_names: bool = False) -> str:
        """The release's files committed where it keeps them; with `series_names`, where the series
        keeps them and under the series' names (renamed back)."""
        if series_names:
            release = self.table.release(version)
            files = {rel: renamed_back(data, release.renames, version, release.path(rel), release.name_parts)
                     for rel, data in release_files(version, release).items()}
        else:
            files = release_tree(version, self.table)
        for rel, data in files.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.repo.git.add("-A")
        self.repo.git.commit("-q", "--allow-empty", "-m", f"sglang {version}" + (" (series' names)" if series_names else ""))
        return self.repo.head.commit.hexsha

    def _renamed(self, version: str, derived: list[Applied]) -> list[Applied]:
        """The derived series again, on the release's own files, each derived tree renamed and each
        file where the release keeps it."""
        release = self.table.release(version)
        self.repo.git.checkout("-q", "-B", f"release-{version}-renamed", self.base)
        for root in upstream_roots(self.table):  # the reference's files, left by the base commit
            self.repo.git.rm("-r", "-q", "--ignore-unmatch", "--", root)
        self._bases[version] = self._commit_release_files(version)
        upstream = release_tree(version, self.table)
        out = []
        for applied in derived:
            for root in upstream_roots(self.table):
                self.repo.git.rm("-r", "-q", "--ignore-unmatch", "--", root)
            for rel, data in self.files(applied.commit).items():
                rel = release.path(rel)
                path = self.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                renamed = rename(data, release.renames, release.name_parts)
                if rel.endswith(".py") and renamed != data:
                    renamed = black_formatted(renamed, upstream.get(rel))
                path.write_bytes(renamed)
            self.repo.git.add("-A")
            self.repo.git.commit("-q", "--allow-empty", "-m", applied.patch)
            out.append(Applied(applied.patch, applied.how, self.repo.head.commit.hexsha, applied.message))
        return out

    def _patch_header(self, patch: str) -> str:
        text = (self.series.root / PATCH_DIR / patch).read_text()
        return text.split("\ndiff --git ", 1)[0].rstrip("\n") if not text.startswith("diff --git ") else ""

    @cached_property
    def canonical(self) -> list[Applied]:
        """The base commit (reference file) and one commit per canonical patch, all `git apply` clean."""
        self.repo.git.checkout("-q", "--orphan", "canonical")
        self.base = self._bases[self.table.reference] = self._commit_release_files(self.table.reference)
        out = []
        for patch in self.series.patch_files:
            mapped = map_patch((self.series.root / PATCH_DIR / patch).read_bytes(), self.table.test_layout())
            if mapped:  # a header without a diff yet: an empty commit keeps the series' numbering
                try:
                    self._git_apply(mapped)
                except git.GitCommandError as e:
                    raise ReleaseError(
                        f"patches/{patch} does not apply to sglang {self.table.reference}'s real "
                        f"files ({_last_line(e)}): the series must stay clean on the reference; fix the patch"
                    ) from None
            self.repo.git.commit("-q", "--allow-empty", "-m", patch)
            out.append(Applied(patch, "clean", self.repo.head.commit.hexsha, self._patch_header(patch)))
        return out

    def _git_apply(self, mapped: bytes, check: bool = False) -> None:
        patch = Path(self.repo.git_dir) / "mapped.patch"  # inside .git: never part of a commit
        patch.write_bytes(mapped)
        self.repo.git.apply("--check" if check else "--index", "--whitespace=nowarn", str(patch))

    def derive(self, version: str) -> list[Applied]:
        """The release's series: one commit per canonical patch, with how it got there."""
        self.table.release(version)  # unknown or replaced versions fail here, with the reason
        if version in self._derived:
            return self._derived[version]
        canonical = self.canonical
        if version == self.table.reference:
            self._derived[version] = canonical
            return canonical
        renamed = bool(self.table.release(version).names)
        self.repo.git.checkout("-q", "-B", f"release-{version}", self.base)
        self._bases[version] = self._commit_release_files(version, series_names=renamed)
        out = []
        layout = self.table.test_layout(version)
        for applied in canonical:
            if self.dropped(applied.patch, version):  # upstream did the patch's work: no commit to mail
                self.repo.git.commit("-q", "--allow-empty", "-m", f"{applied.patch} (dropped)")
                out.append(Applied(applied.patch, "dropped", self.repo.head.commit.hexsha, applied.message))
                continue
            canonical_text = (self.series.root / PATCH_DIR / applied.patch).read_bytes()
            mapped = map_patch(canonical_text, layout)
            try:
                if mapped:
                    self._git_apply(mapped, check=True)
                    self._git_apply(mapped)
                self.repo.git.commit("-q", "--allow-empty", "-m", applied.patch)
                how = "clean"
            except git.GitCommandError:
                self.repo.git.reset("-q", "--hard")
                if layout != self.table.test_layout() and STUB_TESTS.encode() in canonical_text:
                    raise ReleaseError(
                        f"sglang {version}: patches/{applied.patch} touches {STUB_TESTS} and does not apply "
                        f"as is; a cherry-pick would keep the reference's test layout: make the patch apply"
                    ) from None
                how = self._cherry_pick(version, applied)
            if self._fix_up(version, applied.patch):
                how += " + fixup"
            out.append(Applied(applied.patch, how, self.repo.head.commit.hexsha, applied.message))
        if renamed:
            out = self._renamed(version, out)
        self._derived[version] = out
        return out

    def _cherry_pick(self, version: str, applied: Applied) -> str:
        try:
            self.repo.git.cherry_pick("--allow-empty", "--keep-redundant-commits", applied.commit)
            return "3-way"
        except git.GitCommandError:
            pass
        unmerged = sorted({p for p, _ in self.repo.index.unmerged_blobs().items()})
        resolutions_file = RESOLUTIONS.relative_to(REPO_ROOT) / f"{Path(applied.patch).stem}.toml"
        resolutions = self.resolutions(applied.patch, version)
        for path in unmerged:
            text = (self.root / path).read_text()
            resolved = resolve(text, resolutions, path)
            if resolved is None:
                missing = [c for c in conflicts(text) if c.sha256 not in {s for r in resolutions for s in conflict_hashes(r)}]
                self.repo.git.cherry_pick("--abort")
                where = missing[0].where() if missing else "a conflict git could not mark (binary or rename)"
                raise ReleaseError(
                    f"sglang {version}: patches/{applied.patch} conflicts in {path} at {where}: "
                    f"no resolution for it in {resolutions_file} (conflict_sha256 = "
                    f"\"{missing[0].sha256 if missing else '-'}\"); resolve it by hand and record the text there"
                )
            (self.root / path).write_text(resolved)
            self.repo.git.add(path)
        self.repo.git.commit("-q", "--allow-empty", "--no-edit")
        return "resolved"

    def _release_data(self, patch: str, key: str, version: str) -> list[dict]:
        path = self.series.root / PATCH_DIR / "releases" / f"{Path(patch).stem}.toml"
        if not path.exists():
            return []
        return [r for r in tomllib.loads(path.read_text()).get(key, []) if version in r["releases"]]

    def resolutions(self, patch: str, version: str) -> list[dict]:
        return self._release_data(patch, "resolution", version)

    def _fix_up(self, version: str, patch: str) -> bool:
        """The release's [[fixup]]s of `patch` made in its derived commit (amended): a hunk that merged
        without conflict but names what the release keeps elsewhere. Each `before` must occur once."""
        fixups = self._release_data(patch, "fixup", version)
        for fixup in fixups:
            path = self.root / fixup["path"]
            text = path.read_text() if path.exists() else ""
            if text.count(fixup["before"]) != 1:
                raise ReleaseError(
                    f"sglang {version}: patches/{patch}'s fixup in {fixup['function']} finds its text "
                    f"{text.count(fixup['before'])} times in {fixup['path']}, not once: update it in "
                    f"{RESOLUTIONS.relative_to(REPO_ROOT)}/{Path(patch).stem}.toml"
                )
            path.write_text(text.replace(fixup["before"], fixup["after"]))
            self.repo.git.add(fixup["path"])
        if fixups:
            self.repo.git.commit("-q", "--amend", "--allow-empty", "--no-edit")
        return bool(fixups)

    def dropped(self, patch: str, version: str) -> str | None:
        """Why `patch` is left out of `version`'s series (upstream already does its work), else None.

        A [[drop]] in patches/releases/<patch stem>.toml: the release's series keeps the patch's
        place as an empty commit (how = "dropped"), which the export does not mail, so the later
        patches are merged onto the release's own code where the dropped one would have changed it."""
        drops = self._release_data(patch, "drop", version)
        return " ".join(drops[0]["why"].split()) if drops else None

    def files(self, commit: str) -> Files:
        """The series-touched files at `commit`: python/sglang/srt/... (repository paths) -> bytes."""
        tree = self.repo.commit(commit).tree
        out = {}
        for root in upstream_roots(self.table):
            try:
                item = tree / root
            except KeyError:  # a test folder this release's tree has no file in
                continue
            blobs = [item] if item.type == "blob" else [b for b in item.traverse() if b.type == "blob"]
            out.update({b.path: b.data_stream.read() for b in blobs})
        return out

    def base_commit(self, version: str) -> str:
        """The commit holding the release's unpatched file."""
        self.derive(version)
        return self._bases[version]

    def diff(self, version: str, index: int) -> str:
        """The release's derived patch `index` (0-based) as a diff against the previous state."""
        series = self.derive(version)
        before = self.base_commit(version) if index == 0 else series[index - 1].commit
        return self.repo.git.diff(before, series[index].commit, "--no-color", "--no-ext-diff", strip_newline_in_stdout=False)


def _last_line(e: git.GitCommandError) -> str:
    return (str(e.stderr).strip().splitlines() or ["?"])[-1].strip()
