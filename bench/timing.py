"""Timers shared by the GPU scripts (pytest-benchmark does the host timing of the suite itself)."""

import statistics
import time

import torch


def device_us(fn, repeats: int = 50) -> float:
    """CUDA events around one call after a synchronize, median of `repeats`."""
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3)
    return statistics.median(samples)


def host_us(fn, repeats: int = 400) -> float:
    """Wall time of one call, the queue drained before each (outside the timed region), median."""
    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def launch_arguments(jit_fn, call) -> tuple[tuple, dict]:
    """The arguments `call()` passes to `jit_fn`'s launcher, to replay the bare `jit_fn.run(...)`."""
    seen = {}
    cls = type(jit_fn)
    real_run = cls.run

    def spy(self, *args, **kwargs):
        if self is jit_fn:
            seen["args"], seen["kwargs"] = args, kwargs
        return real_run(self, *args, **kwargs)

    cls.run = spy
    try:
        call()
    finally:
        cls.run = real_run
    return seen["args"], seen["kwargs"]
