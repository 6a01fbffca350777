"""Experiments (2026-11-25): why is the fused kernel 3x the memory floor at long rows?

1. Prediction: program (0, 0)'s 2-D length scan inflates the register count. Refuted: a copy of the
   page-table body alone runs exactly as fast (H100, bs 128, D=4, 64k: 178 vs 178 us; 26-30 regs).
2. Prediction: `do_not_specialize=["max_seqlen_k"]` leaves the `cols < max_seqlen_k` mask with unknown
   alignment, so loads/stores are not vectorized; specializing (max_seqlen_k % 16 == 0) or masking the
   body at max_seqlen_k rounded down to 16 (tail apart) should approach the floor. Confirmed: 176 us
   unaligned, 65 us specialized-and-divisible, 62-65 us aligned body whatever the value (floor 57 us),
   with identical bytes written. The repeat-audit kernel (and every stage after it) uses the aligned body.
Run on a GPU after `python -m harness build`: NSA_USE_BUILD=1 python3 -m notebook.fused_occupancy
(the fused column is now the final stage's launch, as its replay issues it, at other block sizes).
"""

from harness.env import triton_device

triton_device()  # before triton is imported

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from bench.inputs import Config, prepared_runner  # noqa: E402
from bench.timing import captured_launch, copy_bandwidth, kernel_us  # noqa: E402
from harness import stages  # noqa: E402


@triton.jit
def _rows_of_request(req_pool_indices_ptr, req_to_token_ptr, page_table_ptr, REQ_TO_TOKEN_STRIDE, PAGE_TABLE_STRIDE,
                     DRAFT):
    """Program (i, b)'s source row of req_to_token, and the first of request i's D page_table_1 rows."""
    req = tl.program_id(0)
    src_row = req_to_token_ptr + tl.load(req_pool_indices_ptr + req).to(tl.int64) * REQ_TO_TOKEN_STRIDE
    return src_row, page_table_ptr + req.to(tl.int64) * DRAFT * PAGE_TABLE_STRIDE


def _rows(req_pool_indices_ptr, req_to_token_ptr, page_table_ptr, max_seqlen_k,
          REQ_TO_TOKEN_STRIDE: tl.constexpr, PAGE_TABLE_STRIDE: tl.constexpr, DRAFT: tl.constexpr,
          BLOCK_COLS: tl.constexpr):
    src_row, dst = _rows_of_request(req_pool_indices_ptr, req_to_token_ptr, page_table_ptr, REQ_TO_TOKEN_STRIDE,
                                    PAGE_TABLE_STRIDE, DRAFT)
    cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    live = cols < max_seqlen_k
    tokens = tl.load(src_row + cols, mask=live)
    for d in tl.static_range(DRAFT):
        tl.store(dst + d * PAGE_TABLE_STRIDE + cols, tokens, mask=live)


_rows_only = triton.jit(do_not_specialize=["max_seqlen_k"])(_rows)
# the same body with max_seqlen_k specialized (65536 is divisible by 16): the vectorized ceiling
_rows_specialized = triton.jit(_rows)


@triton.jit(do_not_specialize=["max_seqlen_k"])
def _rows_aligned_body(req_pool_indices_ptr, req_to_token_ptr, page_table_ptr, max_seqlen_k,
                       REQ_TO_TOKEN_STRIDE: tl.constexpr, PAGE_TABLE_STRIDE: tl.constexpr, DRAFT: tl.constexpr,
                       BLOCK_COLS: tl.constexpr):
    # body masked at max_seqlen_k rounded down to 16 (provably aligned), the <= 15-column tail apart
    src_row, dst = _rows_of_request(req_pool_indices_ptr, req_to_token_ptr, page_table_ptr, REQ_TO_TOKEN_STRIDE,
                                    PAGE_TABLE_STRIDE, DRAFT)
    block = tl.program_id(1)
    body_end = (max_seqlen_k // 16) * 16
    cols = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    body = cols < body_end
    tokens = tl.load(src_row + cols, mask=body)
    for d in tl.static_range(DRAFT):
        tl.store(dst + d * PAGE_TABLE_STRIDE + cols, tokens, mask=body)
    if block == body_end // BLOCK_COLS:
        tail = body_end + tl.arange(0, 16)
        tail_live = tail < max_seqlen_k
        tail_tokens = tl.load(src_row + tail, mask=tail_live)
        for d in tl.static_range(DRAFT):
            tl.store(dst + d * PAGE_TABLE_STRIDE + tail, tail_tokens, mask=tail_live)


def main():
    module = stages.load(stages.final())
    bandwidth = copy_bandwidth()
    for bs in (128, 256):
        config = Config(bs, 4, 1, 65536, context_len=65600, spread=False)
        draft, maxlen = config.D, config.maxlen
        runner = prepared_runner(module, config, "cuda")
        jit, args, kwargs = captured_launch(lambda: runner.replay_metadata(bs))
        req_to_token = runner.backend.req_to_token
        md = runner.backend.decode_cuda_graph_metadata[bs]
        pool = runner.req_pool_indices[:bs]
        print(f"bs={bs} D=4 ps=1 64k: floor {config.floor_us(bandwidth):.1f} us", flush=True)
        for block, warps in ((1024, 4), (1024, 8), (4096, 8), (8192, 8)):
            grid = (bs, triton.cdiv(maxlen, block))
            fused = dict(kwargs, BLOCK_COLS=block, num_warps=warps)  # at the launch's own grid
            compiled = jit.run(*args, **fused)
            cells = [f"fused {kernel_us(lambda: jit.run(*args, **fused)):6.1f} ({compiled.n_regs} regs)"]
            for name, kern in (("rows", _rows_only), ("specialized", _rows_specialized), ("aligned body", _rows_aligned_body)):
                for k in (maxlen, maxlen - 3):  # divisible by 16, and not
                    call = lambda kern=kern, k=k: kern[grid](pool, req_to_token, md.page_table_1, k,  # noqa: E731
                                                             REQ_TO_TOKEN_STRIDE=req_to_token.stride(0),
                                                             PAGE_TABLE_STRIDE=md.page_table_1.stride(0), DRAFT=draft,
                                                             BLOCK_COLS=block, num_warps=warps)
                    call()
                    cells.append(f"{name}@{k}: {kernel_us(call):6.1f}")
            print(f"  {block}/{warps}: " + " | ".join(cells), flush=True)
        # the aligned body writes exactly what the fused kernel writes
        for k in (maxlen - 3, maxlen - 16, 17, 5):
            md.page_table_1.fill_(-7)
            _rows_only[(bs, triton.cdiv(k, 1024))](pool, req_to_token, md.page_table_1, k, REQ_TO_TOKEN_STRIDE=req_to_token.stride(0),
                                                   PAGE_TABLE_STRIDE=md.page_table_1.stride(0), DRAFT=draft, BLOCK_COLS=1024)
            want = md.page_table_1.clone()
            md.page_table_1.fill_(-7)
            _rows_aligned_body[(bs, triton.cdiv(k, 1024))](pool, req_to_token, md.page_table_1, k, REQ_TO_TOKEN_STRIDE=req_to_token.stride(0),
                                                           PAGE_TABLE_STRIDE=md.page_table_1.stride(0), DRAFT=draft, BLOCK_COLS=1024)
            print(f"  aligned body == masked body at max_seqlen_k={k}: {torch.equal(want, md.page_table_1)}", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
