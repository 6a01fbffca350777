"""Device time of one call: CUDA events after a synchronize, median of many (host time is pytest-benchmark's)."""

import statistics

import torch


def device_us(fn, repeats: int = 50) -> float:
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
