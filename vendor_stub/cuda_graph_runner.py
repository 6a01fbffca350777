# Runnable reproduction of sglang 0.5.6 python/sglang/srt/model_executor/cuda_graph_runner.py
# (Apache-2.0, the SGLang authors): what CudaGraphRunner does around the attention backend when it
# captures one batch size and replays it, runnable without sglang on CPU and CUDA. Regions listed
# in UPSTREAM_PIN.toml ([[file]] cuda_graph_runner.py) are byte-identical to upstream, so patches
# written against this file apply to the real one (`make upstream-check`). Everything else keeps
# upstream's statements and names for one GPU without DP attention, pipeline parallelism, pdmux,
# LoRA or two-batch overlap; the imports come from graph_runner_standins.
from __future__ import annotations

import bisect
import inspect
from typing import Callable, Optional

import torch

from .graph_runner_standins import (
    CpuDeviceModule,
    CpuGraph,
    DeepEPCudaGraphRunnerAdapter,
    DpPaddingMode,
    ForwardBatch,
    PPProxyTensors,
    get_current_stream_idx,
    get_global_graph_memory_pool,
    set_dp_buffer_len,
    set_global_graph_memory_pool,
    set_graph_pool_id,
    set_is_extend_in_batch,
)


class CudaGraphRunner:
    """Captures `model_runner.model.forward` for every bs of `capture_bs`, then replays it.

    `model_runner` carries attn_backend, model (its forward(input_ids, positions,
    forward_batch) stands in for the model) and tp_group; `buffers` is the runner's
    GraphInputBuffers: static req_pool_indices, seq_lens, input_ids, positions and
    populate_from_forward_batch(...), which pads and copies a batch and returns seq_lens_cpu.
    """

    def __init__(
        self,
        model_runner,
        buffers,
        capture_bs,
        capture_forward_mode,
        num_tokens_per_bs: int,
        device: torch.device,
        get_spec_info: Callable = lambda bs: None,
    ):
        self.model_runner = model_runner
        self.buffers = buffers
        self.capture_bs = sorted(capture_bs)
        self.capture_forward_mode = capture_forward_mode
        self.num_tokens_per_bs = num_tokens_per_bs
        self.is_cuda = torch.device(device).type == "cuda"
        self.device_module = torch.cuda if self.is_cuda else CpuDeviceModule
        self.stream = torch.cuda.Stream() if self.is_cuda else None
        self.get_spec_info = get_spec_info  # bs -> the spec_info captured for it
        self.pp_size = 1
        self.enable_pdmux = False
        self.is_encoder_decoder = False
        self.deepep_adapter = DeepEPCudaGraphRunnerAdapter()
        self.seq_len_fill_value = (
            self.model_runner.attn_backend.get_cuda_graph_seq_len_fill_value()
        )
        self.graphs = {}
        self.output_buffers = {}

    def capture(self) -> None:
        for bs in reversed(self.capture_bs):  # largest first, as upstream
            graph, output_buffers = self.capture_one_batch_size(
                bs, self.model_runner.model.forward
            )
            self.graphs[bs] = graph
            self.output_buffers[bs] = output_buffers

    def _capture_graph(self, graph, pool, stream, run_once_fn):
        with self.device_module.graph(cuda_graph=graph, pool=pool, stream=stream):
            out = run_once_fn()
        if not self.is_cuda:  # a CPU graph replays by running the body again
            graph.body, graph.output = run_once_fn, out
        return out

    def _create_device_graph(self):
        return torch.cuda.CUDAGraph() if self.is_cuda else CpuGraph()

    def capture_one_batch_size(
        self, bs: int, forward: Callable, stream_idx: Optional[int] = None
    ):
        buffers = self.buffers
        graph = self._create_device_graph()
        stream = self.stream
        num_tokens = bs * self.num_tokens_per_bs

        # Graph inputs
        input_ids = buffers.input_ids[:num_tokens]
        req_pool_indices = buffers.req_pool_indices[:bs]
        seq_lens = buffers.seq_lens[:bs]
        positions = buffers.positions[:num_tokens]
        encoder_lens = None
        global_dp_buffer_len = None
        pp_proxy_tensors = None
        spec_info = self.get_spec_info(bs)
        attn_backend = self.model_runner.attn_backend

        forward_batch = ForwardBatch(
            forward_mode=self.capture_forward_mode,
            batch_size=bs,
            input_ids=input_ids,
            req_pool_indices=req_pool_indices,
            seq_lens=seq_lens,
            attn_backend=attn_backend,
            positions=positions,
            dp_padding_mode=DpPaddingMode.get_default_mode_in_cuda_graph(),
            spec_info=spec_info,
        )

        # Attention backend
        attn_backend.init_forward_metadata_capture_cuda_graph(
            bs,
            num_tokens,
            req_pool_indices,
            seq_lens,
            encoder_lens,
            forward_batch.forward_mode,
            forward_batch.spec_info,
        )

        # Run and capture
        def run_once():
            # Clean intermediate result cache for DP attention
            forward_batch.dp_local_start_pos = forward_batch.dp_local_num_tokens = None
            set_dp_buffer_len(
                global_dp_buffer_len,
                num_tokens,
                forward_batch.dp_padding_mode.is_max_len(),
            )
            set_is_extend_in_batch(False)

            kwargs = {}
            if (
                self.pp_size > 1
                and "pp_proxy_tensors" in inspect.signature(forward).parameters
            ):
                kwargs["pp_proxy_tensors"] = PPProxyTensors(
                    {k: v.clone() for k, v in pp_proxy_tensors.tensors.items()}
                )

            logits_output_or_pp_proxy_tensors = forward(
                input_ids,
                forward_batch.positions,
                forward_batch,
                **kwargs,
            )
            return logits_output_or_pp_proxy_tensors

        self.deepep_adapter.capture(is_extend_in_batch=False)

        for _ in range(2):
            self.device_module.synchronize()
            self.model_runner.tp_group.barrier()
            run_once()

        if get_global_graph_memory_pool() is None:
            set_global_graph_memory_pool(self.device_module.graph_pool_handle())
        # Set graph pool id globally to be able to use symmetric memory
        set_graph_pool_id(get_global_graph_memory_pool())
        out = self._capture_graph(
            graph, get_global_graph_memory_pool(), stream, run_once
        )

        return graph, out

    def replay_prepare(self, forward_batch: ForwardBatch):
        buffers = self.buffers
        raw_bs = forward_batch.batch_size
        raw_num_token = raw_bs * self.num_tokens_per_bs

        # Pad
        index = bisect.bisect_left(self.capture_bs, raw_bs)
        bs = self.capture_bs[index]

        seq_lens_cpu = buffers.populate_from_forward_batch(
            forward_batch=forward_batch,
            raw_bs=raw_bs,
            raw_num_token=raw_num_token,
            bs=bs,
            seq_len_fill_value=self.seq_len_fill_value,
        )
        # Attention backend
        if self.enable_pdmux:
            stream_idx = get_current_stream_idx()
            attn_backend = self.model_runner.decode_attn_backend_group[stream_idx]
        else:
            attn_backend = self.model_runner.attn_backend
        attn_backend.init_forward_metadata_replay_cuda_graph(
            bs,
            buffers.req_pool_indices[:bs],
            buffers.seq_lens[:bs],
            forward_batch.seq_lens_sum + (bs - raw_bs) * self.seq_len_fill_value,
            buffers.encoder_lens[:bs] if self.is_encoder_decoder else None,
            self.capture_forward_mode,
            forward_batch.spec_info,
            seq_lens_cpu=seq_lens_cpu,
        )

        # Store fields
        self.raw_bs = raw_bs
        self.raw_num_token = raw_num_token
        self.bs = bs

    def replay(self, forward_batch: ForwardBatch, skip_attn_backend_init: bool = False):
        self.deepep_adapter.replay()

        if not skip_attn_backend_init:
            self.replay_prepare(forward_batch)

        # Replay
        self.graphs[self.bs].replay()
        return self.output_buffers[self.bs]
