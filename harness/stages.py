"""The stages of the series by role, and each stage loaded as its own module, side by side in one process.

Each stage is materialized (pristine stub + the series prefix) into build/stages/<stage>-<digest>/
and imported under a package name of its own, so `load(BASELINE)` and `load(final())` can be
compared in one process. `load(WORKTREE)` imports vendor_stub/ as it stands in the working tree.
With NSA_USE_BUILD set (a GPU machine without git) names and stages come from the folder
`python -m harness build` prepared instead; nothing here imports git before it is needed.

Code outside this module asks for a role (BASELINE, final(), previous(), touching(mode), names())
and never spells a stage name, so a patch appended to patches/series needs no edit anywhere else.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import linecache
import os
import re
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from .loader import BUILD_DIR, INDEX, REPO_ROOT, built_index, import_stub, load_built

BASELINE = "baseline"  # vendor_stub/ as committed: the reference every stage is compared with
WORKTREE = "worktree"
# The module, relative to the stub package, holding a stage's Triton kernel and its launch object.
# Newest layout first; the older one is still what earlier builds and checkouts hold.
# touching()'s traces, per tree (stage contents and harness code): tracing takes seconds, collection asks.
TOUCHING_CACHE = BUILD_DIR.parent / "touching"
KERNEL_MODULES = (".nsa.cuda_graph_metadata", ".nsa.target_verify_metadata", ".nsa_target_verify_metadata")


def use_build() -> bool:
    return bool(os.environ.get("NSA_USE_BUILD"))


def names() -> list[str]:
    """Stage names in series order, BASELINE first."""
    if use_build():
        return list(built_index())
    from .series import Series

    return Series().names()


def patched() -> list[str]:
    """Every stage but BASELINE, in series order."""
    return names()[1:]


def final() -> str:
    """The last stage of the series: what the series ships."""
    return names()[-1]


def previous(name: str) -> str:
    """The stage `name`'s patch applies on top of."""
    order = names()
    if name not in order[1:]:
        raise ValueError(f"'{name}' has no previous stage: choose one of {', '.join(order[1:])}")
    return order[order.index(name) - 1]


def touching(mode: str) -> list[str]:
    """The stages whose patch changes what a `mode` replay runs, in series order.

    Derived, not declared: a stage touches a mode when a replay of that mode executes other stub
    source lines than the same replay on the stage before it (line text, not line numbers, so a
    patch that only edits comments, or moves code, touches nothing).
    """
    from .runner import MODES

    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
    return list(_touching_by_mode()[mode])


@lru_cache(maxsize=None)
def _touching_by_mode() -> dict[str, list[str]]:
    """touching() for every mode, traced once per tree: the trace runs every stage in every mode
    (about 13 s under the interpreter), and test collection asks for it. Cached in build/, keyed by
    every stage's content and the harness code that drives the replay, so any change re-traces."""
    from .runner import MODES

    order = names()
    key = hashlib.sha256(json.dumps(_stage_ids(order)).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        key.update(source.read_bytes())
    cache = TOUCHING_CACHE / f"{key.hexdigest()[:16]}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    result = {}
    for mode in MODES:
        traces = [_replay_lines(load(name), mode) for name in order]
        result[mode] = [name for name, before, after in zip(order[1:], traces, traces[1:]) if before != after]
    staging = cache.with_name(f".{cache.name}.{os.getpid()}")  # written aside then renamed, as load() does
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_text(json.dumps(result))
    staging.replace(cache)
    return result


def _stage_ids(order: list[str]) -> list[str]:
    """Each stage's name and content digest (the built folder's name on a machine without git)."""
    if use_build():
        index = built_index()
        return [index[name] for name in order]
    from .series import Series

    series = Series()
    return [f"{name}-{series.digest(name)}" for name in order]


@lru_cache(maxsize=None)
def _replay_lines(module: ModuleType, mode: str) -> tuple[str, ...]:
    """The stub source lines (stripped text, first-execution order) two replays of `mode` execute."""
    from .env import triton_device
    from .scenarios import Scenario

    scenario = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, mode=mode, context_len=320,
                        capture_bs=(2, 4), replays=2)
    device = triton_device()
    runner = scenario.runner(module, device)
    stub = str(Path(module.__file__).parent)
    executed: dict[str, None] = {}

    def trace_line(frame, event, arg):
        if event == "line":
            executed.setdefault(linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip())
        return trace_line

    def trace_call(frame, event, arg):
        return trace_line if frame.f_code.co_filename.startswith(stub) else None

    for batch in scenario.batches(device):
        bs = runner.prepare(batch)
        outer = sys.gettrace()
        sys.settrace(trace_call)
        try:
            runner.replay_metadata(bs)
        finally:
            sys.settrace(outer)
    return tuple(executed)


def load(name: str, series=None) -> ModuleType:
    """The stub's nsa_backend module at stage `name` (or the working tree's for WORKTREE)."""
    if use_build() and name != WORKTREE:
        return load_built(name)
    from .series import STUB_DIR, Series, write_tree

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


def kernel_module(stage: str) -> ModuleType:
    """The Triton kernel module of `stage` (kernel and launch object); LookupError if it has none."""
    return kernel_module_of(load(stage))


def kernel_module_of(backend: ModuleType) -> ModuleType:
    """The Triton kernel module beside an already loaded nsa_backend module."""
    for relative in KERNEL_MODULES:
        wanted = importlib.util.resolve_name(relative, backend.__package__)
        try:
            return importlib.import_module(wanted)
        except ModuleNotFoundError as e:
            if e.name is None or not wanted.startswith(e.name):  # a missing import inside the module
                raise
    raise LookupError(f"{backend.__package__} has no Triton kernel module ({', '.join(KERNEL_MODULES)})")


def build_all() -> dict[str, str]:
    """Materialize every stage and write build/stages/index.json, for `NSA_USE_BUILD`."""
    from .series import Series

    series = Series()
    index = {name: str(Path(load(name, series).__file__).parent.relative_to(BUILD_DIR)) for name in series.names()}
    INDEX.write_text(json.dumps(index, indent=2) + "\n")
    return index
