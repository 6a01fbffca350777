"""Stand-ins for the sglang objects nsa_backend.py touches, so the stub runs without sglang.

Each keeps upstream's names (sglang 0.5.6) and only the behaviour the CUDA-graph metadata path
reads. Kept out of nsa_backend.py so that file shows upstream's shape alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, auto
from types import SimpleNamespace
from typing import Optional

import torch


class ForwardMode(IntEnum):
    """sglang.srt.model_executor.forward_batch_info.ForwardMode: members in upstream's order."""

    EXTEND = auto()
    DECODE = auto()
    MIXED = auto()
    IDLE = auto()
    TARGET_VERIFY = auto()
    DRAFT_EXTEND = auto()
    DRAFT_EXTEND_V2 = auto()
    PREBUILT = auto()
    SPLIT_PREFILL = auto()

    def is_decode(self):
        return self == ForwardMode.DECODE

    def is_idle(self):
        return self == ForwardMode.IDLE

    def is_decode_or_idle(self):
        return self == ForwardMode.DECODE or self == ForwardMode.IDLE

    def is_target_verify(self):
        return self == ForwardMode.TARGET_VERIFY

    def is_draft_extend(self, include_v2: bool = False):
        return self == ForwardMode.DRAFT_EXTEND or (
            include_v2 and self == ForwardMode.DRAFT_EXTEND_V2
        )


class AttentionBackend:
    """sglang.srt.layers.attention.base_attn_backend.AttentionBackend (the base adds nothing used here)."""


class ForwardBatch:
    """Only named in annotations; the CUDA-graph replay path receives tensors, not a batch."""


@dataclass
class SpecInput:
    """The part of an EAGLE spec input that DRAFT_EXTEND replays read."""

    accept_length: torch.Tensor


def compute_nsa_seqlens(original_seq_lens, nsa_index_topk: int):
    # sglang.srt.layers.attention.nsa.utils.compute_nsa_seqlens
    return original_seq_lens.clamp(max=nsa_index_topk)


def is_deepseek_nsa(hf_config) -> bool:
    return getattr(hf_config, "index_topk", None) is not None


def get_nsa_index_topk(hf_config) -> int:
    return hf_config.index_topk


def get_attention_tp_size() -> int:
    return 1


ModelRunner = SimpleNamespace


def build_model_runner(
    *,
    device: str | torch.device = "cpu",
    page_size: int = 1,
    context_len: int = 4096,
    index_topk: int = 2048,
    num_draft_tokens: Optional[int] = 4,
    req_to_token: torch.Tensor,
    nsa_decode_backend: str = "fa3",
    nsa_prefill_backend: str = "flashmla_sparse",
    num_attention_heads: int = 128,
) -> ModelRunner:
    """A ModelRunner-shaped object carrying exactly the attributes NativeSparseAttnBackend reads."""
    if req_to_token.dtype != torch.int32 or req_to_token.dim() != 2:
        raise ValueError(
            f"req_to_token must be a 2-D int32 tensor, got {req_to_token.dtype} {tuple(req_to_token.shape)}"
        )
    if req_to_token.shape[1] < context_len:
        raise ValueError(
            f"req_to_token has {req_to_token.shape[1]} columns, fewer than context_len={context_len}"
        )
    return SimpleNamespace(
        device=device,
        page_size=page_size,
        server_args=SimpleNamespace(
            enable_deterministic_inference=False,
            nsa_prefill_backend=nsa_prefill_backend,
            nsa_decode_backend=nsa_decode_backend,
            speculative_eagle_topk=1 if num_draft_tokens else None,
            speculative_num_draft_tokens=num_draft_tokens,
        ),
        model_config=SimpleNamespace(
            context_len=context_len,
            num_attention_heads=num_attention_heads,
            hf_config=SimpleNamespace(index_topk=index_topk),
        ),
        token_to_kv_pool=SimpleNamespace(nsa_kv_cache_store_fp8=False, kv_cache_dim=656),
        req_to_token_pool=SimpleNamespace(req_to_token=req_to_token, size=req_to_token.shape[0]),
    )
