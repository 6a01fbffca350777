"""Timers shared by the GPU scripts (pytest-benchmark does the host timing of the suite itself)."""

import contextlib
import gc
import random
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


def spread(samples: list[float]) -> dict:
    """Median and quartiles: {"us", "q1", "q3"}."""
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return dict(us=statistics.median(samples), q1=q1, q3=q3)


def shuffled_rounds(names: list, rounds: int, seed: int = 0):
    """Round r calls every name once, in an order drawn afresh each round (seeded): drift, and what one
    call leaves the next (caches, allocator, queues), hit every name alike. (A fixed or rotated order
    gives each name the same predecessor in almost every round: bench.graph_demo once timed a light
    step 2-5 µs slower for always following baseline's heavy one; reports/h100/NOTES.md.)"""
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(names)
        rng.shuffle(order)
        yield order


@contextlib.contextmanager
def gc_paused():
    """Python's cycle collector off while timing (as timeit does): a collection triggered by one call's
    garbage (baseline's host lists) would otherwise land in whichever call runs next."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def interleaved_host_us(calls: dict, rounds: int, warmup: int = 20) -> dict:
    """Host wall time of one call of each of `calls` (name -> fn), the queue drained before each,
    interleaved round by round, the cycle collector paused: name -> spread() of the rounds."""
    drain = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)  # CPU: no queue
    samples = {name: [] for name in calls}
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    with gc_paused():
        for order in shuffled_rounds(list(calls), rounds):
            for name in order:
                drain()
                t0 = time.perf_counter_ns()
                calls[name]()
                samples[name].append((time.perf_counter_ns() - t0) / 1e3)
        drain()
    return {name: spread(xs) for name, xs in samples.items()}


def interleaved_kernel_us(calls: dict, rounds: int, rep_ms: int = 25) -> dict:
    """GPU time of each of `calls` (triton.testing.do_bench median per round), interleaved round by
    round: name -> spread() of the rounds' medians."""
    import triton.testing

    samples = {name: [] for name in calls}
    for order in shuffled_rounds(list(calls), rounds):
        for name in order:
            samples[name].append(triton.testing.do_bench(calls[name], warmup=5, rep=rep_ms, return_mode="median") * 1e3)
    return {name: spread(xs) for name, xs in samples.items()}


def kernel_us(fn) -> float:
    """GPU time of `fn` alone (triton.testing.do_bench median), for kernel-only comparisons."""
    import triton.testing

    return triton.testing.do_bench(fn, return_mode="median") * 1e3


def copy_bandwidth() -> float:
    """Bytes read + written per second by a 256 MiB device-to-device copy: the memory floor's yardstick."""
    src = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() / (kernel_us(lambda: dst.copy_(src)) * 1e-6)


def captured_launch(call):
    """The one Triton launch `call()` makes, as (jit_fn, args, kwargs): `jit_fn.run(*args, **kwargs)` repeats it bare."""
    from triton.runtime.jit import JITFunction

    seen = []
    real_run = JITFunction.run

    def spy(self, *args, **kwargs):
        seen.append((self, args, kwargs))
        return real_run(self, *args, **kwargs)

    JITFunction.run = spy
    try:
        call()
    finally:
        JITFunction.run = real_run
    if len(seen) != 1:
        raise RuntimeError(f"expected one Triton launch, the call made {len(seen)}")
    return seen[0]


def launch_kwargs(run_kwargs: dict) -> dict:
    """A captured JITFunction.run's keyword arguments less its own (grid, warmup): what `kernel[grid](...)`
    and `kernel.warmup(..., grid=...)` take."""
    return {k: v for k, v in run_kwargs.items() if k not in ("grid", "warmup")}
