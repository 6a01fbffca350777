"""Target-verify replay benchmark: inputs (bs x D x page size x max length) x implementations.

Implementations: every stage of the series (`baseline` is the reference), upstream's fused kernel
(a peer), and an empty Triton launch (the host floor). Metrics, per replay:
  host time   pytest-benchmark's own timing of one call, with `torch.cuda.synchronize()` as the
              untimed setup of every round: no synchronize inside the timed call, the queue
              drained between calls. This is what the scheduler thread pays.
  device_us   extra_info: CUDA events around one call after a synchronize (GPU only).
  extra_info  aten ops and Triton launches per replay, bytes the replay must move, the memory
              floor (bytes / copy bandwidth measured in this run), card, torch, triton.
Each benchmark group is one input, so `pytest-benchmark compare --group-by=group` shows the
implementations side by side. On CPU the matrix is small and timings are not comparable.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict

import pytest
import torch

from bench.conftest import GPU
from bench.inputs import Config, prepared_runner
from bench.peers import upstream_call
from bench.timing import device_us
from harness import stages
from harness.counters import count_replay

ROUNDS = 50 if GPU else 3

if GPU:
    CONFIGS = [Config(*c) for c in itertools.product((1, 8, 32, 128, 256), (2, 4), (1, 64), (4096, 65536))]
else:
    CONFIGS = [Config(*c, context_len=320) for c in itertools.product((1, 8), (2,), (1, 64), (256,))]


def _measure(benchmark, impl: str, role: str, config: Config, call, environment, copy_bandwidth, host_tensors=()):
    for _ in range(3):
        call()
    with count_replay(host_tensors) as counts:
        call()
    benchmark.group = config.id
    benchmark.extra_info.update(
        impl=impl,
        role=role,
        **asdict(config),
        device_kernels=counts.device_kernels,
        device_views=counts.device_views,
        host_ops=counts.host_ops,
        triton_launches=counts.triton_launches,
        bytes=config.bytes_moved(),
        floor_us=config.floor_us(copy_bandwidth) if copy_bandwidth else None,
        device_us=device_us(call) if GPU else None,
        **environment,
    )
    benchmark.pedantic(call, setup=torch.cuda.synchronize if GPU else None, rounds=ROUNDS, warmup_rounds=3)


@pytest.mark.parametrize("stage", stages.names())
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_stage(benchmark, stage, config, stage_modules, device, environment, copy_bandwidth):
    runner = prepared_runner(stage_modules[stage], config, device)
    role = "baseline" if stage == stages.BASELINE else "stage"
    _measure(benchmark, stage, role, config, lambda: runner.replay_metadata(config.bs), environment, copy_bandwidth,
             [runner.seq_lens_cpu])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_upstream_peer(benchmark, config, upstream_peer, stage_modules, device, environment, copy_bandwidth):
    runner = prepared_runner(stage_modules[stages.BASELINE], config, device)
    call = upstream_call(upstream_peer, runner, config.bs, config.D, config.page_size, config.topk)
    _measure(benchmark, "upstream-0.5.23", "peer", config, call, environment, copy_bandwidth)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_empty_launch(benchmark, config, empty_triton_launch, environment, copy_bandwidth):
    _measure(benchmark, "empty-launch", "floor", config, empty_triton_launch, environment, copy_bandwidth)
