"""Whole-buffer comparison: every tensor the backend's captured graphs read, bit for bit.

Bit-exact means dtype, shape, stride and every element, including columns a replay does not write
(stale values from earlier replays must survive exactly as in the baseline).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mismatch:
    buffer: str
    what: str  # "missing", "dtype", "shape", "stride", "value"
    index: tuple[int, ...] = ()
    expected: object = None
    actual: object = None

    def __str__(self) -> str:
        if self.what == "value":
            return f"{self.buffer}{list(self.index)}: expected {self.expected}, got {self.actual}"
        return f"{self.buffer}: {self.what} differs (expected {self.expected}, got {self.actual})"


def captured_state(backend) -> dict[str, object]:
    """Every buffer (and plain field) of every captured NSAMetadata, plus the shared graph buffers."""
    state: dict[str, object] = {}
    graph = backend.decode_cuda_graph_metadata
    for key in ("cache_seqlens", "cu_seqlens_q", "cu_seqlens_k", "page_table"):
        state[key] = graph[key]
    for bs in sorted(k for k in graph if isinstance(k, int)):
        for field in dataclasses.fields(graph[bs]):
            state[f"bs{bs}.{field.name}"] = getattr(graph[bs], field.name)
    return state


def first_mismatch(expected: dict[str, object], actual: dict[str, object]) -> Mismatch | None:
    for name in sorted(expected.keys() | actual.keys()):  # sorted: the same first mismatch on every run
        if name not in expected or name not in actual:
            return Mismatch(name, "missing", expected=name in expected, actual=name in actual)
    for name in sorted(expected):
        e, a = expected[name], actual[name]
        if not isinstance(e, torch.Tensor) or not isinstance(a, torch.Tensor):
            if type(e) is not type(a) or e != a:
                return Mismatch(name, "value", expected=e, actual=a)
            continue
        for what, ev, av in (
            ("dtype", e.dtype, a.dtype),
            ("shape", tuple(e.shape), tuple(a.shape)),
            ("stride", e.stride(), a.stride()),
        ):
            if ev != av:
                return Mismatch(name, what, expected=ev, actual=av)
        a = a.to(e.device)
        differs = e != a
        if bool(differs.any()):
            index = tuple(int(i) for i in differs.nonzero()[0])
            return Mismatch(name, "value", index, e[index].item(), a[index].item())
    return None


def assert_bit_exact(expected: dict[str, object], actual: dict[str, object], context: str = "") -> None:
    mismatch = first_mismatch(expected, actual)
    if mismatch is not None:
        raise AssertionError(f"not bit-exact{' (' + context + ')' if context else ''}: {mismatch}")
