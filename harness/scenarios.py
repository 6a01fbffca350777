"""Replay sequences to compare stages on: deterministic, seeded, small enough for the interpreter.

A scenario fixes the backend configuration (mode, D, page size, context, topk, seq_lens dtype,
captured batch sizes) and a seed; `batches()` yields the replays. Batch sizes vary so that several
captured graphs, which share one `page_table` buffer, are replayed interleaved; padded batches occur
whenever the raw bs is not itself captured; the first replay is long (lengths up to exactly the
context) so that later, shorter replays must leave its columns untouched.

Two profiles aim at the kernels' edges: `lengths="page_boundaries"` makes every replay's longest
request end at a page boundary +- 1 and at the 16-column body/tail split
(max_seqlen_k = 0, 1, 15, 16, 63 mod 64), and `token_values` puts req_to_token entries below
zero or next to the int32 limits, where a page shift and a floor division differ.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import ModuleType
from typing import Iterator

import torch

from .runner import Batch, GraphRunner

DTYPES = {"int32": torch.int32, "int64": torch.int64}
# req_to_token entries: [low, high) ranges drawn from.
TOKEN_VALUES = {
    "small": ((0, 1 << 20),),
    "negative": ((-(1 << 20), 1 << 20),),
    "int32_limits": ((-(1 << 31), -(1 << 31) + (1 << 16)), ((1 << 31) - (1 << 16), (1 << 31) - 1)),
}
# max_seqlen_k mod 64 for lengths="page_boundaries": a page boundary, one past it, and either side
# of the 16-column split between the kernels' aligned body and their tail.
BOUNDARY_RESIDUES = (0, 1, 15, 16, 63)


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
    token_values: str = "small"  # a key of TOKEN_VALUES
    lengths: str = "random"  # or "page_boundaries"
    accept: str = "random"  # draft extend's accept lengths: or "all-1", "all-D", "seq_len" (== seq_len)

    @property
    def name(self) -> str:
        mode = {"target_verify": "tv", "decode": "dec", "draft_extend": "dx"}[self.mode]
        profile = "".join(
            f"-{value}"
            for value, default in ((self.token_values, "small"), (self.lengths, "random"), (self.accept, "random"))
            if value != default
        )
        return (
            f"{mode}-D{self.num_draft_tokens}-ps{self.page_size}-ctx{self.context_len}"
            f"-topk{self.index_topk}-{self.seq_lens_dtype}-bs{max(self.capture_bs)}{profile}-s{self.seed}"
        )

    def req_to_token(self, device) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.pool_size, self.context_len)
        ranges = TOKEN_VALUES[self.token_values]
        parts = [torch.randint(low, high, shape, generator=g, dtype=torch.int32) for low, high in ranges]
        pick = torch.randint(0, len(parts), shape, generator=g)
        table = torch.stack(parts).gather(0, pick.unsqueeze(0)).squeeze(0)
        return table.to(device)

    def _longest(self, step: int, longest: int, extra: int) -> int:
        """The longest request of replay `step` for lengths="page_boundaries" (else the context)."""
        if self.lengths == "random":
            return longest
        targets = [
            k * 64 + r
            for k in range(self.context_len // 64 + 1)
            for r in BOUNDARY_RESIDUES
            if extra < k * 64 + r <= self.context_len and (k, r) != (0, 0)
        ]
        return targets[(step * 7) % len(targets)] - extra

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
            top = self._longest(step, longest, extra)
            if step == 0:
                lens = torch.full((raw_bs,), top)
            else:
                lens = torch.randint(1, top + 1, (raw_bs,), generator=g)
                if step % 3 == 0 or self.lengths == "page_boundaries":
                    lens[0] = top  # exactly the context now and then, or the boundary aimed at
            if self.mode == "draft_extend":
                lens = lens.clamp(min=self.num_draft_tokens)
            pool = torch.randint(0, self.pool_size, (raw_bs,), generator=g, dtype=torch.int32)
            accept = None
            if self.mode == "draft_extend":
                accept = torch.randint(1, self.num_draft_tokens + 1, (raw_bs,), generator=g, dtype=torch.int32)
                if self.accept in ("all-1", "all-D"):
                    accept.fill_(1 if self.accept == "all-1" else self.num_draft_tokens)
                elif self.accept == "seq_len":  # every request but the longest accepts its whole length
                    lens[1:] = accept[1:]
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
    # Draft extend's accept lengths at their edges, topk clamping and not; both modes up to bs 256 with
    # several captured bs sharing one page table, padded slots at sglang's fill values.
    for accept, ps, topk in (("all-1", 1, 4096), ("all-D", 64, 48), ("seq_len", 64, 4096)):
        out.append(Scenario(num_draft_tokens=4, page_size=ps, index_topk=topk, mode="draft_extend",
                            accept=accept, seed=60 + ps))
    for mode, ps in (("draft_extend", 64), ("decode", 1)):
        out.append(Scenario(num_draft_tokens=4, page_size=ps, index_topk=100, mode=mode, context_len=192,
                            capture_bs=(1, 7, 64, 256), seq_lens_dtype="int64", replays=3, seed=70 + ps))
    out.append(Scenario(num_draft_tokens=2, page_size=64, index_topk=4096, mode="decode", seed=80))
    # The kernels' edges: long drafts, a batch the length scan takes in several chunks (D=16: 128
    # requests a chunk), lengths at page and tail boundaries, entries at the int32 limits.
    for d, ps in ((9, 64), (16, 1)):
        out.append(Scenario(num_draft_tokens=d, page_size=ps, index_topk=4096, context_len=200, seed=d))
    out.append(
        Scenario(num_draft_tokens=16, page_size=64, index_topk=100, context_len=192,
                 capture_bs=(1, 129, 160), replays=3, seed=16)
    )
    out.append(
        Scenario(num_draft_tokens=2, page_size=64, index_topk=48, context_len=128,
                 capture_bs=(7, 64, 256), replays=4, seed=2)
    )
    for ps, d in ((64, 4), (1, 1)):
        out.append(
            Scenario(num_draft_tokens=d, page_size=ps, index_topk=300, context_len=400,
                     lengths="page_boundaries", replays=10, seed=40 + ps)
        )
    for values in ("negative", "int32_limits"):
        out.append(Scenario(num_draft_tokens=3, page_size=64, index_topk=48, token_values=values, seed=50))
    out.append(Scenario(num_draft_tokens=1, page_size=1, index_topk=48, token_values="int32_limits", seed=51))
    return out
