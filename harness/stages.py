"""Load any stage of the series as its own module, side by side in one process.

Each stage is materialized (pristine stub + the series prefix) into build/stages/<stage>-<digest>/
and imported under a package name of its own, so `load("baseline")` and `load("triton")` can be
compared in one process. `load(WORKTREE)` imports vendor_stub/ as it stands in the working tree.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

from .series import REPO_ROOT, STUB_DIR, Series, _write_tree

WORKTREE = "worktree"
BUILD_DIR = REPO_ROOT / "build" / "stages"


def names() -> list[str]:
    """Stage names in series order, `baseline` first."""
    return Series().names()


def _import_package(package: str, directory: Path) -> ModuleType:
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            package, directory / "__init__.py", submodule_search_locations=[str(directory)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.nsa_backend")


def load(name: str, series: Series | None = None) -> ModuleType:
    """The stub's nsa_backend module at stage `name` (or the working tree's for WORKTREE)."""
    if name == WORKTREE:
        return _import_package("nsa_stage_worktree", REPO_ROOT / STUB_DIR)
    series = series or Series()
    digest = series.digest(name)  # raises SeriesError on an unknown stage
    folder = BUILD_DIR / f"{name}-{digest}"
    if not folder.exists():  # written aside then renamed: a crash never leaves half a stage
        staging = folder.with_name(f".{folder.name}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        _write_tree(staging, series.materialize(name))
        try:
            staging.rename(folder)
        except OSError:  # another process won the race with identical content
            shutil.rmtree(staging, ignore_errors=True)
    package = "nsa_stage_" + re.sub(r"\W", "_", f"{name}_{digest}")
    return _import_package(package, folder / STUB_DIR)
