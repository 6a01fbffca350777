"""Import a materialized stub folder as a package of its own (no git needed: usable on GPU machines)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO_ROOT / "build" / "stages"
INDEX = BUILD_DIR / "index.json"


def import_stub(package: str, directory: Path) -> ModuleType:
    """`directory` holds a stub (`__init__.py`, `nsa_backend.py`, ...); returns its nsa_backend module."""
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            package, directory / "__init__.py", submodule_search_locations=[str(directory)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.nsa_backend")


def built_index() -> dict[str, str]:
    """Stage name -> stub folder under build/stages, in series order, as `python -m harness build` left it."""
    if not INDEX.exists():
        raise FileNotFoundError(f"{INDEX} is missing: run `python -m harness build` (make bench-prepare) first")
    return json.loads(INDEX.read_text())


def load_built(name: str) -> ModuleType:
    """One stage from the prepared build (for machines without git)."""
    index = built_index()
    if name not in index:
        raise KeyError(f"stage '{name}' is not in {INDEX}: choose one of {', '.join(index)}, or rebuild")
    return import_stub("nsa_built_" + re.sub(r"\W", "_", index[name]), BUILD_DIR / index[name])
