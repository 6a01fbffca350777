"""Load any stage of the series as its own module, side by side in one process.

Each stage is materialized (pristine stub + the series prefix) into build/stages/<stage>-<digest>/
and imported under a package name of its own, so `load("baseline")` and `load("triton")` can be
compared in one process. `load(WORKTREE)` imports vendor_stub/ as it stands in the working tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import ModuleType

from .loader import BUILD_DIR, INDEX, REPO_ROOT, import_stub
from .series import STUB_DIR, Series, write_tree

WORKTREE = "worktree"


def names() -> list[str]:
    """Stage names in series order, `baseline` first."""
    return Series().names()


def load(name: str, series: Series | None = None) -> ModuleType:
    """The stub's nsa_backend module at stage `name` (or the working tree's for WORKTREE)."""
    if name == WORKTREE:
        return import_stub("nsa_stage_worktree", REPO_ROOT / STUB_DIR)
    series = series or Series()
    digest = series.digest(name)  # raises SeriesError on an unknown stage
    folder = BUILD_DIR / f"{name}-{digest}"
    if not folder.exists():  # written aside then renamed: a crash never leaves half a stage
        staging = folder.with_name(f".{folder.name}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        write_tree(staging, series.materialize(name))
        try:
            staging.rename(folder)
        except OSError:  # another process won the race with identical content
            shutil.rmtree(staging, ignore_errors=True)
    package = "nsa_stage_" + re.sub(r"\W", "_", f"{name}_{digest}")
    return import_stub(package, folder / STUB_DIR)


def build_all() -> dict[str, str]:
    """Materialize every stage and write build/stages/index.json, for `loader.load_built()`."""
    series = Series()
    index = {name: str(Path(load(name, series).__file__).parent.relative_to(BUILD_DIR)) for name in series.names()}
    INDEX.write_text(json.dumps(index, indent=2) + "\n")
    return index
