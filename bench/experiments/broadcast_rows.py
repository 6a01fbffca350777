"""The simplest kernel that writes a target-verify replay's page-table bytes: a practical floor.

Every request i of a batch whose requests all share one length L (bench.experiments.kernel_floor's
inputs) has D rows, each a copy of its source row:
  page_table[i * D + d, c]        = req_to_token[pool[i], c]                   (c < L)
  real_page_table[i * D + d, p]   = req_to_token[pool[i], p * ps] >> log2(ps)  (p * ps < L, ps > 1)
One program per (request, BLOCK_COLS columns), L given by the host: no length buffers, no scan, no
max over the batch, no dependent load before the copy but the pool index. What it takes above the
copy-bandwidth floor is what this read/write mix and launch cost on the card, whatever the kernel.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _broadcast_rows_kernel(
    # inputs
    pool_ptr,  # [bs] int32
    req_to_token_ptr,  # [rows, >= length] int32
    # outputs
    page_table_ptr,  # [bs * DRAFT, >= length] int32
    real_page_table_ptr,  # [bs * DRAFT, >= cdiv(length, page size)] int32
    # scalars
    length,
    req_to_token_stride,
    page_table_stride,
    real_page_table_stride,
    # constexpr
    DRAFT: tl.constexpr,
    LOG2_PAGE_SIZE: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):
    req = tl.program_id(0)
    block = tl.program_id(1)
    src_row = req_to_token_ptr + tl.load(pool_ptr + req).to(tl.int64) * req_to_token_stride
    first_row = req.to(tl.int64) * DRAFT
    cols = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    tokens = tl.load(src_row + cols, mask=cols < length)
    for d in tl.static_range(DRAFT):
        tl.store(page_table_ptr + (first_row + d) * page_table_stride + cols, tokens, mask=cols < length)
    if LOG2_PAGE_SIZE > 0:
        pages = block * (BLOCK_COLS >> LOG2_PAGE_SIZE) + tl.arange(0, BLOCK_COLS >> LOG2_PAGE_SIZE)
        first_cols = pages << LOG2_PAGE_SIZE
        page_ids = tl.load(src_row + first_cols, mask=first_cols < length) >> LOG2_PAGE_SIZE
        for d in tl.static_range(DRAFT):
            tl.store(real_page_table_ptr + (first_row + d) * real_page_table_stride + pages, page_ids,
                     mask=first_cols < length)


def broadcast_rows(
    *,
    pool: torch.Tensor,
    req_to_token: torch.Tensor,
    page_table: torch.Tensor,
    real_page_table: torch.Tensor,
    length: int,
    draft: int,
    page_size: int,
    block_cols: int = 1024,
) -> None:
    """Write the first `length` columns of every request's `draft` rows (and their page ids)."""
    grid = (pool.shape[0], triton.cdiv(length, block_cols))
    _broadcast_rows_kernel[grid](
        pool, req_to_token, page_table, real_page_table,
        length, req_to_token.stride(0), page_table.stride(0), real_page_table.stride(0),
        DRAFT=draft, LOG2_PAGE_SIZE=page_size.bit_length() - 1, BLOCK_COLS=block_cols, num_warps=4,
    )
