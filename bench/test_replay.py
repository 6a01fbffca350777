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
import json
import os
from dataclasses import asdict, dataclass

import pytest
import torch

from bench.conftest import GPU
from bench.peers import upstream_call
from bench.timing import device_us
from harness.counters import count_replay
from harness.loader import INDEX
from harness.runner import Batch
from harness.scenarios import Scenario

TOPK = 2048
ROUNDS = 50 if GPU else 3


@dataclass(frozen=True)
class Config:
    bs: int
    D: int
    page_size: int
    maxlen: int

    @property
    def id(self) -> str:
        return f"bs{self.bs}-D{self.D}-ps{self.page_size}-len{self.maxlen}"

    @property
    def context_len(self) -> int:
        return 65536 + 64 if GPU else 320  # 4k batches also replay inside a 64k-context buffer

    def bytes_moved(self) -> int:
        """Fewest bytes a replay must move: each source row read once, every output written once."""
        rows = self.bs * self.D
        pages = -(-self.maxlen // self.page_size) if self.page_size > 1 else 0
        return 4 * (self.bs * self.maxlen + rows * self.maxlen + rows * pages + 4 * rows + 2 * self.bs)


if GPU:
    CONFIGS = [Config(*c) for c in itertools.product((1, 8, 32, 128, 256), (2, 4), (1, 64), (4096, 65536))]
else:
    CONFIGS = [Config(*c) for c in itertools.product((1, 8), (2,), (1, 64), (256,))]


def _stage_names() -> list[str]:
    if os.environ.get("NSA_USE_BUILD"):  # no git on the GPU machine: the prepared build names them
        return list(json.loads(INDEX.read_text()))
    from harness import stages

    return stages.names()


def _runner(module, config: Config, device: str):
    scenario = Scenario(
        num_draft_tokens=config.D,
        page_size=config.page_size,
        index_topk=TOPK,
        context_len=config.context_len,
        capture_bs=(config.bs,),
        pool_size=config.bs + 8,
        seed=config.bs,
    )
    runner = scenario.runner(module, device)
    g = torch.Generator().manual_seed(config.bs * 7 + config.D)
    lens = torch.randint(config.maxlen // 2, config.maxlen - config.D + 1, (config.bs,), generator=g, dtype=torch.int32)
    lens[0] = config.maxlen - config.D  # max_seqlen_k is exactly maxlen
    pool = torch.randperm(config.bs + 8, generator=g)[: config.bs].to(torch.int32)
    batch = Batch(pool.to(device), lens.to(device))
    runner.replay(batch)  # compiles, fills the arange cache
    runner.prepare(batch)
    return runner


def _measure(benchmark, impl: str, role: str, config: Config, call, environment, copy_bandwidth, host_tensors=()):
    for _ in range(3):
        call()
    with count_replay(host_tensors) as counts:
        call()
    floor = config.bytes_moved() / copy_bandwidth * 1e6 if copy_bandwidth else None
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
        floor_us=floor,
        device_us=device_us(call) if GPU else None,
        **environment,
    )
    benchmark.pedantic(call, setup=torch.cuda.synchronize if GPU else None, rounds=ROUNDS, warmup_rounds=3)


@pytest.mark.parametrize("stage", _stage_names())
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_stage(benchmark, stage, config, stage_modules, device, environment, copy_bandwidth):
    runner = _runner(stage_modules[stage], config, device)
    role = "baseline" if stage == "baseline" else "stage"
    _measure(benchmark, stage, role, config, lambda: runner.replay_metadata(config.bs), environment, copy_bandwidth,
             [runner.seq_lens_cpu])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_upstream_peer(benchmark, config, upstream_peer, stage_modules, device, environment, copy_bandwidth):
    runner = _runner(stage_modules["baseline"], config, device)
    call = upstream_call(upstream_peer, runner, config.bs, config.D, config.page_size, TOPK)
    _measure(benchmark, "upstream-0.5.23", "peer", config, call, environment, copy_bandwidth)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_empty_launch(benchmark, config, empty_triton_launch, environment, copy_bandwidth):
    _measure(benchmark, "empty-launch", "floor", config, empty_triton_launch, environment, copy_bandwidth)
