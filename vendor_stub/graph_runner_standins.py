"""Stand-ins for the sglang objects cuda_graph_runner.py's capture and replay path touches.

Each keeps upstream's name (sglang 0.5.6) and only the behaviour a single-GPU, non-DP, non-PP,
non-pdmux runner has: the DP-attention and DeepEP hooks do nothing, the graph memory pool is a
module global as upstream's. On CPU, `CpuDeviceModule` stands in for torch.cuda: its graph
captures by running the body once and replays by running it again, which is what a CUDA graph
replays (the recorded launches, on the same static buffers).
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import torch


class ForwardBatch(SimpleNamespace):
    """sglang.srt.model_executor.forward_batch_info.ForwardBatch: the fields the runner passes on."""


class EagleDraftInput(SimpleNamespace):
    """sglang.srt.speculative.eagle_info.EagleDraftInput: the fields the draft runners set."""


class LogitsProcessorOutput(SimpleNamespace):
    """sglang.srt.layers.logits_processor.LogitsProcessorOutput: what the draft extend returns."""


class CaptureHiddenMode:
    """sglang.srt.model_executor.forward_batch_info.CaptureHiddenMode: its members' names."""

    NULL = "NULL"
    LAST = "LAST"
    FULL = "FULL"


def fast_topk(values: torch.Tensor, topk: int, dim: int):
    """sglang.srt.speculative.spec_utils.fast_topk."""
    if topk == 1:
        return torch.max(values, dim=dim, keepdim=True)
    return torch.topk(values, topk, dim=dim)


class PPProxyTensors(dict):
    """Pipeline parallelism's proxy tensors: never built here (pp_size is 1)."""


class DpPaddingMode:
    """sglang.srt.layers.dp_attention.DpPaddingMode in a single-rank runner."""

    @classmethod
    def get_default_mode_in_cuda_graph(cls) -> "DpPaddingMode":
        return cls()

    def is_max_len(self) -> bool:
        return False


def set_dp_buffer_len(global_dp_buffer_len, num_tokens, is_max_len) -> None:
    """DP attention's gather buffers: nothing to size without DP attention."""


def set_is_extend_in_batch(is_extend_in_batch: bool) -> None:
    """DP attention's batch flag: nothing to set without DP attention."""


def set_graph_pool_id(pool) -> None:
    """pynccl's symmetric-memory allocator: no NCCL here."""


def get_current_stream_idx() -> int:
    """pdmux's stream index: pdmux is off."""
    return 0


class DeepEPCudaGraphRunnerAdapter:
    """DeepEP's dispatch mode, saved at capture and restored at replay: no DeepEP here."""

    def capture(self, is_extend_in_batch: bool) -> None:
        pass

    def replay(self) -> None:
        pass


class TpGroup:
    """A one-rank tensor-parallel group: the barrier has nobody to wait for."""

    def barrier(self) -> None:
        pass


_global_graph_memory_pool = None


def get_global_graph_memory_pool():
    return _global_graph_memory_pool


def set_global_graph_memory_pool(val) -> None:
    global _global_graph_memory_pool
    _global_graph_memory_pool = val


class CpuGraph:
    """torch.cuda.CUDAGraph's place on CPU: replay() runs the captured body again."""

    def __init__(self):
        self.body = None  # the captured run and the tensor it returned, set at capture
        self.output = None

    def replay(self) -> None:
        with _capturing():
            self.output.copy_(self.body())


_cpu_capture_depth = 0


@contextmanager
def _capturing():
    global _cpu_capture_depth
    _cpu_capture_depth += 1
    try:
        yield
    finally:
        _cpu_capture_depth -= 1


def is_current_stream_capturing() -> bool:
    """torch.cuda.is_current_stream_capturing(), true on CPU inside a CpuGraph capture or replay."""
    if _cpu_capture_depth:
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class CpuDeviceModule:
    """torch.cuda's place on CPU for the runner: synchronize, the graph pool, graph capture."""

    @staticmethod
    def synchronize() -> None:
        pass

    @staticmethod
    def graph_pool_handle():
        return "cpu-graph-pool"

    @staticmethod
    def graph(cuda_graph: CpuGraph, pool=None, stream=None):
        return _capturing()
