"""Benchmark inputs: one batch shape of one mode, and a stage's runner made ready to replay it. The named
sets of inputs every benchmark runs are in bench.replay_operator.INPUTS."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType, SimpleNamespace

import torch

from harness.runner import Batch, GraphRunner
from harness.scenarios import Scenario


@dataclass(frozen=True)
class Config:
    bs: int
    D: int
    page_size: int
    maxlen: int  # max_seqlen_k of the batch: the longest request is maxlen - D long
    context_len: int = 65536 + 64  # 4k batches also replay inside a 64k-context buffer
    spread: bool = True  # lengths spread over [maxlen / 2, maxlen - D]; else every request maxlen - D
    topk: int = 2048
    # Overrides `spread` when set: "equal" (every request maxlen - D), "uniform" (in [1, maxlen - D]),
    # "one-long" (one request maxlen - D, the rest 1k-4k). The longest is maxlen - D in every profile.
    profile: str | None = None
    mode: str = "target_verify"  # or "decode", "draft_extend" (accept lengths uniform in [1, D])

    @property
    def id(self) -> str:
        base = f"bs{self.bs}-D{self.D}-ps{self.page_size}-len{self.maxlen}"
        base = base if self.profile is None else f"{base}-{self.profile}-w{self.context_len}"
        return base if self.mode == "target_verify" else f"{self.mode}-{base}"

    def bytes_moved(self) -> int:
        """Fewest bytes a target-verify replay with baseline's semantics must move: each source row read once,
        every output written once, up to the batch's max_seqlen_k in every row (whatever the length profile)."""
        rows = self.bs * self.D
        pages = -(-self.maxlen // self.page_size) if self.page_size > 1 else 0
        return 4 * (self.bs * self.maxlen + rows * self.maxlen + rows * pages + 4 * rows + 2 * self.bs)

    def floor_us(self, copy_bandwidth: float) -> float:
        """The memory floor: bytes_moved() at the card's device-to-device copy bandwidth (bytes/s)."""
        return self.bytes_moved() / copy_bandwidth * 1e6

    def scenario(self) -> Scenario:
        return Scenario(num_draft_tokens=self.D, page_size=self.page_size, index_topk=self.topk, mode=self.mode,
                        context_len=self.context_len, capture_bs=(self.bs,), pool_size=self.bs + 8, seed=self.bs)

    def batch(self, device: str) -> Batch:
        g = torch.Generator().manual_seed(self.bs * 7 + self.D)
        longest = self.maxlen - self.D
        if self.profile is not None:
            lens = profile_lengths(self.profile, self.bs, longest, g)
        elif self.spread:
            lens = torch.randint(self.maxlen // 2, longest + 1, (self.bs,), generator=g, dtype=torch.int32)
            lens[0] = longest
        else:
            lens = torch.full((self.bs,), longest, dtype=torch.int32)
        pool = torch.randperm(self.bs + 8, generator=g)[: self.bs].to(torch.int32)
        if self.mode != "draft_extend":
            return Batch(pool.to(device), lens.to(device))
        accept = torch.randint(1, self.D + 1, (self.bs,), generator=g, dtype=torch.int32)
        return Batch(pool.to(device), lens.clamp(min=self.D).to(device), accept.to(device))


PROFILES = ("equal", "uniform", "one-long")


def profile_lengths(profile: str, bs: int, longest: int, g: torch.Generator) -> torch.Tensor:
    """Request lengths (int32, CPU) of one profile, the first request `longest` long."""
    if profile == "equal":
        lens = torch.full((bs,), longest, dtype=torch.int32)
    elif profile == "uniform":
        lens = torch.randint(1, longest + 1, (bs,), generator=g, dtype=torch.int32)
    elif profile == "one-long":
        lens = torch.randint(min(1024, longest), min(4096, longest) + 1, (bs,), generator=g, dtype=torch.int32)
    else:
        raise ValueError(f"unknown length profile {profile!r}: choose one of {', '.join(PROFILES)}")
    lens[0] = longest
    return lens


def prepared_runner(module: ModuleType, config: Config, device: str) -> GraphRunner:
    """`module`'s runner with `config`'s batch replayed once (compiled, caches warm) and prepared again."""
    runner = config.scenario().runner(module, device)
    batch = config.batch(device)
    runner.replay(batch)
    runner.prepare(batch)
    return runner


def launch_buffers(bs: int, draft: int, page_size: int, width: int, device, tables=None) -> SimpleNamespace:
    """The buffers of one captured NSAMetadata as the launch object reads them, zeroed: for timing the
    bare launch. `tables` = (page_table, real_page_table) shares larger ones across batch sizes."""
    rows = bs * draft
    page_table, real_page_table = tables or (
        torch.zeros(rows, width, dtype=torch.int32, device=device),
        torch.zeros(rows, -(-width // page_size), dtype=torch.int32, device=device),
    )
    buffers = SimpleNamespace(
        page_size=page_size,
        cache_seqlens_int32=torch.zeros(bs, dtype=torch.int32, device=device),
        cu_seqlens_k=torch.zeros(bs + 1, dtype=torch.int32, device=device),
        nsa_seqlens_expanded=torch.zeros(rows, dtype=torch.int32, device=device),
        nsa_cache_seqlens_int32=torch.zeros(rows, dtype=torch.int32, device=device),
        nsa_cu_seqlens_k=torch.zeros(rows + 1, dtype=torch.int32, device=device),
        page_table_1=page_table[:rows],
        real_page_table=real_page_table[:rows],
    )
    if page_size == 1:  # upstream aliases the two tables at page size 1: one object
        buffers.real_page_table = buffers.page_table_1
    return buffers


def poison(buffers: SimpleNamespace, seed: int) -> SimpleNamespace:
    """Fill every tensor of `buffers` with int32 noise from `seed`: the stale contents a replay must leave
    alone where it writes nothing (two calls with one seed poison alike)."""
    some = next(t for t in vars(buffers).values() if isinstance(t, torch.Tensor))
    g = torch.Generator(device=some.device).manual_seed(seed)
    for t in vars(buffers).values():
        if isinstance(t, torch.Tensor):
            t.copy_(torch.randint(-(1 << 30), 1 << 30, t.shape, generator=g, device=t.device, dtype=torch.int32))
    return buffers
