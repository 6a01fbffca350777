"""Eager torch reference of upstream's fused DSA metadata contract (sglang 0.5.15 - 0.5.23).

What every release's fused_dsa_{decode,target_verify,draft_extend}_metadata guarantees:
- the length and cumsum buffers, written over their first bs (+1) or bs * next_n (+1) entries
  (`paged_mqa_ctx_lens_2d` whole); entries past those are not written;
- each page-table row equal to req_to_token[req_pool_indices[request]] over its live prefix,
  `live = min(cache_seqlens[request], width)` columns of `page_table_1` and
  `ceil(live / page_size)` columns of `real_page_table` (the id of each page's first token,
  divided by the page size). Columns past the live prefix are outside the contract.

The functions return what the kernels must write: {buffer name: (values, live mask)}; `live mask`
is None for a buffer written over exactly `values`' first entries, and a boolean mask of the
buffer's shape for a page table. Keyword-only, as the callers in dsa_backend.py call upstream.
Integer division is truncation, as Triton's `//` on int32 is.
"""

from __future__ import annotations

import torch

Written = dict[str, tuple[torch.Tensor, torch.Tensor | None]]


def _pages(tokens: torch.Tensor, page_size: int) -> torch.Tensor:
    return torch.div(tokens[:, ::page_size], page_size, rounding_mode="trunc")


def _page_tables(
    out: Written,
    *,
    rows_tokens: torch.Tensor,
    rows_live: torch.Tensor,
    dst_rows: torch.Tensor,
    page_table_1: torch.Tensor | None,
    real_page_table: torch.Tensor | None,
    page_size: int,
) -> None:
    """Rows `dst_rows` of the page tables hold `rows_tokens` over `rows_live` columns."""

    def place(name: str, table: torch.Tensor, values: torch.Tensor, live: torch.Tensor) -> None:
        full = torch.zeros(table.shape, dtype=torch.int32)
        mask = torch.zeros(table.shape, dtype=torch.bool)
        cols = torch.arange(values.shape[1])
        full[dst_rows, : values.shape[1]] = values.to(torch.int32)
        mask[dst_rows, : values.shape[1]] = cols[None, :] < live[:, None]
        out[name] = (full, mask)

    if page_table_1 is not None:
        place("page_table_1", page_table_1, rows_tokens, rows_live)
    if page_size > 1:
        live_pages = torch.div(rows_live + page_size - 1, page_size, rounding_mode="floor")
        place("real_page_table", real_page_table, _pages(rows_tokens, page_size), live_pages)


def decode(
    *,
    seq_lens: torch.Tensor,
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    page_table_1: torch.Tensor | None,
    real_page_table: torch.Tensor | None,
    bs: int,
    max_len: int,
    dsa_index_topk: int,
    page_size: int,
) -> Written:
    cache = seq_lens[:bs].to(torch.int32)
    dsa = cache.clamp(max=dsa_index_topk)
    out: Written = {
        "cache_seqlens": (cache, None),
        "cu_seqlens_k": (_with_zero(cache.cumsum(0, dtype=torch.int32)), None),
        "dsa_cache_seqlens": (dsa, None),
        "dsa_cu_seqlens_k": (_with_zero(dsa.cumsum(0, dtype=torch.int32)), None),
    }
    _page_tables(
        out,
        rows_tokens=req_to_token[req_pool_indices[:bs].long(), :max_len],
        rows_live=cache.clamp(max=max_len),
        dst_rows=torch.arange(bs),
        page_table_1=page_table_1,
        real_page_table=real_page_table,
        page_size=page_size,
    )
    return out


def target_verify(
    *,
    seq_lens: torch.Tensor,
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    page_table_1: torch.Tensor | None,
    real_page_table: torch.Tensor | None,
    bs: int,
    max_seqlen_k: int,
    dsa_index_topk: int,
    page_size: int,
    next_n: int,
    paged_mqa_ctx_lens_2d: torch.Tensor | None = None,
) -> Written:
    seq = seq_lens[:bs].to(torch.int32)
    cache = seq + next_n
    expanded = (seq[:, None] + torch.arange(1, next_n + 1, dtype=torch.int32)).flatten()
    dsa = expanded.clamp(max=dsa_index_topk)
    out: Written = {
        "cache_seqlens": (cache, None),
        "cu_seqlens_k": (_with_zero(cache.cumsum(0, dtype=torch.int32)), None),
        "seqlens_expanded": (expanded, None),
        "dsa_cache_seqlens": (dsa, None),
        "dsa_cu_seqlens_k": (_with_zero(dsa.cumsum(0, dtype=torch.int32)), None),
    }
    if paged_mqa_ctx_lens_2d is not None:
        out["paged_mqa_ctx_lens_2d"] = (cache[:, None].expand(bs, next_n).clone(), None)
    tokens = req_to_token[req_pool_indices[:bs].long(), :max_seqlen_k]
    _page_tables(
        out,
        rows_tokens=tokens.repeat_interleave(next_n, dim=0),
        rows_live=cache.clamp(max=max_seqlen_k).repeat_interleave(next_n),
        dst_rows=torch.arange(bs * next_n),
        page_table_1=page_table_1,
        real_page_table=real_page_table,
        page_size=page_size,
    )
    return out


def draft_extend(
    *,
    seq_lens: torch.Tensor,
    extend_seq_lens: torch.Tensor,
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    page_table_1: torch.Tensor | None,
    real_page_table: torch.Tensor | None,
    bs: int,
    total_len: int,
    max_seqlen_k: int,
    dsa_index_topk: int,
    page_size: int,
    max_extend_len: int,
    max_total_len: int,
    static_extend_len: bool = False,
) -> Written:
    """Inputs within the contract: 0 <= extend_seq_lens <= max_extend_len, all equal (>= 1) when
    static, and total_len <= their sum (a smaller total_len fills the first total_len rows)."""
    cache = seq_lens[:bs].to(torch.int32)
    out: Written = {
        "cache_seqlens": (cache, None),
        "cu_seqlens_k": (_with_zero(cache.cumsum(0, dtype=torch.int32)), None),
        "dsa_cu_seqlens_k": (torch.zeros(1, dtype=torch.int32), None),
    }
    if total_len == 0:  # upstream's host path: no row, no expanded length
        return out
    qo = extend_seq_lens[:bs].to(torch.int32)
    request = torch.repeat_interleave(torch.arange(bs), qo.long())[:total_len]
    first_row = torch.cumsum(qo, 0) - qo
    offset = torch.arange(total_len, dtype=torch.int32) - first_row[request]
    # Padded requests (seq_len below qo_len) get 0, never a negative length.
    expanded = (cache[request] - qo[request] + offset + 1).clamp(min=0)
    dsa = expanded.clamp(max=dsa_index_topk)
    out["seqlens_expanded"] = (expanded, None)
    out["dsa_cache_seqlens"] = (dsa, None)
    out["dsa_cu_seqlens_k"] = (_with_zero(dsa.cumsum(0, dtype=torch.int32)), None)
    tokens = req_to_token[req_pool_indices[:bs].long(), :max_seqlen_k]
    _page_tables(
        out,
        rows_tokens=tokens[request],
        rows_live=cache.clamp(max=max_seqlen_k)[request],
        dst_rows=torch.arange(total_len),
        page_table_1=page_table_1,
        real_page_table=real_page_table,
        page_size=page_size,
    )
    return out


def _with_zero(cumsum: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros(1, dtype=torch.int32), cumsum])
