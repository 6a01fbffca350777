"""The simplest kernel that writes a target-verify replay's page-table bytes: a practical floor.

Every request i of a batch whose requests all share one length L (notebook.kernel_floor's
inputs) has D rows, each a copy of its source row:
  page_table[i * D + d, c]        = req_to_token[pool[i], c]                   (c < L)
  real_page_table[i * D + d, p]   = req_to_token[pool[i], p * ps] >> log2(ps)  (p * ps < L, ps > 1)
One program per (request, BLOCK_COLS columns), L given by the host: no length buffers, no scan, no
max over the batch, no dependent load before the copy but the pool index. What it takes above the
copy-bandwidth floor is what this read/write mix and launch cost on the card, whatever the kernel.

`broadcast_rows_tma` writes the page table with the Hopper tensor-memory accelerator instead: each
program copies a contiguous run of 256-column blocks, one bulk store of a [D, 256] box per block
(the D rows of a request are rows of the table), and the descriptor's shape, [bs * D, L], keeps
every column past L as it was. A probe of what bulk stores buy on this mix, not a replacement:
L is a host value here.
"""

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor


@triton.jit
def _request_and_block(ALONG_ROWS: tl.constexpr):
    """This program's (request, column block). ALONG_ROWS: neighbouring programs take neighbouring blocks
    of one row; else one block of neighbouring requests."""
    if ALONG_ROWS:
        return tl.program_id(1), tl.program_id(0)
    return tl.program_id(0), tl.program_id(1)


@triton.jit
def _copy_page_ids(src_row, real_page_table_ptr, first_row, block, length, real_page_table_stride,
                   DRAFT: tl.constexpr, LOG2_PAGE_SIZE: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """real_page_table's pages of one column block, in the request's DRAFT rows (page size > 1)."""
    pages = block * (BLOCK_COLS >> LOG2_PAGE_SIZE) + tl.arange(0, BLOCK_COLS >> LOG2_PAGE_SIZE)
    first_cols = pages << LOG2_PAGE_SIZE
    page_ids = tl.load(src_row + first_cols, mask=first_cols < length) >> LOG2_PAGE_SIZE
    for d in tl.static_range(DRAFT):
        tl.store(real_page_table_ptr + (first_row + d).to(tl.int64) * real_page_table_stride + pages, page_ids,
                 mask=first_cols < length)


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
    ALONG_ROWS: tl.constexpr,
):
    req, block = _request_and_block(ALONG_ROWS)
    src_row = req_to_token_ptr + tl.load(pool_ptr + req).to(tl.int64) * req_to_token_stride
    first_row = req.to(tl.int64) * DRAFT
    cols = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    tokens = tl.load(src_row + cols, mask=cols < length)
    for d in tl.static_range(DRAFT):
        tl.store(page_table_ptr + (first_row + d) * page_table_stride + cols, tokens, mask=cols < length)
    if LOG2_PAGE_SIZE > 0:
        _copy_page_ids(src_row, real_page_table_ptr, first_row, block, length, real_page_table_stride,
                       DRAFT, LOG2_PAGE_SIZE, BLOCK_COLS)


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
    along_rows: bool = False,
) -> None:
    """Write the first `length` columns of every request's `draft` rows (and their page ids); `along_rows`:
    the grid launches the blocks of one request together, else one block of every request together."""
    grid = (pool.shape[0], triton.cdiv(length, block_cols))
    _broadcast_rows_kernel[grid[::-1] if along_rows else grid](
        pool, req_to_token, page_table, real_page_table,
        length, req_to_token.stride(0), page_table.stride(0), real_page_table.stride(0),
        DRAFT=draft, LOG2_PAGE_SIZE=page_size.bit_length() - 1, BLOCK_COLS=block_cols, ALONG_ROWS=along_rows,
        num_warps=4,
    )


@triton.jit
def _fill_rows_kernel(
    # outputs
    page_table_ptr,  # [bs * DRAFT, >= length] int32
    real_page_table_ptr,  # [bs * DRAFT, >= cdiv(length, page size)] int32
    # scalars
    length,
    page_table_stride,
    real_page_table_stride,
    # constexpr
    DRAFT: tl.constexpr,
    LOG2_PAGE_SIZE: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
    ALONG_ROWS: tl.constexpr,
):
    req, block = _request_and_block(ALONG_ROWS)
    first_row = req.to(tl.int64) * DRAFT
    cols = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    for d in tl.static_range(DRAFT):
        tl.store(page_table_ptr + (first_row + d) * page_table_stride + cols, cols, mask=cols < length)
    if LOG2_PAGE_SIZE > 0:
        pages = block * (BLOCK_COLS >> LOG2_PAGE_SIZE) + tl.arange(0, BLOCK_COLS >> LOG2_PAGE_SIZE)
        for d in tl.static_range(DRAFT):
            tl.store(real_page_table_ptr + (first_row + d) * real_page_table_stride + pages, pages,
                     mask=(pages << LOG2_PAGE_SIZE) < length)


def fill_rows(
    *,
    page_table: torch.Tensor,
    real_page_table: torch.Tensor,
    length: int,
    draft: int,
    page_size: int,
    block_cols: int = 1024,
    along_rows: bool = False,
) -> None:
    """broadcast_rows's stores alone (each column's index for a value): what the writes cost without the reads."""
    grid = (page_table.shape[0] // draft, triton.cdiv(length, block_cols))
    _fill_rows_kernel[grid[::-1] if along_rows else grid](
        page_table, real_page_table, length, page_table.stride(0), real_page_table.stride(0),
        DRAFT=draft, LOG2_PAGE_SIZE=page_size.bit_length() - 1, BLOCK_COLS=block_cols, ALONG_ROWS=along_rows,
        num_warps=4,
    )


TMA_BLOCK_COLS = 256  # the largest box dimension a bulk tensor copy takes


@triton.jit
def _broadcast_rows_tma_kernel(
    # inputs
    pool_ptr,  # [bs] int32
    req_to_token_ptr,  # [rows, >= length] int32
    # outputs
    page_table_desc,  # [bs * DRAFT, length] int32, box [DRAFT, BLOCK_COLS]
    real_page_table_ptr,  # [bs * DRAFT, >= cdiv(length, page size)] int32
    # scalars
    length,
    req_to_token_stride,
    real_page_table_stride,
    col_programs,
    # constexpr
    DRAFT: tl.constexpr,
    LOG2_PAGE_SIZE: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):
    req = tl.program_id(0)
    col_program = tl.program_id(1)
    src_row = req_to_token_ptr + tl.load(pool_ptr + req).to(tl.int64) * req_to_token_stride
    first_row = req * DRAFT  # int32: a tensor descriptor's coordinates
    n_blocks = tl.cdiv(length, BLOCK_COLS)
    run = tl.cdiv(n_blocks, col_programs)
    for block in range(col_program * run, tl.minimum((col_program + 1) * run, n_blocks)):
        cols = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        tokens = tl.load(src_row + cols, mask=cols < length)
        page_table_desc.store([first_row, block * BLOCK_COLS], tl.broadcast_to(tokens[None, :], (DRAFT, BLOCK_COLS)))
        if LOG2_PAGE_SIZE > 0:
            _copy_page_ids(src_row, real_page_table_ptr, first_row, block, length, real_page_table_stride,
                           DRAFT, LOG2_PAGE_SIZE, BLOCK_COLS)


def broadcast_rows_tma(
    *,
    pool: torch.Tensor,
    req_to_token: torch.Tensor,
    page_table: torch.Tensor,
    real_page_table: torch.Tensor,
    length: int,
    draft: int,
    page_size: int,
    col_programs: int,
) -> None:
    """As broadcast_rows, the page table written by bulk tensor stores (Hopper); `col_programs` runs a request."""
    rows = pool.shape[0] * draft
    desc = TensorDescriptor(page_table, shape=[rows, length], strides=[page_table.stride(0), 1],
                            block_shape=[draft, TMA_BLOCK_COLS])
    _broadcast_rows_tma_kernel[(pool.shape[0], col_programs)](
        pool, req_to_token, desc, real_page_table,
        length, req_to_token.stride(0), real_page_table.stride(0), col_programs,
        DRAFT=draft, LOG2_PAGE_SIZE=page_size.bit_length() - 1, BLOCK_COLS=TMA_BLOCK_COLS, num_warps=4,
    )
