"""Target-verify metadata for NSA CUDA-graph replays in one Triton launch.

For a batch of `bs` requests verifying D draft tokens each, writes (int32):
  cache_seqlens[i]             = seq_lens[i] + D
  cu_seqlens_k[1 + i]          = cumsum(cache_seqlens)[i]
  seqlens_expanded[i*D + j]    = seq_lens[i] + 1 + j                 (j < D)
  nsa_cache_seqlens[i*D + j]   = min(seqlens_expanded[i*D + j], topk)
  nsa_cu_seqlens_k[1 + i*D + j] = cumsum(nsa_cache_seqlens)[i*D + j]
Index 0 of both cu_seqlens buffers is never written (it stays 0, as upstream leaves it).
One program scans the whole batch, so bs is limited to MAX_BS.
"""

import torch
import triton
import triton.language as tl

MAX_DRAFT_TOKENS = 8
MAX_BS = 1024


@triton.jit
def _target_verify_lengths_kernel(
    seq_lens_ptr,
    cache_seqlens_ptr,
    cu_seqlens_k_ptr,
    seqlens_expanded_ptr,
    nsa_cache_seqlens_ptr,
    nsa_cu_seqlens_k_ptr,
    bs,
    topk,
    DRAFT: tl.constexpr,
    BLOCK_BS: tl.constexpr,
    BLOCK_DRAFT: tl.constexpr,
):
    req = tl.arange(0, BLOCK_BS)
    live = req < bs
    seq = tl.load(seq_lens_ptr + req, mask=live, other=0).to(tl.int32)
    kv = seq + DRAFT
    tl.store(cache_seqlens_ptr + req, kv, mask=live)
    tl.store(cu_seqlens_k_ptr + 1 + req, tl.cumsum(kv, 0), mask=live)

    tok = tl.arange(0, BLOCK_DRAFT)
    live_tok = live[:, None] & (tok < DRAFT)[None, :]
    expanded = seq[:, None] + 1 + tok[None, :]
    clamped = tl.where(live_tok, tl.minimum(expanded, topk), 0)
    # Flattened row-major cumsum: prefix within the row plus the totals of the rows before it.
    row_total = tl.sum(clamped, 1)
    cum = tl.cumsum(clamped, 1) + (tl.cumsum(row_total, 0) - row_total)[:, None]
    flat = req[:, None] * DRAFT + tok[None, :]
    tl.store(seqlens_expanded_ptr + flat, expanded, mask=live_tok)
    tl.store(nsa_cache_seqlens_ptr + flat, clamped, mask=live_tok)
    tl.store(nsa_cu_seqlens_k_ptr + 1 + flat, cum, mask=live_tok)


def _check_int32_buffer(name: str, t: torch.Tensor, numel: int, device: torch.device) -> None:
    if t.dtype != torch.int32 or t.device != device or not t.is_contiguous() or t.numel() < numel:
        raise ValueError(
            f"{name} must be a contiguous int32 tensor of at least {numel} elements on {device}, "
            f"got {t.dtype} {tuple(t.shape)} on {t.device}"
        )


def check_lengths_inputs(seq_lens: torch.Tensor, num_draft_tokens: int) -> None:
    if not 1 <= num_draft_tokens <= MAX_DRAFT_TOKENS:
        raise ValueError(
            f"num_draft_tokens must be in [1, {MAX_DRAFT_TOKENS}], got {num_draft_tokens}: "
            "use the unfused replay for longer drafts"
        )
    if seq_lens.dtype not in (torch.int32, torch.int64) or seq_lens.dim() != 1:
        raise ValueError(f"seq_lens must be a 1-D int32 or int64 tensor, got {seq_lens.dtype} {tuple(seq_lens.shape)}")
    if not 1 <= seq_lens.shape[0] <= MAX_BS:
        raise ValueError(
            f"bs={seq_lens.shape[0]} is outside [1, {MAX_BS}], what one program scans: "
            "capture smaller batch sizes or raise MAX_BS"
        )
    if not seq_lens.is_contiguous():
        raise ValueError("seq_lens must be contiguous")


def fill_target_verify_lengths(
    seq_lens: torch.Tensor,
    num_draft_tokens: int,
    topk: int,
    *,
    cache_seqlens: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    seqlens_expanded: torch.Tensor,
    nsa_cache_seqlens: torch.Tensor,
    nsa_cu_seqlens_k: torch.Tensor,
) -> None:
    """Write the five length buffers for a target-verify replay of `seq_lens.shape[0]` requests."""
    check_lengths_inputs(seq_lens, num_draft_tokens)
    bs, device = seq_lens.shape[0], seq_lens.device
    tokens = bs * num_draft_tokens
    for name, buf, numel in (
        ("cache_seqlens", cache_seqlens, bs),
        ("cu_seqlens_k", cu_seqlens_k, bs + 1),
        ("seqlens_expanded", seqlens_expanded, tokens),
        ("nsa_cache_seqlens", nsa_cache_seqlens, tokens),
        ("nsa_cu_seqlens_k", nsa_cu_seqlens_k, tokens + 1),
    ):
        _check_int32_buffer(name, buf, numel, device)
    _target_verify_lengths_kernel[(1,)](
        seq_lens,
        cache_seqlens,
        cu_seqlens_k,
        seqlens_expanded,
        nsa_cache_seqlens,
        nsa_cu_seqlens_k,
        bs,
        topk,
        DRAFT=num_draft_tokens,
        BLOCK_BS=triton.next_power_of_2(bs),
        BLOCK_DRAFT=triton.next_power_of_2(num_draft_tokens),
    )
