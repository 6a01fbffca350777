"""The patch series: move a track's base up and down its series like `quilt push/pop`, safely.

A track (harness.tracks) is a base directory, a series of patches against it and a release table:
the 0.5.6 track moves vendor_stub/ along patches/series, the fused track fused/base/ along
fused/patches/series. Stages are the track's baseline (the base as committed at HEAD) and one per
patch in its series. Every operation first computes the complete target state in a scratch
repository, so a patch that does not apply changes nothing; and every operation refuses while the
base holds content that no stage of the series can give back, so no edit is ever overwritten. A
patch that does not apply only takes away the stages from it up.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import secrets
import stat
import tempfile
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import git

from .loader import REPO_ROOT
from .tracks import STUB, Track, stage_name  # noqa: F401 (stage_name: callers import it from here)

# The 0.5.6 track's names, for the code that serves that track alone (stages, releases, upstream).
STUB_DIR = STUB.base_dir
PATCH_DIR = STUB.patch_dir
BASELINE = STUB.baseline
SET_ASIDE = STUB.set_aside
BRING_BACK = STUB.bring_back

Files = dict[str, bytes]  # repo-relative path -> exact bytes

# The user's git configuration must not shape a patch or a materialized stage (diff.noprefix,
# core.abbrev, color.ui, apply.whitespace...): scratch repositories read no global or system config,
# and variables that would point git at another repository are dropped.
_SCRATCH_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_DIR": None,
    "GIT_WORK_TREE": None,
    "GIT_INDEX_FILE": None,
}
# Spelled out as well, so a patch's format is fixed here even if the environment is not honoured.
_DIFF_OPTIONS = (
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-renames",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--abbrev=7",
    "--unified=3",
    "--diff-algorithm=myers",
)


class SeriesError(RuntimeError):
    """A refusal: the message names the problem and the command that fixes it."""


@dataclass(frozen=True)
class Status:
    """Where the track's base (vendor_stub/ on the 0.5.6 track) stands relative to `stage`.

    kind: "clean" (exactly the stage), "minus" (the stage less some of its files), "leftover" (the
    stage plus files the series adds at other stages, e.g. left untracked by a plain `git stash`),
    or "edits" (anything else, described against the stage the last apply left or the nearest one).
    """

    stage: str
    kind: str = "clean"
    modified: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    leftover: tuple[str, ...] = ()  # in "leftover": each file's content is some stage's version
    leftover_edited: tuple[str, ...] = ()  # in "leftover": contents no stage has
    reauthoring: str = ""  # stage whose broken patch `make refresh` writes anew on top of `stage`
    left_at: str | None = None  # in "edits", when `stage` is only the nearest: what the last apply left
    broken: str = ""  # the first patch that does not apply, with how to re-author it
    track: Track = STUB

    @property
    def edited(self) -> tuple[str, ...]:
        return tuple(sorted(self.modified + self.added + self.missing + self.leftover + self.leftover_edited))

    @property
    def clean(self) -> bool:
        return self.kind == "clean"

    @property
    def unrecoverable(self) -> tuple[str, ...]:
        """Files whose content no stage holds: moving to another stage would lose them."""
        return tuple(sorted(self.modified + self.added + self.leftover_edited))

    def describe(self) -> str:
        """The state, then the first patch that does not apply, if any."""
        return self.state() + (f"; {self.broken}" if self.broken else "")

    def state(self) -> str:
        """Where the base stands, and the fix where it is not a stage plus edits."""
        base = f"{self.track.base_dir}/"
        where = f"stage '{self.stage}'"
        if self.reauthoring:
            where += f" (re-authoring '{self.reauthoring}': `{self.track.make('refresh')}` writes its patch)"
        if self.kind == "clean":
            text = f"{base} is at {where}"
        elif self.kind == "minus":
            text = (
                f"{base} is {where} less files it holds: {', '.join(self.missing)}; "
                f"`make apply-{self.stage}` restores them"
            )
        elif self.kind == "leftover":
            files = ", ".join(self.leftover + tuple(f"{p} (edited)" for p in self.leftover_edited))
            fix = (
                f"`{self.track.set_aside}` keeps them aside"
                if self.leftover_edited
                else f"`make apply-{self.stage}` removes them"
            )
            text = (
                f"{base} is {where} plus files the series adds at other stages "
                f"(a git stash without -u leaves untracked files behind): {files}; {fix}"
            )
        else:
            parts = [
                f"{label} {', '.join(paths)}"
                for label, paths in (("modified", self.modified), ("new", self.added), ("deleted", self.missing))
                if paths
            ]
            if self.left_at is None:
                text = f"{base} holds local edits on top of {where}: {'; '.join(parts)}"
            else:
                text = (
                    f"{base} holds edits nearest to {where} (the last apply left '{self.left_at}'): "
                    + "; ".join(parts)
                )
        return text


def _scratch_repo(files: Files) -> tuple[tempfile.TemporaryDirectory, git.Git]:
    tmp = tempfile.TemporaryDirectory(prefix="nsa-series-")
    scratch = git.Git(tmp.name)
    scratch.update_environment(**_SCRATCH_ENV)
    scratch.init("-q")
    write_tree(Path(tmp.name), files)
    return tmp, scratch


def write_tree(root: Path, files: Files) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path, under: str) -> Files:
    base = root / under
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _check_pristine(files: Files, track: Track, root: Path) -> None:
    """HEAD must hold the baseline, as far as the track pins it: the stub's pinned regions at their
    stub_lines (UPSTREAM_PIN.toml), the fused base's file by the sha256 of its release table."""
    restore = (
        f"commit {track.base_dir}/ only at baseline; restore it with "
        f"`git checkout <last good commit> -- {track.base_dir}` and commit"
    )
    pin_path = f"{track.base_dir}/UPSTREAM_PIN.toml"
    if pin_path in files:
        stub = files[f"{track.base_dir}/nsa_backend.py"].splitlines(keepends=True)
        for region in tomllib.loads(files[pin_path].decode())["region"]:
            start, end = region["stub_lines"]
            if hashlib.sha256(b"".join(stub[start - 1 : end])).hexdigest() != region["sha256"]:
                raise SeriesError(
                    f"HEAD's {track.base_dir}/nsa_backend.py is not the pristine baseline (pinned region "
                    f"'{region['name']}' differs): {restore}"
                )
    table = root / track.release_table
    pinned = tomllib.loads(table.read_text()).get("track", {}) if table.is_file() else {}
    if "base_file" in pinned and "base_sha256" in pinned:  # a stub without a pin: nothing to check
        data = files.get(pinned["base_file"], b"")
        if hashlib.sha256(data).hexdigest() != pinned["base_sha256"]:
            raise SeriesError(
                f"HEAD's {pinned['base_file']} is not sglang {pinned.get('base_version', 'base')}'s file "
                f"({track.release_table} pins its sha256): {restore}"
            )


def _write_atomically(path: Path, data: bytes) -> None:
    """Write beside `path`, then rename over it: a reader (or an interrupt) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _compare(stage: Files, tree: Files) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(modified, added, missing) paths of `tree` against `stage`."""
    modified = tuple(sorted(p for p in stage.keys() & tree.keys() if stage[p] != tree[p]))
    return modified, tuple(sorted(tree.keys() - stage.keys())), tuple(sorted(stage.keys() - tree.keys()))


def _git_error(e: git.GitCommandError) -> str:
    """The first line git printed, without GitPython's quoting around stderr."""
    lines = [line.strip().removeprefix("stderr:").strip(" '") for line in str(e.stderr or "").splitlines()]
    return next((line for line in lines if line), "git failed")


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _changed_lines(before: Files, after: Files) -> int:
    total = 0
    for path in before.keys() | after.keys():
        a, b = _lines(before.get(path, b"")), _lines(after.get(path, b""))
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if tag != "equal":
                total += (i2 - i1) + (j2 - j1)
    return total


class Series:
    """One track's series in the checkout at `root` (default: the 0.5.6 track in this one)."""

    def __init__(self, root: Path | str = REPO_ROOT, track: Track = STUB):
        self.root = Path(root)
        self.track = track
        self.repo = git.Repo(self.root)
        self._materialized: dict[str, Files] = {}

    @property
    def base_dir(self) -> str:
        return self.track.base_dir

    @property
    def baseline_stage(self) -> str:
        return self.track.baseline

    # -- reading -------------------------------------------------------------------------------
    @property
    def patch_files(self) -> list[str]:
        return self.track.patch_files(self.root)

    def names(self) -> list[str]:
        return self.track.stages(self.root)

    def _check_stage(self, name: str) -> int:
        names = self.names()
        if name not in names:
            raise SeriesError(f"unknown stage '{name}': choose one of {', '.join(names)}")
        return names.index(name)

    def _patch_path(self, name: str) -> Path:
        return self.root / self.track.patch_dir / self.patch_files[self._check_stage(name) - 1]

    def _patch_label(self, patch_file: str) -> str:
        return f"{self.track.patch_dir}/{patch_file}"

    @property
    def baseline(self) -> Files:
        """The base as committed at HEAD, read from the blobs byte-exact."""
        try:
            tree = self.repo.head.commit.tree / self.base_dir
        except (KeyError, ValueError) as e:
            raise SeriesError(f"HEAD has no {self.base_dir}/: commit the pristine base first") from e
        files = {blob.path: blob.data_stream.read() for blob in tree.traverse() if blob.type == "blob"}
        _check_pristine(files, self.track, self.root)
        return files

    def worktree(self) -> Files:
        """The files git would see under the base (ignored ones such as __pycache__ left out)."""
        listed = self.repo.git.ls_files("--cached", "--others", "--exclude-standard", "-z", "--", self.base_dir)
        paths = sorted({p for p in listed.split("\0") if p})
        return {p: (self.root / p).read_bytes() for p in paths if (self.root / p).is_file()}

    def patch_text(self, name: str) -> bytes:
        index = self._check_stage(name)
        if index == 0:
            raise SeriesError(f"'{self.baseline_stage}' has no patch")
        path = self._patch_path(name)
        if not path.is_file():
            raise SeriesError(
                f"{self.track.patch_dir}/series names {path.name}, which does not exist: create it "
                f"(a DEP-3 header is enough), then `make apply-{name}` and `{self.track.make('refresh')}`"
            )
        return path.read_bytes()

    def digest(self, name: str) -> str:
        """Identifies a stage's content: baseline plus the patches up to it."""
        h = hashlib.sha256()
        for rel, data in sorted(self.baseline.items()):
            h.update(rel.encode() + b"\0" + data)
        for stage in self.names()[1 : self._check_stage(name) + 1]:
            h.update(self.patch_text(stage))
        return h.hexdigest()[:12]

    def materialize(self, name: str) -> Files:
        """The files of the base at stage `name`, computed without touching the working tree."""
        index = self._check_stage(name)
        key = self.digest(name)
        if key not in self._materialized:
            self._materialized[key] = self.baseline if index == 0 else self._push(index)
        return dict(self._materialized[key])

    def _push(self, index: int) -> Files:
        """Stage `index`: its patch applied on top of the stage below (itself materialized once)."""
        names = self.names()
        below = self.materialize(names[index - 1])
        text = self.patch_text(names[index])
        if b"\ndiff --git " not in b"\n" + text:
            return below  # a header with no diff yet: a new patch waiting for `make refresh`
        tmp, scratch = _scratch_repo(below)
        with tmp:
            patch = Path(tmp.name) / ".patch"  # the text digest() hashed, not a re-read of the file
            patch.write_bytes(text)
            # A track whose patches name sglang's own paths has them applied under its base.
            directory = [f"--directory={self.track.patch_root}"] if self.track.patch_root else []
            try:
                scratch.apply("--whitespace=nowarn", *directory, str(patch))
            except git.GitCommandError as e:
                raise SeriesError(
                    f"{self._patch_label(self.patch_files[index - 1])} does not apply on top of stage "
                    f"'{names[index - 1]}' ({_git_error(e)}): stages from "
                    f"'{names[index]}' up are unavailable; re-author it with "
                    f"`python -m harness apply {names[index]} --reauthor`, redo its change, then "
                    f"`{self.track.make('refresh')}`"
                ) from None
            patch.unlink()
            return read_tree(Path(tmp.name), self.base_dir)

    def reachable(self) -> tuple[list[str], str, str]:
        """(stages that materialize, the first that does not or "", why it does not or "")."""
        names = self.names()
        for i, name in enumerate(names):
            try:
                self.materialize(name)
            except SeriesError as e:
                return names[:i], name, str(e)
        return names, "", ""

    # -- state ---------------------------------------------------------------------------------
    @property
    def _applied_record(self) -> Path:
        # Like quilt's .pc/applied-patches: which stage the last apply left (per clone and track,
        # untracked); a second line "reauthor" when that stage's broken patch is being written anew.
        suffix = "" if self.track.default else f"-{self.track.name}"
        return Path(self.repo.git_dir) / f"nsa-verify-applied-stage{suffix}"

    def _record(self) -> tuple[str, bool]:
        if not self._applied_record.exists():  # no apply yet: the tree started as HEAD's, baseline
            return self.baseline_stage, False
        lines = self._applied_record.read_text().split()
        return (lines[0] if lines else ""), lines[1:] == ["reauthor"]

    def status(self) -> Status:
        """Where the base stands. Edits sit on the stage the last apply left, if that is known."""
        return dataclasses.replace(self._status(), track=self.track)  # the track words its advice

    def _status(self) -> Status:
        current = self.worktree()
        available, first_broken, broken = self.reachable()
        if not available:  # not even baseline: HEAD's base is not pristine
            raise SeriesError(broken)
        recorded, reauthor = self._record()
        if reauthor and recorded == first_broken:  # then the tree is measured from the stage below
            base = self.names()[self.names().index(recorded) - 1]
            modified, added, missing = _compare(self.materialize(base), current)
            kind = "edits" if modified or added or missing else "clean"
            return Status(base, kind, modified, added, missing, reauthoring=recorded)  # says what `broken` would

        compared = {name: _compare(self.materialize(name), current) for name in available}

        def pick(candidates: list[str]) -> str:  # the stage the last apply left, else the highest
            return recorded if recorded in candidates else candidates[-1]

        exact = [n for n in available if not any(compared[n])]
        if exact:
            return Status(pick(exact), broken=broken)
        minus = [n for n in available if not compared[n][0] and not compared[n][1]]
        if minus:
            stage = pick(minus)
            return Status(stage, "minus", missing=compared[stage][2], broken=broken)
        versions: dict[str, set[bytes]] = {}
        for name in available:
            for path, data in self.materialize(name).items():
                versions.setdefault(path, set()).add(data)
        leftover = [
            n
            for n in available
            if not compared[n][0] and not compared[n][2] and all(p in versions for p in compared[n][1])
        ]
        if leftover:
            stage = pick(leftover)
            extra = compared[stage][1]
            edited = {p for p in extra if current[p] not in versions[p]}
            # Edits only to files the last applied stage adds (a patch that adds nothing else) are
            # that stage plus edits, for `make refresh`; not a lower stage plus leftovers.
            if recorded in available and compared[recorded][0] and set(compared[recorded][0]) <= edited \
                    and not compared[recorded][1] and not compared[recorded][2]:
                return Status(recorded, "edits", *compared[recorded], broken=broken)
            return Status(
                stage,
                "leftover",
                leftover=tuple(p for p in extra if current[p] in versions[p]),
                leftover_edited=tuple(p for p in extra if current[p] not in versions[p]),
                broken=broken,
            )
        if recorded in available:
            stage = self._holds_higher_stage(recorded, available, current) or recorded
            return Status(stage, "edits", *compared[stage], broken=broken)
        nearest = min(available, key=lambda n: _changed_lines(self.materialize(n), current))  # ties: the lower
        return Status(nearest, "edits", *compared[nearest], broken=broken, left_at=recorded)

    def _holds_higher_stage(self, recorded: str, available: list[str], tree: Files) -> str | None:
        """The stage above `recorded` that `tree` is plus edits, if any (else None).

        A stash popped at baseline brings back a stage and its edits while the last apply left
        baseline. A stage S qualifies when the tree changes every file S changes (relative to the
        recorded stage) and is nearer to S than to the recorded stage in changed lines; the nearest
        such S wins (ties: the higher). Edits typed at the recorded stage stay its own: they are
        nearer to it than to any patch above it.
        """
        below = self.materialize(recorded)
        own = _changed_lines(below, tree)
        best, best_lines = None, own
        for name in available[available.index(recorded) + 1 :]:
            stage = self.materialize(name)
            changed = {p for p in stage.keys() | below.keys() if stage.get(p) != below.get(p)}
            if not changed or any(tree.get(p) == below.get(p) for p in changed):
                continue
            lines = _changed_lines(stage, tree)
            if lines <= best_lines and (best is not None or lines < own):
                best, best_lines = name, lines
        return best

    def worktree_note(self) -> str:
        """One line when the base is not exactly a stage: stage verdicts do not cover what it holds."""
        status = self.status()
        if status.clean:
            return ""
        return (
            f"{status.state()}; stage verdicts check the committed series, not this tree: "
            f"`{self.track.harness('verify', 'worktree')}` checks {self.base_dir}/ as it stands"
        )

    def _refuse_if_unrecoverable(self, status: Status, action: str) -> None:
        lost = status.unrecoverable
        if not lost:
            return
        if status.kind == "edits" and not self._refresh_problem(status):
            patch = self._patch_path(status.reauthoring or status.stage).name
            keep = f"keep them in {patch} with `{self.track.make('refresh')}`, or "
        else:
            keep = ""
        raise SeriesError(
            f"refusing to {action}: {status.state()}; {keep}set them aside with `{self.track.set_aside}` and retry "
            f"({self.track.bring_back})"
        )

    # -- moving --------------------------------------------------------------------------------
    def apply(self, name: str, reauthor: bool = False) -> Status:
        """Bring the base to stage `name` (stacked: pushes or pops as needed).

        reauthor: `name`'s patch does not apply; go to the stage below and make `make refresh`
        write that patch anew from the edits made there.
        """
        index = self._check_stage(name)
        available, first_broken, broken = self.reachable()
        if reauthor and name != first_broken:
            raise SeriesError(
                f"'{name}' is not a stage whose patch fails to apply"
                + (f" (the first such is '{first_broken}')" if first_broken else "")
                + f": move to it with `make apply-{name}`"
            )
        if not reauthor and name not in available:
            raise SeriesError(broken)
        status = self.status()
        self._refuse_if_unrecoverable(status, f"move to '{name}'")
        target = self.names()[index - 1] if reauthor else name
        self._replace_worktree(self.worktree(), self.materialize(target))
        self._applied_record.write_text(name + ("\nreauthor\n" if reauthor else "\n"))
        return self.status()

    def unapply(self) -> Status:
        return self.apply(self.baseline_stage)

    def _replace_worktree(self, old: Files, new: Files) -> None:
        """Write `new` over `old` all-or-nothing: stage every file beside its target, then rename.

        A replaced file keeps its mode; a new one gets what git would give it (0o666 less the umask).
        """
        staged: list[tuple[Path, Path]] = []
        try:
            for rel, data in new.items():
                if old.get(rel) == data:
                    continue
                target = self.root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                staged.append((tmp, target))
                if target.exists():
                    os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        try:
            for tmp, target in staged:
                os.replace(tmp, target)
            for rel in old.keys() - new.keys():
                (self.root / rel).unlink()
        except BaseException:  # put back what was already replaced
            for rel, data in old.items():
                (self.root / rel).write_bytes(data)
            for rel in new.keys() - old.keys():
                (self.root / rel).unlink(missing_ok=True)
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise

    # -- authoring -----------------------------------------------------------------------------
    def diff(self, before: Files, after: Files) -> str:
        """`git diff` of two states of the base, paths as the track's patches name them: relative to
        the repository root, or to the base where the patches name sglang's own paths."""
        tmp, scratch = _scratch_repo(before)
        with tmp:
            root = Path(tmp.name)
            scratch.add("-A")
            for rel in before.keys() - after.keys():
                (root / rel).unlink()
            write_tree(root, after)
            added = sorted(after.keys() - before.keys())
            if added:
                scratch.add("-N", *added)
            relative = [f"--relative={self.track.patch_root}"] if self.track.patch_root else []
            return scratch.diff(*_DIFF_OPTIONS, *relative, strip_newline_in_stdout=False)

    def _undoes_lower_patch(self, index: int, tree: Files) -> str:
        """Why a patch at `index` made from `tree` would undo a lower patch, or "" if it would not.

        A lower patch counts as undone when a file it adds is gone, or when one of its replacements
        whose new lines are all still in the stage below is reverted: those lines removed and the ones
        they replaced back. (Rewriting or deleting lines a lower patch added is ordinary authoring.)
        """
        names = self.names()
        below = self.materialize(names[index - 1])
        for k in range(1, index):
            patch = self._patch_label(self.patch_files[k - 1])
            before, after = self.materialize(names[k - 1]), self.materialize(names[k])
            for path in sorted(after.keys() - before.keys()):
                if path in below and path not in tree:
                    return f"it would delete {path}, which {patch} adds"
            for path in sorted(after.keys() & below.keys() & tree.keys()):
                if below[path] == tree[path]:
                    continue
                old, new = _lines(before.get(path, b"")), _lines(after[path])
                removed, readded = Counter(), Counter()
                edit = difflib.SequenceMatcher(None, _lines(below[path]), _lines(tree[path]), autojunk=False)
                for tag, i1, i2, j1, j2 in edit.get_opcodes():
                    if tag != "equal":
                        removed.update(_lines(below[path])[i1:i2])
                        readded.update(_lines(tree[path])[j1:j2])
                present = Counter(_lines(below[path]))
                for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
                    plus = Counter(line for line in new[j1:j2] if line.strip())
                    minus = Counter(line for line in old[i1:i2] if line.strip())
                    if tag != "replace" or not plus or not minus or plus - present:
                        continue  # an insertion (deleting it is authoring), or changed by a later lower patch
                    if not plus - removed and not minus - readded:
                        first = next(iter(plus)).decode(errors="replace").strip()
                        return f"it would revert {patch}'s change to {path} (the lines from `{first[:60]}`)"
        return ""

    def _refresh_problem(self, status: Status) -> str:
        """Why `make refresh` must refuse in `status`, with the command that fixes it; "" if it may run."""
        target = status.reauthoring or status.stage
        if status.kind in ("minus", "leftover"):  # states git tools leave, not edits: restore first
            return f"refusing to refresh: {status.state()}"
        series = f"{self.track.patch_dir}/series"
        if target == self.baseline_stage:
            return (
                f"no patch is applied: add the new patch's file name to {series}, "
                "`make apply-<it>` is then an empty patch to refresh into"
                if status.clean
                else f"refusing to refresh: {status.state()}; a new patch sits on top of the series: set the "
                f"edits aside with `{self.track.set_aside}`, name the patch in {series}, `make apply-<it>` and "
                "make them there"
            )
        if status.left_at is not None:  # refreshing a guess could fold other patches into this one
            return (
                f"refusing to refresh: {status.state()}; set the edits aside with `{self.track.set_aside}`, "
                f"then `make apply-{status.stage}` and redo them"
            )
        if status.kind == "edits":
            undone = self._undoes_lower_patch(self._check_stage(target), self.worktree())
            if undone:
                return (
                    f"refusing to refresh {self._patch_path(target).name}: {undone}; "
                    f"set the edits aside with `{self.track.set_aside}`, then `make apply-{target}`"
                )
        return ""

    def refresh(self) -> str:
        """Regenerate the topmost applied patch from the edited working tree; keep its header."""
        status = self.status()
        problem = self._refresh_problem(status)
        if problem:
            raise SeriesError(problem)
        if status.clean and status.reauthoring:
            raise SeriesError(
                f"{self.base_dir}/ is exactly stage '{status.stage}': redo the change of "
                f"{self._patch_path(status.reauthoring).name} in {self.base_dir}/ first, "
                f"then `{self.track.make('refresh')}`"
            )
        target = status.reauthoring or status.stage
        index = self._check_stage(target)
        patch_path = self._patch_path(target)
        old_text = patch_path.read_bytes()
        new_text = self._header(old_text) + self.diff(self.materialize(self.names()[index - 1]), self.worktree()).encode()
        # Clean and byte for byte what refresh writes: nothing to do. Clean but not (an earlier
        # patch's change moved this one's index line or hunk positions): rewritten, as checked below.
        if status.clean and new_text == old_text:
            return f"patch for '{status.stage}' is already up to date"
        _, first_broken_before, _ = self.reachable()
        try:
            _write_atomically(patch_path, new_text)
            self._materialized.clear()
            available, first_broken, broken = self.reachable()
            names = self.names()
            breaks_later = first_broken and (
                not first_broken_before or names.index(first_broken) < names.index(first_broken_before)
            )
            exact = Status(target, broken=broken, track=self.track)
            reproduces = target in available and not breaks_later and self.status() == exact
        except BaseException:  # Ctrl-C while checking: the old patch back, the series as it was
            _write_atomically(patch_path, old_text)
            self._materialized.clear()
            raise
        if not reproduces:
            # never leave a series that does not reproduce the tree
            _write_atomically(patch_path, old_text)
            self._materialized.clear()
            if not breaks_later:
                raise SeriesError(
                    f"refresh of {self._patch_label(patch_path.name)} would not reproduce {self.base_dir}/ "
                    f"(a harness bug): restored the patch; {self.base_dir}/ is untouched"
                )
            raise SeriesError(
                f"refresh of {self._patch_label(patch_path.name)} would break "
                f"{self._patch_label(self._patch_path(first_broken).name)}; "
                f"restored it. Make the edit in that patch instead: set it aside with `{self.track.set_aside}`, "
                f"then `make apply-{first_broken}` and redo it"
            )
        if status.reauthoring:
            self._applied_record.write_text(target + "\n")
        return f"refreshed {self._patch_label(patch_path.name)}"

    @staticmethod
    def _header(patch: bytes) -> bytes:
        """A patch's header (text before its first diff) ending in one `---` line, or b"" if none."""
        if patch.startswith(b"diff --git "):
            return b""
        header = patch.split(b"\ndiff --git ", 1)[0].rstrip(b"\n") + b"\n"
        return header if header.endswith(b"\n---\n") or header == b"---\n" else header + b"---\n"
