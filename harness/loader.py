"""Import a materialized stub folder as a package of its own (no git needed: usable on GPU machines)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO_ROOT / "build" / "stages"


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


INDEX = BUILD_DIR / "index.json"


def load_built() -> dict[str, ModuleType]:
    """Every stage from the build `python -m harness build` left (for machines without git)."""
    import json

    if not INDEX.exists():
        raise FileNotFoundError(f"{INDEX} is missing: run `python -m harness build` (make bench-prepare) first")
    index = json.loads(INDEX.read_text())
    return {name: import_stub(f"built_stage_{i}", BUILD_DIR / rel) for i, (name, rel) in enumerate(index.items())}
