"""Target-verify replay benchmark, pytest-benchmark's view of bench.replay_operator: its "suite" inputs x
every implementation with a host metric (each stage, `baseline` the reference; the final launch; upstream's
kernel as it ships and given the host max; the empty launches), one after another.

Metrics, per call:
  host time   pytest-benchmark's own timing of one call, with `torch.cuda.synchronize()` as the
              untimed setup of every round: no synchronize inside the timed call, the queue
              drained between calls. This is what the scheduler thread pays.
  device_us   extra_info: CUDA events around one call after a synchronize (GPU only).
  extra_info  aten ops and Triton launches per call, bytes the replay must move, the memory floor
              (bytes / copy bandwidth measured in this run), card, torch, triton, the series' hash.
Each benchmark group is one input, so `pytest-benchmark compare --group-by=group` (`make bench-compare`)
shows the implementations side by side. Sequential medians swing with the host; the comparisons of record
are bench.record's interleaved rounds. On CPU the matrix is small and timings are not comparable.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from bench import replay_operator as op
from bench.timing import device_us
from harness.counters import count_replay

ROUNDS = 50 if op.GPU else 3
IMPLS = [impl for impl in op.implementations(op.TARGET_VERIFY) if "host_us" in impl.metrics]


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i.name)
@pytest.mark.parametrize("config", op.inputs("suite"), ids=lambda c: c.id)
def test_replay(benchmark, impl, config, upstream, environment, copy_bandwidth):
    prepared = op.Prepared(config, upstream)
    call = impl.build(prepared)
    if call is None:
        pytest.skip(f"{impl.name} does not run here ({'no GPU' if not op.GPU else 'no upstream wheel'})")
    for _ in range(3):
        call()
    host_tensors = [prepared.runner(impl.name).seq_lens_cpu] if impl.role in ("baseline", "stage") else []
    with count_replay(host_tensors) as counts:
        call()
    benchmark.group = config.id
    benchmark.extra_info.update(
        impl=impl.name,
        role=impl.role,
        label=impl.label,
        **asdict(config),
        device_kernels=counts.device_kernels,
        device_views=counts.device_views,
        host_ops=counts.host_ops,
        triton_launches=counts.triton_launches,
        bytes=config.bytes_moved(),
        floor_us=config.floor_us(copy_bandwidth) if copy_bandwidth else None,
        device_us=device_us(call) if op.GPU else None,
        **environment,
    )
    benchmark.pedantic(call, setup=torch.cuda.synchronize if op.GPU else None, rounds=ROUNDS, warmup_rounds=3)
