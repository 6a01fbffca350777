"""Experiments (2026-11-25): why is the fused kernel 3x the memory floor at long rows?

1. Prediction: program (0, 0)'s 2-D length scan inflates the register count. Refuted: a copy of the
   page-table body alone runs exactly as fast (H100, bs 128, D=4, 64k: 178 vs 178 us; 26-30 regs).
2. Prediction: `do_not_specialize=["max_seqlen_k"]` leaves the `cols < max_seqlen_k` mask with unknown
   alignment, so loads/stores are not vectorized; specializing (max_seqlen_k % 16 == 0) or masking the
   body at max_seqlen_k rounded down to 16 (tail apart) should approach the floor. Confirmed: 176 us
   unaligned, 65 us specialized-and-divisible, 62-65 us aligned body whatever the value (floor 57 us),
   with identical bytes written. The repeat-audit kernel now uses the aligned body.
Run on a GPU after `python -m harness build`: python3 -m bench.experiments.fused_occupancy
"""

import importlib

import torch
import triton
import triton.language as tl
import triton.testing

from harness.loader import load_built
from harness.runner import Batch
from harness.scenarios import Scenario


@triton.jit(do_not_specialize=["max_seqlen_k"])
def _rows_only(req_pool_indices_ptr, req_to_token_ptr, page_table_ptr, max_seqlen_k,
               REQ_TO_TOKEN_STRIDE: tl.constexpr, PAGE_TABLE_STRIDE: tl.constexpr, DRAFT: tl.constexpr,
               BLOCK_COLS: tl.constexpr):
    req = tl.program_id(0)
    block = tl.program_id(1)
    src_row = req_to_token_ptr + tl.load(req_pool_indices_ptr + req).to(tl.int64) * REQ_TO_TOKEN_STRIDE
    first_row = req.to(tl.int64) * DRAFT
    cols = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    live = cols < max_seqlen_k
    tokens = tl.load(src_row + cols, mask=live)
    for d in tl.static_range(DRAFT):
        tl.store(page_table_ptr + (first_row + d) * PAGE_TABLE_STRIDE + cols, tokens, mask=live)


@triton.jit
def _rows_specialized(req_pool_indices_ptr, req_to_token_ptr, page_table_ptr, max_seqlen_k,
                      REQ_TO_TOKEN_STRIDE: tl.constexpr, PAGE_TABLE_STRIDE: tl.constexpr, DRAFT: tl.constexpr,
                      BLOCK_COLS: tl.constexpr):
    # same body; max_seqlen_k specialized (65536 is divisible by 16): the vectorized ceiling
    req = tl.program_id(0)
    block = tl.program_id(1)
    src_row = req_to_token_ptr + tl.load(req_pool_indices_ptr + req).to(tl.int64) * REQ_TO_TOKEN_STRIDE
    first_row = req.to(tl.int64) * DRAFT
    cols = block * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    live = cols < max_seqlen_k
    tokens = tl.load(src_row + cols, mask=live)
    for d in tl.static_range(DRAFT):
        tl.store(page_table_ptr + (first_row + d) * PAGE_TABLE_STRIDE + cols, tokens, mask=live)


@triton.jit(do_not_specialize=["max_seqlen_k"])
def _rows_aligned_body(req_pool_indices_ptr, req_to_token_ptr, page_table_ptr, max_seqlen_k,
                       REQ_TO_TOKEN_STRIDE: tl.constexpr, PAGE_TABLE_STRIDE: tl.constexpr, DRAFT: tl.constexpr,
                       BLOCK_COLS: tl.constexpr):
    # body masked at max_seqlen_k rounded down to 16 (provably aligned), the <= 15-column tail apart
    req = tl.program_id(0)
    block = tl.program_id(1)
    src_row = req_to_token_ptr + tl.load(req_pool_indices_ptr + req).to(tl.int64) * REQ_TO_TOKEN_STRIDE
    dst = page_table_ptr + req.to(tl.int64) * DRAFT * PAGE_TABLE_STRIDE
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
    module = load_built()["repeat-audit"]
    kernel_mod = importlib.import_module(module.__package__ + ".nsa.target_verify_metadata")
    jit = kernel_mod._target_verify_metadata_kernel
    bandwidth = None
    src = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    bandwidth = 2 * src.numel() / (triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median") * 1e-3)
    for bs in (128, 256):
        draft, maxlen, ps = 4, 65536, 1
        sc = Scenario(num_draft_tokens=draft, page_size=ps, index_topk=2048, context_len=65600, capture_bs=(bs,), pool_size=bs + 8)
        runner = sc.runner(module, "cuda")
        batch = Batch(torch.arange(bs, dtype=torch.int32, device="cuda"), torch.full((bs,), maxlen - draft, dtype=torch.int32, device="cuda"))
        runner.replay(batch)
        launch_obj = runner.backend.target_verify_launches[bs]
        req_to_token, *outputs = launch_obj.buffers
        md = runner.backend.decode_cuda_graph_metadata[bs]
        pool = runner.req_pool_indices[:bs]
        floor = 4 * (bs * maxlen + bs * draft * maxlen) / bandwidth * 1e6
        print(f"bs={bs} D=4 ps=1 64k: floor {floor:.1f} us", flush=True)
        for block, warps in ((1024, 4), (1024, 8), (4096, 8), (8192, 8)):
            grid = (bs, triton.cdiv(maxlen, block))
            consts = dict(launch_obj.constants, BLOCK_COLS=block, num_warps=warps)
            fused = lambda: jit[grid](runner.seq_lens[:bs], pool, req_to_token, *outputs, maxlen, **consts)  # noqa: E731
            compiled = fused()
            cells = [f"fused {triton.testing.do_bench(fused, return_mode='median') * 1e3:6.1f} ({compiled.n_regs} regs)"]
            for name, kern in (("rows", _rows_only), ("specialized", _rows_specialized), ("aligned body", _rows_aligned_body)):
                for k in (maxlen, maxlen - 3):  # divisible by 16, and not
                    call = lambda kern=kern, k=k: kern[grid](pool, req_to_token, md.page_table_1, k,  # noqa: E731
                                                             REQ_TO_TOKEN_STRIDE=req_to_token.stride(0),
                                                             PAGE_TABLE_STRIDE=md.page_table_1.stride(0), DRAFT=draft,
                                                             BLOCK_COLS=block, num_warps=warps)
                    call()
                    cells.append(f"{name}@{k}: {triton.testing.do_bench(call, return_mode='median') * 1e3:6.1f}")
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
