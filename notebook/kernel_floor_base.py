"""NSA CUDA-graph replay metadata in one Triton launch per replay, needing no host value.

One kernel family serves the replay modes. Request i of a batch of `bs` owns q_i query rows,
which start at the exclusive prefix sum of q (found on the device):
  target verify: q_i = D                  cache_seqlens[i] = seq_lens[i] + D
  draft extend:  q_i = accept_length[i]   cache_seqlens[i] = seq_lens[i]
  decode:        q_i = 1                  cache_seqlens[i] = seq_lens[i]
and every mode writes (int32), with row r = sum(q[:i]) + j for j < q_i, and
max_seqlen_k = min(max(cache_seqlens), page table width):
  cache_seqlens[i]           as above
  cu_seqlens_k[1 + i]        = cumsum(cache_seqlens)[i]
  seqlens_expanded[r]        = cache_seqlens[i] - q_i + 1 + j
  nsa_cache_seqlens[r]       = min(seqlens_expanded[r], topk)
  nsa_cu_seqlens_k[1 + r]    = cumsum(nsa_cache_seqlens)[r]
  page_table_1[r, c]         = req_to_token[req_pool_indices[i], c]                 (c < max_seqlen_k)
  real_page_table[r, p]      = floor(req_to_token[req_pool_indices[i], p*ps] / ps)  (p*ps < max_seqlen_k)
Decode captures seqlens_expanded as cache_seqlens itself (one buffer, written once).
Nothing else is touched: index 0 of both cu_seqlens buffers, the rows past sum(q) (draft extend
writes only the sum(accept_length) rows its batch has) and the columns past max_seqlen_k keep what
earlier replays left, exactly as the unfused replay leaves them. The width clamp keeps a length
past the context (which the graph runner never sends) inside the table, where the unfused replay
fails on the copy's shape mismatch instead.

The grid is static, (bs, col_programs), fixed at capture: program (i, p) copies run p of the
col_programs contiguous runs of column blocks of request i's row, once, into its q_i rows, so one
launch is valid for every replay at that bs and can be recorded into a CUDA graph. col_programs is
sized so that the whole grid is a few programs per multiprocessor: a short batch in a wide buffer
does not pay for thousands of programs that find nothing to do. Program (0, 0) also computes the
length buffers, scanning the whole batch in chunks (any bs and D). bs and col_programs are runtime
arguments the kernel is not specialized on, so one compiled kernel per mode serves every captured
bs.
A negative pool index counts from the end, as torch indexing does; a row outside req_to_token is
never read (eager CPU callers get baseline's IndexError). accept_length is clamped to [0, D] on
the device, so no value makes the launch write past the bs * D captured rows; the graph runner
guarantees [1, min(D, seq_len)], and eager CPU callers outside it are refused before any write.
"""

import torch
import triton
import triton.language as tl

# Elements of one length-scan chunk (BLOCK_BS requests x BLOCK_DRAFT tokens); any bs is scanned.
# Small, since one kernel serves every bs: larger tiles would raise the registers of every
# program, and so lower the occupancy of the row copy.
SCAN_CHUNK_TOKENS = 512
BLOCK_COLS = 1024  # a power of two >= 16, and a multiple of every supported page size
_INDEX_DTYPES = (torch.int32, torch.int64)
TARGET_VERIFY, DRAFT_EXTEND, DECODE = "target_verify", "draft_extend", "decode"
MODES = (TARGET_VERIFY, DRAFT_EXTEND, DECODE)


@triton.jit
def _query_rows(
    accept_length_ptr, req, live, DRAFT: tl.constexpr, ACCEPTED: tl.constexpr
):
    """q of requests `req` (0 where not `live`): accept_length clamped to [0, D], or D itself."""
    if ACCEPTED:
        q = tl.load(accept_length_ptr + req, mask=live, other=0).to(tl.int32)
        q = tl.minimum(tl.maximum(q, 0), DRAFT)
    else:
        q = tl.where(live, DRAFT, 0)
    return q


@triton.jit
def _kv_lengths_and_cumsums(
    seq_lens_ptr,
    accept_length_ptr,
    cache_seqlens_ptr,
    cu_seqlens_k_ptr,
    seqlens_expanded_ptr,
    nsa_cache_seqlens_ptr,
    nsa_cu_seqlens_k_ptr,
    bs,
    TOPK: tl.constexpr,
    DRAFT: tl.constexpr,
    KV_EXTRA: tl.constexpr,
    ACCEPTED: tl.constexpr,
    EXPANDED_IS_CACHE: tl.constexpr,
    BLOCK_BS: tl.constexpr,
    BLOCK_DRAFT: tl.constexpr,
):
    # BLOCK_BS requests at a time; each chunk's cumsums start from the totals before it.
    tok = tl.arange(0, BLOCK_DRAFT)
    kv_before = 0
    nsa_before = 0
    rows_before = 0
    for first_req in range(0, bs, BLOCK_BS):
        req = first_req + tl.arange(0, BLOCK_BS)
        live = req < bs
        seq = tl.load(seq_lens_ptr + req, mask=live, other=0).to(tl.int32)
        q = _query_rows(accept_length_ptr, req, live, DRAFT, ACCEPTED)
        kv = tl.where(live, seq + KV_EXTRA, 0)
        tl.store(cache_seqlens_ptr + req, kv, mask=live)
        tl.store(cu_seqlens_k_ptr + 1 + req, kv_before + tl.cumsum(kv, 0), mask=live)

        live_tok = tok[None, :] < q[:, None]
        expanded = kv[:, None] - q[:, None] + 1 + tok[None, :]
        clamped = tl.where(live_tok, tl.minimum(expanded, TOPK), 0)
        # Flattened row-major cumsum: prefix within the request plus the totals before it.
        req_total = tl.sum(clamped, 1)
        req_before = nsa_before + tl.cumsum(req_total, 0) - req_total
        cum = tl.cumsum(clamped, 1) + req_before[:, None]
        row = rows_before + tl.cumsum(q, 0) - q
        flat = row[:, None] + tok[None, :]
        if not EXPANDED_IS_CACHE:
            tl.store(seqlens_expanded_ptr + flat, expanded, mask=live_tok)
        tl.store(nsa_cache_seqlens_ptr + flat, clamped, mask=live_tok)
        tl.store(nsa_cu_seqlens_k_ptr + 1 + flat, cum, mask=live_tok)
        kv_before += tl.sum(kv, 0)
        nsa_before += tl.sum(req_total, 0)
        rows_before += tl.sum(q, 0)


@triton.jit(do_not_specialize=["bs", "col_programs"])
def _cuda_graph_metadata_kernel(
    # inputs
    seq_lens_ptr,  # [bs] int32/int64
    req_pool_indices_ptr,  # [bs] int32/int64
    accept_length_ptr,  # [bs] int32/int64, read in draft extend only
    req_to_token_ptr,  # [REQ_TO_TOKEN_ROWS, >= WIDTH] int32
    # outputs (int32)
    cache_seqlens_ptr,  # [bs]
    cu_seqlens_k_ptr,  # [bs + 1]
    seqlens_expanded_ptr,  # [bs * DRAFT] (decode: cache_seqlens itself)
    nsa_cache_seqlens_ptr,  # [bs * DRAFT]
    nsa_cu_seqlens_k_ptr,  # [bs * DRAFT + 1]
    page_table_ptr,  # [bs * DRAFT, WIDTH]
    real_page_table_ptr,  # [bs * DRAFT, cdiv(WIDTH, page size)]
    # scalars, not specialized: every captured bs shares one compiled kernel
    bs,
    col_programs,
    # constants of the captured buffers
    REQ_TO_TOKEN_ROWS: tl.constexpr,
    REQ_TO_TOKEN_STRIDE: tl.constexpr,
    PAGE_TABLE_STRIDE: tl.constexpr,
    REAL_PAGE_TABLE_STRIDE: tl.constexpr,
    WIDTH: tl.constexpr,
    TOPK: tl.constexpr,
    # the mode: rows per request (at most), extra cache length, rows from accept_length
    DRAFT: tl.constexpr,
    KV_EXTRA: tl.constexpr,
    ACCEPTED: tl.constexpr,
    EXPANDED_IS_CACHE: tl.constexpr,
    # block shapes
    BLOCK_BS: tl.constexpr,
    BLOCK_DRAFT: tl.constexpr,
    LOG2_PAGE_SIZE: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):
    req = tl.program_id(0)
    col_program = tl.program_id(1)
    if (req == 0) & (col_program == 0):
        _kv_lengths_and_cumsums(
            seq_lens_ptr,
            accept_length_ptr,
            cache_seqlens_ptr,
            cu_seqlens_k_ptr,
            seqlens_expanded_ptr,
            nsa_cache_seqlens_ptr,
            nsa_cu_seqlens_k_ptr,
            bs,
            TOPK,
            DRAFT,
            KV_EXTRA,
            ACCEPTED,
            EXPANDED_IS_CACHE,
            BLOCK_BS,
            BLOCK_DRAFT,
        )
    longest = 0
    rows_before = 0
    for first_req in range(0, bs, BLOCK_BS):
        some_req = first_req + tl.arange(0, BLOCK_BS)
        seq = tl.load(seq_lens_ptr + some_req, mask=some_req < bs, other=0)
        longest = tl.maximum(longest, tl.max(seq, 0).to(tl.int32))
        if ACCEPTED:  # this request's first row: the rows of the requests before it
            before = some_req < req
            rows_before += tl.sum(
                _query_rows(accept_length_ptr, some_req, before, DRAFT, ACCEPTED), 0
            )
    max_seqlen_k = tl.minimum(longest + KV_EXTRA, WIDTH)
    if ACCEPTED:
        first_row = rows_before.to(tl.int64)
        rows = tl.load(accept_length_ptr + req).to(tl.int32)
        rows = tl.minimum(tl.maximum(rows, 0), DRAFT)
    else:
        first_row = req.to(tl.int64) * DRAFT
        rows = DRAFT

    # A negative pool index counts from the end, as torch indexing does. A row outside
    # req_to_token is never read: nothing is copied for it (max_seqlen_k 0).
    pool_row = tl.load(req_pool_indices_ptr + req).to(tl.int64)
    pool_row = tl.where(pool_row < 0, pool_row + REQ_TO_TOKEN_ROWS, pool_row)
    in_range = (pool_row >= 0) & (pool_row < REQ_TO_TOKEN_ROWS)
    max_seqlen_k = tl.where(in_range, max_seqlen_k, 0)
    src_row = req_to_token_ptr + pool_row * REQ_TO_TOKEN_STRIDE
    dst_rows = page_table_ptr + first_row * PAGE_TABLE_STRIDE
    # The body is masked at max_seqlen_k rounded down to 16, which the compiler can prove aligned, so
    # loads and stores stay 16 bytes wide; the <= 15 columns left go in their own masked store.
    body_end = (max_seqlen_k // 16) * 16
    # Program p copies run p of the col_programs contiguous runs of the row's column blocks, so
    # the grid works on columns spread over the row. (Walking blocks p, p + col_programs, ...
    # kept every program near the same column; where the rows are a multiple of 640 KiB apart,
    # as at 163840 columns, that column of every row sits on the same few memory channels.)
    n_blocks = tl.cdiv(max_seqlen_k, BLOCK_COLS)
    run = tl.cdiv(n_blocks, col_programs)
    run_end = tl.minimum((col_program + 1) * run, n_blocks)
    for block in range(col_program * run, run_end):
        cols = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        body = cols < body_end
        tokens = tl.load(src_row + cols, mask=body)
        for d in tl.static_range(DRAFT):
            # Row d of this request exists when d < rows: past them, nothing is stored.
            row_body_end = tl.where(rows > d, body_end, 0)
            tl.store(
                dst_rows + d * PAGE_TABLE_STRIDE + cols,
                tokens,
                mask=cols < row_body_end,
            )
        if block == body_end // BLOCK_COLS:
            tail = body_end + tl.arange(0, 16)
            in_tail = tail < max_seqlen_k
            tail_tokens = tl.load(src_row + tail, mask=in_tail)
            for d in tl.static_range(DRAFT):
                tl.store(
                    dst_rows + d * PAGE_TABLE_STRIDE + tail,
                    tail_tokens,
                    mask=tail < tl.where(rows > d, max_seqlen_k, 0),
                )

        if LOG2_PAGE_SIZE > 0:
            PAGES: tl.constexpr = BLOCK_COLS >> LOG2_PAGE_SIZE
            pages = block * PAGES + tl.arange(0, PAGES)
            first_cols = pages << LOG2_PAGE_SIZE
            live_pages = first_cols < max_seqlen_k
            # Arithmetic shift is floor division for a power-of-two page size, negatives included.
            page_ids = tl.load(src_row + first_cols, mask=live_pages) >> LOG2_PAGE_SIZE
            for d in tl.static_range(DRAFT):
                tl.store(
                    real_page_table_ptr
                    + (first_row + d) * REAL_PAGE_TABLE_STRIDE
                    + pages,
                    page_ids,
                    mask=first_cols < tl.where(rows > d, max_seqlen_k, 0),
                )


def _check_int32_buffer(
    name: str, t: torch.Tensor, shape: tuple[int, ...], device: torch.device
) -> None:
    fits = t.dim() == len(shape) and all(
        have >= need for have, need in zip(t.shape, shape)
    )
    if t.dtype != torch.int32 or t.device != device or not fits or t.stride(-1) != 1:
        raise ValueError(
            f"{name} must be an int32 tensor on {device} with unit last stride and shape at least {shape}, "
            f"got {t.dtype} {tuple(t.shape)} stride {t.stride()} on {t.device}"
        )


def _col_programs(width: int, bs: int, device: torch.device) -> int:
    """Column programs per request: about four programs per multiprocessor over the whole grid."""
    sms = (
        torch.cuda.get_device_properties(device).multi_processor_count
        if device.type == "cuda"
        else 128
    )
    return max(1, min(triton.cdiv(width, BLOCK_COLS), triton.cdiv(4 * sms, bs)))


def _is_capturing(device: torch.device) -> bool:
    """Whether launches on `device` are being recorded into a CUDA graph (never, off CUDA)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


class CudaGraphMetadataLaunch:
    """Every replay buffer of one captured NSAMetadata, written by one static-grid launch.

    Built at capture with the graph runner's static inputs (`seq_lens`, `req_pool_indices` and,
    for draft extend, `accept_length`: the [:bs] views the capture receives). `record()` launches
    on those, for a CUDA graph to capture; calling the object launches on the inputs given (an
    eager replay).
    """

    def __init__(
        self,
        metadata,
        req_to_token: torch.Tensor,
        num_draft_tokens: int,
        topk: int,
        seq_lens: torch.Tensor,
        req_pool_indices: torch.Tensor,
        *,
        mode: str = TARGET_VERIFY,
        accept_length: torch.Tensor | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if (accept_length is None) != (mode != DRAFT_EXTEND):
            raise ValueError("accept_length is given in draft extend, and only there")
        bs = metadata.cache_seqlens_int32.shape[0]
        page_size = metadata.page_size
        if mode != DECODE and num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens must be >= 1, got {num_draft_tokens}")
        if page_size < 1 or page_size & (page_size - 1) or page_size > BLOCK_COLS:
            raise ValueError(
                f"page_size must be a power of two <= {BLOCK_COLS}, got {page_size}"
            )
        if page_size == 1 and metadata.real_page_table is not metadata.page_table_1:
            raise ValueError(
                "with page_size 1, real_page_table must be page_table_1 (upstream aliases them)"
            )
        expanded_is_cache = (
            metadata.nsa_seqlens_expanded is metadata.cache_seqlens_int32
        )
        if (mode == DECODE) != expanded_is_cache:
            raise ValueError(
                "nsa_seqlens_expanded must be cache_seqlens_int32 in decode (upstream "
                "captures them as one buffer), and its own buffer otherwise"
            )
        self.bs, self.device, self.mode = bs, metadata.cache_seqlens_int32.device, mode
        self.draft = 1 if mode == DECODE else num_draft_tokens
        self.req_to_token_rows = req_to_token.shape[0]
        self.is_cpu, self.device_index = (
            self.device.type == "cpu",
            metadata.cache_seqlens_int32.get_device(),
        )
        tokens, width = bs * self.draft, metadata.page_table_1.shape[1]
        named = {
            "req_to_token": (req_to_token, (1, width)),
            "cache_seqlens_int32": (metadata.cache_seqlens_int32, (bs,)),
            "cu_seqlens_k": (metadata.cu_seqlens_k, (bs + 1,)),
            "nsa_seqlens_expanded": (metadata.nsa_seqlens_expanded, (tokens,)),
            "nsa_cache_seqlens_int32": (metadata.nsa_cache_seqlens_int32, (tokens,)),
            "nsa_cu_seqlens_k": (metadata.nsa_cu_seqlens_k, (tokens + 1,)),
            "page_table_1": (metadata.page_table_1, (tokens, width)),
            "real_page_table": (
                metadata.real_page_table,
                (tokens, triton.cdiv(width, page_size)),
            ),
        }
        for name, (buf, shape) in named.items():
            _check_int32_buffer(name, buf, shape, self.device)
        self.buffers = tuple(buf for buf, _ in named.values())
        self.check_inputs(seq_lens, req_pool_indices, accept_length, values=False)
        self.static_inputs = (seq_lens, req_pool_indices, accept_length)
        self.recorded = False
        col_programs = _col_programs(width, bs, self.device)
        self.grid = (bs, col_programs)
        block_draft = triton.next_power_of_2(self.draft)
        # Runtime arguments, not specialized: every captured bs shares one compiled kernel.
        self.scalars = (bs, col_programs)
        self.constants = dict(
            REQ_TO_TOKEN_ROWS=req_to_token.shape[0],
            REQ_TO_TOKEN_STRIDE=req_to_token.stride(0),
            PAGE_TABLE_STRIDE=metadata.page_table_1.stride(0),
            REAL_PAGE_TABLE_STRIDE=metadata.real_page_table.stride(0),
            WIDTH=width,
            TOPK=topk,
            DRAFT=self.draft,
            KV_EXTRA=num_draft_tokens if mode == TARGET_VERIFY else 0,
            ACCEPTED=mode == DRAFT_EXTEND,
            EXPANDED_IS_CACHE=expanded_is_cache,
            BLOCK_BS=SCAN_CHUNK_TOKENS // block_draft,
            BLOCK_DRAFT=block_draft,
            LOG2_PAGE_SIZE=page_size.bit_length() - 1,
            BLOCK_COLS=BLOCK_COLS,
            num_warps=4,
        )
        # Compile at capture (server start), not at a first replay in the middle of serving;
        # no constant above depends on bs, so only the first captured bs compiles. (The CPU
        # interpreter compiles nothing.)
        warmup = getattr(_cuda_graph_metadata_kernel, "warmup", None)
        if warmup is not None:
            warmup(
                *self._arguments(*self.static_inputs), grid=self.grid, **self.constants
            )

    def check_inputs(
        self,
        seq_lens: torch.Tensor,
        req_pool_indices: torch.Tensor,
        accept_length: torch.Tensor | None = None,
        *,
        values: bool = True,
    ) -> None:
        """Shapes, dtypes and devices; on CPU also the values (free there), if `values`.

        At capture the static inputs hold fill values (accept_length D over seq_lens 1), so
        their accept lengths are not checked then.
        """
        named = {"seq_lens": seq_lens, "req_pool_indices": req_pool_indices}
        if self.mode == DRAFT_EXTEND:
            if accept_length is None:
                raise ValueError("a draft-extend replay needs accept_length")
            named["accept_length"] = accept_length
        for name, t in named.items():
            if t.dtype not in _INDEX_DTYPES or t.dim() != 1 or t.shape[0] != self.bs:
                raise ValueError(
                    f"{name} must be int32 or int64 of shape ({self.bs},), got {t.dtype} {tuple(t.shape)}"
                )
            # Two cheap reads (get_device() is -1 off CUDA) instead of building torch.device objects.
            if (
                t.is_cpu != self.is_cpu
                or t.get_device() != self.device_index
                or not t.is_contiguous()
            ):
                raise ValueError(
                    f"{name} must be contiguous on {self.device}, got {t.device}"
                )
        if (
            not self.is_cpu
        ):  # on CUDA these checks would cost a device sync every replay
            return
        rows = self.req_to_token_rows
        for i, row in enumerate(req_pool_indices.tolist()):
            if not -rows <= row < rows:
                raise IndexError(
                    f"req_pool_indices[{i}] = {row} is out of bounds for "
                    f"req_to_token with {rows} rows"
                )
        if values and self.mode == DRAFT_EXTEND:
            pairs = zip(accept_length.tolist(), seq_lens.tolist())
            for i, (accepted, seq_len) in enumerate(pairs):
                if not 1 <= accepted <= min(self.draft, seq_len):
                    raise ValueError(
                        f"accept_length[{i}] = {accepted} is outside [1, min(D={self.draft}, "
                        f"seq_len={seq_len})]"
                    )

    def _arguments(self, seq_lens, req_pool_indices, accept_length) -> tuple:
        req_to_token, *outputs = self.buffers
        # Modes without accept lengths never read the pointer: any int tensor will do.
        accepted = seq_lens if accept_length is None else accept_length
        return (
            seq_lens,
            req_pool_indices,
            accepted,
            req_to_token,
            *outputs,
            *self.scalars,
        )

    def _launch(self, seq_lens, req_pool_indices, accept_length) -> None:
        _cuda_graph_metadata_kernel[self.grid](
            *self._arguments(seq_lens, req_pool_indices, accept_length),
            **self.constants,
        )

    def __call__(
        self,
        seq_lens: torch.Tensor,
        req_pool_indices: torch.Tensor,
        accept_length: torch.Tensor | None = None,
    ) -> None:
        self.check_inputs(seq_lens, req_pool_indices, accept_length)
        self._launch(seq_lens, req_pool_indices, accept_length)

    def record(self) -> None:
        """Launch on the static inputs bound at capture, as a graph runner's run_once does.

        Inside a torch.cuda.graph capture the launch is recorded and `recorded` is set: replays
        of this bs then launch nothing. Outside one (the runner's eager warm-up runs, or any CPU
        run) it is an eager launch on the static inputs that marks nothing, so the replays go
        on launching.
        """
        self._launch(*self.static_inputs)
        if _is_capturing(self.device):
            self.recorded = True
