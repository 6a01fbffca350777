"""The patch series: move vendor_stub/ up and down patches/series like `quilt push/pop`, safely.

Stages are `baseline` (vendor_stub/ as committed at HEAD) and one per patch in patches/series.
Every operation first computes the complete target state in a scratch repository, so a patch that
does not apply changes nothing; and every operation refuses while vendor_stub/ holds edits that are
not exactly some stage, so no edit is ever overwritten.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import git

from .loader import REPO_ROOT

STUB_DIR = "vendor_stub"
PATCH_DIR = "patches"
BASELINE = "baseline"

Files = dict[str, bytes]  # repo-relative path -> exact bytes


class SeriesError(RuntimeError):
    """A refusal: the message names the problem and the command that fixes it."""


def stage_name(patch_file: str) -> str:
    """`0002-list-elim.patch` -> `list-elim`."""
    return re.sub(r"^\d+-", "", Path(patch_file).name).removesuffix(".patch")


@dataclass(frozen=True)
class Status:
    stage: str  # the stage the tree is at, or the one its edits sit on
    edited: tuple[str, ...] = ()  # files that differ from that stage

    @property
    def clean(self) -> bool:
        return not self.edited

    def describe(self) -> str:
        if self.clean:
            return f"vendor_stub/ is at stage '{self.stage}'"
        return (
            f"vendor_stub/ holds local edits on top of stage '{self.stage}': "
            + ", ".join(self.edited)
        )


def _scratch_repo(files: Files) -> tuple[tempfile.TemporaryDirectory, git.Repo]:
    tmp = tempfile.TemporaryDirectory(prefix="nsa-series-")
    repo = git.Repo.init(tmp.name)
    write_tree(Path(tmp.name), files)
    return tmp, repo


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


def _check_pristine(files: Files) -> None:
    """HEAD must hold the baseline: each pinned region must sit at its stub_lines, byte for byte."""
    pin_path = f"{STUB_DIR}/UPSTREAM_PIN.toml"
    if pin_path not in files:
        return  # a stub without a pin (the machinery's own tests): nothing to check
    stub = files[f"{STUB_DIR}/nsa_backend.py"].splitlines(keepends=True)
    for region in tomllib.loads(files[pin_path].decode())["region"]:
        start, end = region["stub_lines"]
        if hashlib.sha256(b"".join(stub[start - 1 : end])).hexdigest() != region["sha256"]:
            raise SeriesError(
                f"HEAD's {STUB_DIR}/nsa_backend.py is not the pristine baseline (pinned region "
                f"'{region['name']}' differs): commit {STUB_DIR}/ only at baseline; restore it with "
                f"`git checkout <last good commit> -- {STUB_DIR}` and commit"
            )


class Series:
    def __init__(self, root: Path | str = REPO_ROOT):
        self.root = Path(root)
        self.repo = git.Repo(self.root)
        self._materialized: dict[str, Files] = {}

    # -- reading -------------------------------------------------------------------------------
    @property
    def patch_files(self) -> list[str]:
        series = self.root / PATCH_DIR / "series"
        if not series.exists():
            return []
        names = []
        for line in series.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line)
        return names

    def names(self) -> list[str]:
        return [BASELINE] + [stage_name(p) for p in self.patch_files]

    def _check_stage(self, name: str) -> int:
        names = self.names()
        if name not in names:
            raise SeriesError(f"unknown stage '{name}': choose one of {', '.join(names)}")
        return names.index(name)

    @cached_property
    def baseline(self) -> Files:
        """vendor_stub/ as committed at HEAD, read from the blobs byte-exact."""
        try:
            tree = self.repo.head.commit.tree / STUB_DIR
        except (KeyError, ValueError) as e:
            raise SeriesError(f"HEAD has no {STUB_DIR}/: commit the pristine stub first") from e
        files = {blob.path: blob.data_stream.read() for blob in tree.traverse() if blob.type == "blob"}
        _check_pristine(files)
        return files

    def worktree(self) -> Files:
        """The files git would see under vendor_stub/ (ignored ones such as __pycache__ left out)."""
        listed = self.repo.git.ls_files("--cached", "--others", "--exclude-standard", "-z", "--", STUB_DIR)
        paths = sorted({p for p in listed.split("\0") if p})
        return {p: (self.root / p).read_bytes() for p in paths if (self.root / p).is_file()}

    def patch_text(self, name: str) -> bytes:
        index = self._check_stage(name)
        if index == 0:
            raise SeriesError("'baseline' has no patch")
        path = self.root / PATCH_DIR / self.patch_files[index - 1]
        if not path.is_file():
            raise SeriesError(
                f"patches/series names {path.name}, which does not exist: create it "
                f"(a DEP-3 header is enough), then `make apply-{name}` and `make refresh`"
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
        """The files of vendor_stub/ at stage `name`, computed without touching the working tree."""
        index = self._check_stage(name)
        key = self.digest(name)
        if key not in self._materialized:
            self._materialized[key] = self._materialize(index)
        return dict(self._materialized[key])

    def _materialize(self, index: int) -> Files:
        tmp, scratch = _scratch_repo(self.baseline)
        with tmp:
            for patch in self.patch_files[:index]:
                path = self.root / PATCH_DIR / patch
                if b"\ndiff --git " not in b"\n" + path.read_bytes():
                    continue  # a header with no diff yet: a new patch waiting for `make refresh`
                try:
                    scratch.git.apply("--whitespace=nowarn", str(path))
                except git.GitCommandError as e:
                    detail = e.stderr.strip().splitlines()[-1] if e.stderr else ""
                    raise SeriesError(
                        f"patches/{patch} does not apply on top of the stages before it ({detail}); "
                        f"fix it by re-authoring: make apply-<previous stage>, edit, make refresh"
                    ) from None
            return read_tree(Path(tmp.name), STUB_DIR)

    # -- state ---------------------------------------------------------------------------------
    @property
    def _applied_record(self) -> Path:
        # Like quilt's .pc/applied-patches: which stage the last apply left (per clone, untracked).
        return Path(self.repo.git_dir) / "nsa-verify-applied-stage"

    def status(self) -> Status:
        """Where vendor_stub/ stands. Edits sit on the stage the last apply left, if that is known."""
        current = self.worktree()

        def edited(name: str) -> tuple[str, ...]:
            files = self.materialize(name)
            return tuple(sorted(p for p in files.keys() | current.keys() if files.get(p) != current.get(p)))

        names = self.names()
        recorded = self._applied_record.read_text().strip() if self._applied_record.exists() else ""
        exact = [name for name in names if not edited(name)]
        if exact:  # several only around an empty new patch: the recorded one, else the highest
            return Status(recorded if recorded in exact else exact[-1])
        if recorded in names:
            return Status(recorded, edited(recorded))

        def changed_lines(name: str) -> int:
            files = self.materialize(name)
            return sum(
                sum(
                    1
                    for line in difflib.diff_bytes(
                        difflib.unified_diff,
                        files.get(p, b"").splitlines(),
                        current.get(p, b"").splitlines(),
                        lineterm=b"",
                        n=0,
                    )
                    if line[:1] in (b"+", b"-")
                )
                for p in edited(name)
            )

        nearest = min(names, key=changed_lines)  # ties: the lower stage, the safer guess
        return Status(nearest, edited(nearest))

    def _refuse_if_edited(self, status: Status, action: str) -> None:
        if status.clean:
            return
        keep = (
            "keep them in the stage's patch with `make refresh`"
            if status.stage != BASELINE
            else "keep them as a new patch (name it in patches/series, then `make refresh`)"
        )
        raise SeriesError(
            f"refusing to {action}: {status.describe()}. To {keep}, or set them aside with "
            f"`git stash push -- {STUB_DIR}` and retry"
        )

    # -- moving --------------------------------------------------------------------------------
    def apply(self, name: str) -> Status:
        """Bring vendor_stub/ to stage `name` (stacked: pushes or pops as needed)."""
        self._check_stage(name)
        status = self.status()
        self._refuse_if_edited(status, f"move to '{name}'")
        if status.stage == name:
            return status
        self._replace_worktree(self.worktree(), self.materialize(name))
        self._applied_record.write_text(name + "\n")
        return self.status()

    def unapply(self) -> Status:
        return self.apply(BASELINE)

    def _replace_worktree(self, old: Files, new: Files) -> None:
        """Write `new` over `old` all-or-nothing: stage every file beside its target, then rename."""
        staged: list[tuple[Path, Path]] = []
        try:
            for rel, data in new.items():
                if old.get(rel) == data:
                    continue
                target = self.root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                staged.append((Path(tmp), target))
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        done: list[Path] = []
        try:
            for tmp, target in staged:
                os.replace(tmp, target)
                done.append(target)
            for rel in old.keys() - new.keys():
                (self.root / rel).unlink()
                done.append(self.root / rel)
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
        """`git diff` of two vendor_stub/ states, paths relative to the repo root."""
        tmp, scratch = _scratch_repo(before)
        with tmp:
            root = Path(tmp.name)
            scratch.git.add("-A")
            for rel in before.keys() - after.keys():
                (root / rel).unlink()
            write_tree(root, after)
            added = sorted(after.keys() - before.keys())
            if added:
                scratch.git.add("-N", *added)
            return scratch.git.diff("--no-color", "--no-ext-diff", strip_newline_in_stdout=False)

    def refresh(self) -> str:
        """Regenerate the topmost applied patch from the edited working tree; keep its header."""
        status = self.status()
        if status.stage == BASELINE:
            raise SeriesError(
                "no patch is applied: add the new patch's file name to patches/series, "
                "`make apply-<it>` is then an empty patch to refresh into"
                if status.clean
                else f"refusing to refresh: {status.describe()}; name a new patch in patches/series first"
            )
        if status.clean:
            return f"patch for '{status.stage}' is already up to date"
        index = self._check_stage(status.stage)
        patch_path = self.root / PATCH_DIR / self.patch_files[index - 1]
        old_text = patch_path.read_bytes()
        header = old_text.split(b"\ndiff --git ", 1)[0].rstrip(b"\n") + b"\n"
        if old_text.startswith(b"diff --git "):
            header = b""
        body = self.diff(self.materialize(self.names()[index - 1]), self.worktree())
        patch_path.write_bytes(header + (b"\n" if header else b"") + body.encode())
        self._materialized.clear()
        try:
            reproduced = self.status() == Status(status.stage)
        except SeriesError:  # a later patch no longer applies on top of the new one
            reproduced = False
        if not reproduced:  # never leave a series that does not reproduce the tree
            patch_path.write_bytes(old_text)
            self._materialized.clear()
            raise SeriesError(
                f"refresh of patches/{patch_path.name} would not reproduce the tree or would break a later "
                "patch; restored it. Refresh only the topmost applied patch"
            )
        return f"refreshed patches/{patch_path.name}"
