"""What sglang's CudaGraphRunner does around the attention backend, without a model.

It owns the static inputs (GraphInputBuffers in sglang 0.5.6: int32 `req_pool_indices`,
`seq_lens` filled with the backend's fill value, a CPU `seq_lens_cpu`), captures metadata for every
batch size in `capture_bs` (largest first, as upstream), and replays a batch by padding it to the
smallest captured bs that fits: padded slots get `seq_lens = fill value` and keep stale pool indices.
Every input is checked before any buffer is written.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from types import ModuleType
from typing import Optional

import torch

MODES = ("target_verify", "decode", "draft_extend")


def draft_extend_mode(forward_mode_enum):
    """The release's draft-extend forward mode: DRAFT_EXTEND, or DRAFT_EXTEND_V2 where that is the
    only one (sglang 0.5.14 removed the v1 worker's DRAFT_EXTEND)."""
    if hasattr(forward_mode_enum, "DRAFT_EXTEND"):
        return forward_mode_enum.DRAFT_EXTEND
    return forward_mode_enum.DRAFT_EXTEND_V2


class ReplayInputError(ValueError):
    """Input the metadata replay cannot take; the message says what to change."""


@dataclass(frozen=True)
class Batch:
    """One scheduler step: the real (unpadded) requests."""

    req_pool_indices: torch.Tensor  # [raw_bs] integer, on the backend's device
    seq_lens: torch.Tensor  # [raw_bs] integer, on the backend's device
    accept_length: Optional[torch.Tensor] = None  # [raw_bs] int32, draft_extend only

    @property
    def raw_bs(self) -> int:
        return self.req_pool_indices.shape[0]


class GraphRunner:
    def __init__(
        self,
        module: ModuleType,
        *,
        req_to_token: torch.Tensor,
        context_len: int,
        page_size: int,
        index_topk: int,
        num_draft_tokens: int,
        capture_bs: tuple[int, ...],
        mode: str = "target_verify",
        seq_lens_dtype: torch.dtype = torch.int32,
    ):
        if mode not in MODES:
            raise ReplayInputError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
        if mode != "decode" and num_draft_tokens < 1:
            raise ReplayInputError(
                f"num_draft_tokens (D) must be >= 1 for {mode}, got {num_draft_tokens}: "
                "set speculative_num_draft_tokens to the number of draft tokens verified per request"
            )
        if mode == "target_verify" and num_draft_tokens >= context_len:
            raise ReplayInputError(
                f"num_draft_tokens (D) {num_draft_tokens} leaves no room in context_len={context_len}: "
                f"target verify needs seq_len + D <= context_len with seq_len >= 1, so D <= {context_len - 1}; "
                "lower speculative_num_draft_tokens or raise the context length"
            )
        if not capture_bs or min(capture_bs) < 1:
            raise ReplayInputError(f"capture_bs must be positive batch sizes, got {capture_bs}")
        if seq_lens_dtype not in (torch.int32, torch.int64):
            raise ReplayInputError(f"seq_lens dtype must be int32 or int64, got {seq_lens_dtype}")
        self.module = module
        self.mode = mode
        self.forward_mode = {
            "target_verify": module.ForwardMode.TARGET_VERIFY,
            "decode": module.ForwardMode.DECODE,
            "draft_extend": draft_extend_mode(module.ForwardMode),
        }[mode]
        self.device = req_to_token.device
        self.context_len = context_len
        self.num_draft_tokens = num_draft_tokens
        self.capture_bs = tuple(sorted(set(capture_bs)))
        self.backend = module.NativeSparseAttnBackend(
            module.build_model_runner(
                device=self.device,
                page_size=page_size,
                context_len=context_len,
                index_topk=index_topk,
                num_draft_tokens=num_draft_tokens,
                req_to_token=req_to_token,
            )
        )
        self.fill_value = self.backend.get_cuda_graph_seq_len_fill_value()
        max_bs = self.capture_bs[-1]
        self.tokens_per_req = 1 if mode == "decode" else num_draft_tokens
        self.backend.init_cuda_graph_state(max_bs, max_bs * self.tokens_per_req)

        self.req_pool_indices = torch.zeros(max_bs, dtype=torch.int32, device=self.device)
        self.seq_lens = torch.full((max_bs,), self.fill_value, dtype=seq_lens_dtype, device=self.device)
        self.seq_lens_cpu = torch.full((max_bs,), self.fill_value, dtype=seq_lens_dtype)
        self.accept_length = torch.full((max_bs,), num_draft_tokens or 1, dtype=torch.int32, device=self.device)
        for bs in reversed(self.capture_bs):
            self.backend.init_forward_metadata_capture_cuda_graph(
                bs,
                bs * self.tokens_per_req,
                self.req_pool_indices[:bs],
                self.seq_lens[:bs],
                None,
                self.forward_mode,
                self._spec_info(bs),
            )

    def _spec_info(self, bs: int):
        if self.mode != "draft_extend":
            return None
        return self.module.SpecInput(accept_length=self.accept_length[:bs])

    def padded_bs(self, raw_bs: int) -> int:
        if raw_bs < 1:
            raise ReplayInputError(
                f"batch of {raw_bs} requests: a replay needs at least one request; skip the replay of an empty batch"
            )
        index = bisect.bisect_left(self.capture_bs, raw_bs)
        if index == len(self.capture_bs):
            raise ReplayInputError(
                f"batch of {raw_bs} requests does not fit the largest captured bs "
                f"{self.capture_bs[-1]}: capture a larger bs or split the batch"
            )
        return self.capture_bs[index]

    def check(self, batch: Batch) -> int:
        """Validate `batch` against what was captured; returns the padded bs."""
        named = {"req_pool_indices": batch.req_pool_indices, "seq_lens": batch.seq_lens}
        if self.mode == "draft_extend":  # read there only: other modes ignore an accept_length
            if batch.accept_length is None:
                raise ReplayInputError("draft_extend replays need accept_length: pass Batch(..., accept_length=...)")
            named["accept_length"] = batch.accept_length
        for name, t in named.items():
            if not isinstance(t, torch.Tensor) or t.dim() != 1:
                raise ReplayInputError(f"{name} must be a 1-D tensor")
            if t.dtype not in (torch.int32, torch.int64):
                raise ReplayInputError(f"{name} must be int32 or int64, got {t.dtype}: cast it with .to(torch.int32)")
            if t.device != self.device:
                raise ReplayInputError(
                    f"{name} is on {t.device} but the captured buffers are on {self.device}: move it with .to('{self.device}')"
                )
            if t.shape[0] != batch.raw_bs:
                raise ReplayInputError(f"{name} has {t.shape[0]} entries, req_pool_indices has {batch.raw_bs}")
        bs = self.padded_bs(batch.raw_bs)
        lens = batch.seq_lens.cpu().to(torch.int64)  # seq_len + D must not wrap around in int32
        short = (lens < 1).nonzero()
        if len(short):
            i = int(short[0])
            raise ReplayInputError(f"request {i}: seq_len {int(lens[i])} is below 1: every request holds a token")
        draft = self.num_draft_tokens if self.mode == "target_verify" else 0  # the cache also holds D
        long = (lens + draft > self.context_len).nonzero()
        if len(long):
            i = int(long[0])
            added = f" + {draft} draft tokens = {int(lens[i]) + draft}" if draft else ""
            raise ReplayInputError(
                f"request {i}: seq_len {int(lens[i])}{added} is past context_len={self.context_len}: "
                "the scheduler must not send it to a graph captured for this context"
            )
        rows = self.backend.req_to_token.shape[0]
        pool = batch.req_pool_indices.cpu()
        outside = ((pool < 0) | (pool >= rows)).nonzero()
        if len(outside):
            i = int(outside[0])
            raise ReplayInputError(
                f"request {i}: req_pool_indices {int(pool[i])} is outside [0, {rows}) (req_to_token rows): "
                "pass the request's row of req_to_token"
            )
        if self.mode == "draft_extend":
            acc = batch.accept_length.cpu()
            bad = ((acc < 1) | (acc > self.num_draft_tokens) | (acc > lens)).nonzero()
            if len(bad):
                i = int(bad[0])
                raise ReplayInputError(
                    f"request {i}: accept_length {int(acc[i])} is outside [1, min(D={self.num_draft_tokens}, "
                    f"seq_len={int(lens[i])})]: a request accepts at least 1 and at most min(D, seq_len) tokens"
                )
        return bs

    def prepare(self, batch: Batch) -> int:
        """Check `batch`, then pad and copy it into the static inputs; returns the padded bs."""
        bs = self.check(batch)
        self.copy_inputs(batch, bs)
        self.seq_lens_sum = int(self.seq_lens_cpu[:bs].sum())  # the runner's own host work
        return bs

    def copy_inputs(self, batch: Batch, bs: int, seq_lens_cpu: Optional[torch.Tensor] = None) -> None:
        """Only what GraphInputBuffers.populate_from_forward_batch does: fills and copies, no checks.

        seq_lens_cpu: the scheduler's host copy of the lengths, when it has one (copying the device
        lengths to the host instead synchronizes)."""
        raw_bs = batch.raw_bs
        draft_extend = self.mode == "draft_extend"  # the only mode that reads accept_length
        if bs != raw_bs:
            self.seq_lens.fill_(self.fill_value)
            self.seq_lens_cpu.fill_(self.fill_value)
            if draft_extend:
                self.accept_length.fill_(1)
        self.req_pool_indices[:raw_bs].copy_(batch.req_pool_indices)
        self.seq_lens[:raw_bs].copy_(batch.seq_lens)
        self.seq_lens_cpu[:raw_bs].copy_(batch.seq_lens if seq_lens_cpu is None else seq_lens_cpu)
        if draft_extend:
            self.accept_length[:raw_bs].copy_(batch.accept_length)

    def replay_metadata(self, bs: int) -> None:
        """The call under test: the backend's replay for an already prepared bs."""
        if bs not in self.capture_bs:
            raise ReplayInputError(
                f"bs {bs} was not captured (captured: {', '.join(map(str, self.capture_bs))}): "
                "replay a prepared batch, whose bs prepare() returns"
            )
        self.backend.init_forward_metadata_replay_cuda_graph(
            bs,
            self.req_pool_indices[:bs],
            self.seq_lens[:bs],
            self.seq_lens_sum,
            None,
            self.forward_mode,
            self._spec_info(bs),
            seq_lens_cpu=self.seq_lens_cpu[:bs],
        )

    def replay(self, batch: Batch) -> int:
        bs = self.prepare(batch)
        self.replay_metadata(bs)
        return bs
