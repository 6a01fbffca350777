"""Deterministic per-replay counters: aten ops by kind, and Triton kernel launches.

A TorchDispatchMode sees every aten op the replay issues. Ops whose tensor inputs all derive from
the host copy of the lengths (`seq_lens_cpu`, followed through the tensors each op returns) are host work; the rest touch device buffers and are
split into views (no kernel) and kernels. Triton launches are counted at `JITFunction.run` (and the
interpreter's `InterpretedFunction.run`), with the dispatch mode paused inside so the interpreter's
own host copies are not counted as ops.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten


@dataclass
class ReplayCounts:
    device_kernels: int = 0  # aten ops on device tensors that launch work (or allocate)
    device_views: int = 0  # aten view ops on device tensors (metadata only)
    host_ops: int = 0  # aten ops on the host copy of the lengths
    triton_launches: int = 0
    ops: Counter = field(default_factory=Counter)  # op name -> count, all kinds

    def as_dict(self) -> dict:
        return {**asdict(self), "ops": dict(sorted(self.ops.items()))}


class _OpCounter(TorchDispatchMode):
    def __init__(self, counts: ReplayCounts, host_tensors):
        super().__init__()
        self.counts = counts
        # The tensor objects themselves (id -> weak reference, so a reused id of a dead tensor does not
        # match): storage addresses get reused once a host temporary is freed.
        self.host = {id(t): weakref.ref(t) for t in host_tensors}

    def _is_host(self, t: torch.Tensor) -> bool:
        ref = self.host.get(id(t))
        return ref is not None and ref() is t

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        name = func.overloadpacket.__name__
        self.counts.ops[name] += 1
        if inputs and all(self._is_host(t) for t in inputs):
            self.counts.host_ops += 1
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.host[id(t)] = weakref.ref(t)
        elif func.is_view:
            self.counts.device_views += 1
        else:
            self.counts.device_kernels += 1
        return out


def _triton_run_classes():
    import triton.runtime.jit as jit

    classes = [jit.JITFunction]
    try:
        from triton.runtime.interpreter import InterpretedFunction

        classes.append(InterpretedFunction)
    except ImportError:  # pragma: no cover - older triton
        pass
    return classes


@contextlib.contextmanager
def count_replay(host_tensors=()):
    """Count what the body does: `with count_replay([seq_lens_cpu]) as counts: replay()`."""
    counts = ReplayCounts()
    originals = {}
    try:
        classes = _triton_run_classes()
    except ImportError:
        classes = []

    def wrap(original):
        def run(self, *args, **kwargs):
            counts.triton_launches += 1
            with _disable_current_modes():
                return original(self, *args, **kwargs)

        return run

    for cls in classes:
        originals[cls] = cls.run
        cls.run = wrap(cls.run)
    try:
        with _OpCounter(counts, host_tensors):
            yield counts
    finally:
        for cls, original in originals.items():
            cls.run = original
