"""Import a materialized stub folder as a package of its own (no git needed: usable on GPU machines)."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path
from types import ModuleType

from .env import adapt_torch_cuda_to_cpu

REPO_ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_DIR = "python/sglang/srt/layers/attention"  # where vendor_stub/ sits in sglang's repository
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
        adapt_torch_cuda_to_cpu()
        if (directory / KERNEL_MODULE).exists():
            check_eager_cpu_replays(importlib.import_module(f"{package}.nsa.cuda_graph_metadata"))
    return importlib.import_module(f"{package}.nsa_backend")


KERNEL_MODULE = "nsa/cuda_graph_metadata.py"  # the series' Triton module, from patch triton on


def check_eager_cpu_replays(kernel: ModuleType) -> None:
    """An eager replay of a stage's launch objects on CPU tensors raises what baseline's torch
    indexing raises there, before anything is written.

    On CUDA the kernel reads no row outside req_to_token and clamps accept_length (baseline: a
    device-side assert); checking values on the host would sync every replay, so the shipped
    module leaves them to the graph runner. On CPU they are free, and the harness holds every
    stage to baseline's exceptions: a pool index outside req_to_token raises IndexError, an
    accept_length outside [1, min(D, seq_len)] ValueError, each naming the request and the value.
    """
    for launch_class in vars(kernel).values():
        call = getattr(launch_class, "__call__", None)
        if (
            isinstance(launch_class, type)
            and launch_class.__module__ == kernel.__name__
            and "req_pool_indices" in inspect.signature(call).parameters
            and not getattr(call, "checks_cpu_values", False)
        ):
            launch_class.__call__ = _checking_cpu_values(call)


def _checking_cpu_values(call):
    @functools.wraps(call)
    def checked(launch, seq_lens, req_pool_indices, *args, **kwargs):
        if req_pool_indices.is_cpu:
            rows, draft = launch.constants["REQ_TO_TOKEN_ROWS"], launch.constants["DRAFT"]
            for i, row in enumerate(req_pool_indices.tolist()):
                if not -rows <= row < rows:
                    raise IndexError(
                        f"req_pool_indices[{i}] = {row} is out of bounds for req_to_token with {rows} rows"
                    )
            if launch.constants.get("MODE") == "draft_extend":
                accept_length = args[0] if args else kwargs["accept_length"]
                for i, (accepted, seq_len) in enumerate(zip(accept_length.tolist(), seq_lens.tolist())):
                    if not 1 <= accepted <= min(draft, seq_len):
                        raise ValueError(
                            f"request {i}: accept_length {accepted} is outside [1, min(D={draft}, seq_len={seq_len})]"
                        )
        return call(launch, seq_lens, req_pool_indices, *args, **kwargs)

    checked.checks_cpu_values = True
    return checked


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
