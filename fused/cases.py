"""Inputs on upstream's contract, one launch of any implementation, and the check against the reference.

Shared by the CPU tests (through the interpreter) and fused/gpu_check.py (compiled).
Every output buffer starts filled with SENTINEL and is a little longer than the call needs, so
that the check sees what a launch writes outside the entries the contract names.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

import torch

from fused import reference

SENTINEL = -7
MODES = ("decode", "target_verify", "draft_extend")
FUNCTIONS = {mode: f"fused_dsa_{mode}_metadata" for mode in MODES}


@dataclasses.dataclass(frozen=True)
class Case:
    mode: str
    seq_lens: tuple[int, ...]
    width: int
    page_size: int = 64
    next_n: int = 1  # target verify's draft tokens; draft extend's max_extend_len
    extend_lens: tuple[int, ...] = ()  # draft extend: accepted tokens per request
    total_len: int | None = None  # draft extend: default sum(extend_lens)
    static_extend_len: bool = False
    page_table_1: bool = True
    paged_mqa_ctx_lens: bool = False
    topk: int = 2048
    seed: int = 0

    @property
    def bs(self) -> int:
        return len(self.seq_lens)

    @property
    def rows(self) -> int:
        if self.mode == "decode":
            return self.bs
        if self.mode == "target_verify":
            return self.bs * self.next_n
        return self.bs * self.next_n  # max_total_len: the captured rows

    def draft_total_len(self) -> int:
        return sum(self.extend_lens) if self.total_len is None else self.total_len


def make_inputs(case: Case, device: str = "cpu") -> tuple[dict, dict]:
    """(read-only inputs, sentinel-filled outputs) for one call."""
    g = torch.Generator().manual_seed(case.seed)
    pool = case.bs + 3
    # Token ids below 2^24 keep page ids non-negative (the pool never holds negative ids).
    req_to_token = torch.randint(0, 1 << 24, (pool, case.width + 5), generator=g, dtype=torch.int32)
    req_pool_indices = torch.randperm(pool, generator=g)[: case.bs].to(torch.int64)
    inputs = {
        "seq_lens": torch.tensor(case.seq_lens, dtype=torch.int64),
        "req_pool_indices": req_pool_indices,
        "req_to_token": req_to_token,
    }
    if case.mode == "draft_extend":
        inputs["extend_seq_lens"] = torch.tensor(case.extend_lens, dtype=torch.int32)

    def fill(*shape):
        return torch.full(shape, SENTINEL, dtype=torch.int32)

    def table(rows, cols):
        # A view of the first `rows` rows: a write past the table lands in the guard row that
        # follows (its `_base`), which the check reads, instead of in someone else's memory.
        return fill(rows + 1, cols)[:rows]

    rows = max(case.rows, 1)
    # Upstream's draft extend with total_len 0 copies seq_lens into cache_seqlens whole.
    spare = 0 if case.mode == "draft_extend" and case.draft_total_len() == 0 else 2
    outputs = {
        "cache_seqlens": fill(case.bs + spare),
        "cu_seqlens_k": fill(case.bs + 3),
        "dsa_cache_seqlens": fill(rows + 2),
        "dsa_cu_seqlens_k": fill(rows + 3),
        "page_table_1": table(rows, case.width) if case.page_table_1 else None,
        "real_page_table": table(rows, -(-case.width // case.page_size)) if case.page_size > 1 else None,
    }
    if case.mode != "decode":
        outputs["seqlens_expanded"] = fill(rows + 2)
    if case.paged_mqa_ctx_lens:
        outputs["paged_mqa_ctx_lens_2d"] = fill(case.bs, case.next_n)
    if device != "cpu":
        inputs = {k: v.to(device) for k, v in inputs.items()}
        outputs = {k: (v if v is None else to_device(v, device)) for k, v in outputs.items()}
    return inputs, outputs


def to_device(buffer: torch.Tensor, device: str) -> torch.Tensor:
    """A copy on `device`, keeping a page table's guard row behind it."""
    if buffer._base is None:
        return buffer.to(device, copy=True)
    return buffer._base.to(device, copy=True)[: buffer.shape[0]]


def call(module: ModuleType, case: Case, inputs: dict, outputs: dict, page_size_arg: str) -> None:
    """One call of `module`'s function for case.mode, by keyword, as dsa_backend.py calls it."""
    kwargs = dict(inputs, **outputs, bs=case.bs, dsa_index_topk=case.topk)
    kwargs[page_size_arg] = case.page_size
    if case.mode == "decode":
        kwargs["max_len"] = case.width
    else:
        kwargs["max_seqlen_k"] = case.width
    if case.mode == "target_verify":
        kwargs["next_n"] = case.next_n
    if case.mode == "draft_extend":
        kwargs.update(
            total_len=case.draft_total_len(),
            max_extend_len=case.next_n,
            max_total_len=case.rows,
            static_extend_len=case.static_extend_len,
        )
    getattr(module, FUNCTIONS[case.mode])(**kwargs)


def expected(case: Case, inputs: dict, outputs: dict) -> dict:
    """The reference's writes, for this case's buffers."""
    cpu = {k: v.cpu() for k, v in inputs.items()}
    tables = {k: outputs[k] for k in ("page_table_1", "real_page_table")}
    tables = {k: (None if v is None else v.cpu()) for k, v in tables.items()}
    common = dict(
        seq_lens=cpu["seq_lens"],
        req_pool_indices=cpu["req_pool_indices"],
        req_to_token=cpu["req_to_token"],
        bs=case.bs,
        dsa_index_topk=case.topk,
        page_size=case.page_size,
        **tables,
    )
    if case.mode == "decode":
        return reference.decode(max_len=case.width, **common)
    if case.mode == "target_verify":
        mqa = outputs.get("paged_mqa_ctx_lens_2d")
        return reference.target_verify(max_seqlen_k=case.width, next_n=case.next_n, paged_mqa_ctx_lens_2d=mqa, **common)
    return reference.draft_extend(
        extend_seq_lens=cpu["extend_seq_lens"],
        total_len=case.draft_total_len(),
        max_seqlen_k=case.width,
        max_extend_len=case.next_n,
        max_total_len=case.rows,
        static_extend_len=case.static_extend_len,
        **common,
    )


def check(case: Case, outputs: dict, want: dict, live_prefix_only: bool) -> None:
    """Every buffer whole: the reference's values where the contract names an entry, SENTINEL
    elsewhere. With live_prefix_only (upstream, which may write a page-table row past its live
    prefix) the page tables are compared on the live prefix alone. The first difference is named."""
    for name, buffer in outputs.items():
        if buffer is None:
            continue
        if buffer._base is not None:
            guard = buffer._base[buffer.shape[0] :]
            if not (guard == SENTINEL).all():
                raise AssertionError(f"{case}: {name} written past its last row")
        got = buffer.cpu()
        values, live = want.get(name, (torch.empty(0, dtype=torch.int32), None))
        if live is None:
            full = torch.full_like(got, SENTINEL).flatten()
            full[: values.numel()] = values.flatten()
            full = full.view_as(got)
        else:
            full = torch.where(live, values, torch.full_like(got, SENTINEL))
            if live_prefix_only:
                got, full = got[live], full[live]
        if not torch.equal(got, full):
            where = (got != full).nonzero()[0].tolist()
            raise AssertionError(
                f"{case}: {name}{where} is {got[tuple(where)].item()}, want {full[tuple(where)].item()}"
            )


def run_and_check(module: ModuleType, case: Case, page_size_arg: str, live_prefix_only: bool, device: str = "cpu"):
    inputs, outputs = make_inputs(case, device)
    call(module, case, inputs, outputs, page_size_arg)
    check(case, outputs, expected(case, inputs, outputs), live_prefix_only)
