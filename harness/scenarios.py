"""Replay sequences to compare stages on: deterministic, seeded, small enough for the interpreter.

A scenario fixes the backend configuration (mode, D, page size, context, topk, seq_lens dtype,
captured batch sizes) and a seed; `batches()` yields the replays. Batch sizes vary so that several
captured graphs, which share one `page_table` buffer, are replayed interleaved; padded batches occur
whenever the raw bs is not itself captured; the first replay is long (lengths up to exactly the
context) so that later, shorter replays must leave its columns untouched.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import ModuleType
from typing import Iterator

import torch

from .runner import Batch, GraphRunner

DTYPES = {"int32": torch.int32, "int64": torch.int64}


@dataclass(frozen=True)
class Scenario:
    num_draft_tokens: int
    page_size: int
    index_topk: int
    mode: str = "target_verify"
    context_len: int = 256
    capture_bs: tuple[int, ...] = (1, 2, 3, 4, 8)
    seq_lens_dtype: str = "int32"
    replays: int = 6
    pool_size: int = 16
    seed: int = 0
    negative_pool_entries: bool = False  # req_to_token values below zero (floor-division edge)

    @property
    def name(self) -> str:
        mode = {"target_verify": "tv", "decode": "dec", "draft_extend": "dx"}[self.mode]
        return (
            f"{mode}-D{self.num_draft_tokens}-ps{self.page_size}-ctx{self.context_len}"
            f"-topk{self.index_topk}-{self.seq_lens_dtype}-s{self.seed}"
        )

    def req_to_token(self, device) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        low = -(1 << 20) if self.negative_pool_entries else 0
        table = torch.randint(low, 1 << 20, (self.pool_size, self.context_len), generator=g, dtype=torch.int32)
        return table.to(device)

    def runner(self, module: ModuleType, device="cpu") -> GraphRunner:
        return GraphRunner(
            module,
            req_to_token=self.req_to_token(device),
            context_len=self.context_len,
            page_size=self.page_size,
            index_topk=self.index_topk,
            num_draft_tokens=self.num_draft_tokens,
            capture_bs=self.capture_bs,
            mode=self.mode,
            seq_lens_dtype=DTYPES[self.seq_lens_dtype],
        )

    def batches(self, device="cpu") -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed + 1)
        extra = 0 if self.mode != "target_verify" else self.num_draft_tokens
        longest = self.context_len - extra
        max_bs = max(self.capture_bs)
        dtype = DTYPES[self.seq_lens_dtype]
        for step in range(self.replays):
            raw_bs = max_bs if step == 0 else int(torch.randint(1, max_bs + 1, (1,), generator=g))
            if step == 0:
                lens = torch.full((raw_bs,), longest)
            else:
                lens = torch.randint(1, longest + 1, (raw_bs,), generator=g)
                lens[0] = longest if step % 3 == 0 else lens[0]  # exactly the context, now and then
            if self.mode == "draft_extend":
                lens = lens.clamp(min=self.num_draft_tokens)
            pool = torch.randint(0, self.pool_size, (raw_bs,), generator=g, dtype=torch.int32)
            accept = None
            if self.mode == "draft_extend":
                accept = torch.randint(1, self.num_draft_tokens + 1, (raw_bs,), generator=g, dtype=torch.int32)
                accept = accept.to(device)
            yield Batch(pool.to(device), lens.to(dtype).to(device), accept)


def matrix() -> list[Scenario]:
    """The named matrix `harness verify` and CI run: D 1..8 x page size 1, 64, both topk regimes."""
    out = []
    for d, ps in itertools.product(range(1, 9), (1, 64)):
        out.append(
            Scenario(
                num_draft_tokens=d,
                page_size=ps,
                context_len=256 if ps == 1 else 320,  # 320: the last page is partial
                index_topk=48 if d % 2 else 4096,  # 48 clamps most rows; 4096 clamps none
                seq_lens_dtype="int64" if d in (3, 8) else "int32",
                seed=d * 100 + ps,
            )
        )
    for mode, ps in itertools.product(("decode", "draft_extend"), (1, 64)):
        out.append(Scenario(num_draft_tokens=3, page_size=ps, index_topk=48, mode=mode, seed=7 + ps))
    return out
