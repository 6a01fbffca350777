"""A real CUDA graph around a stage's target-verify metadata, as sglang's graph runner records it (GPU only)."""

from __future__ import annotations

import torch

from .runner import GraphRunner


def consumer(md) -> torch.Tensor:
    """Stands in for the model: reads the three buffers the attention kernels read."""
    return (
        md.page_table_1[:, :64].sum(dtype=torch.int64)
        + md.real_page_table[:, :2].sum(dtype=torch.int64)
        + md.nsa_cache_seqlens_int32.sum(dtype=torch.int64)
    )


def warm_launches(module, scenario) -> None:
    """Compile every captured bs's launch on a scratch runner: compiling inside a capture fails, and a
    warm-up on the compared runner would write buffers the baseline never wrote."""
    scratch = scenario.runner(module, "cuda")
    for launch in scratch.backend.target_verify_launches.values():
        launch(*launch.static_inputs)


def capture(runner: GraphRunner, bs: int, with_metadata: bool) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """A graph holding the consumer of captured `bs`, and before it the recorded metadata launch if asked."""
    md = runner.backend.decode_cuda_graph_metadata[bs]
    out = torch.zeros((), dtype=torch.int64, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # the consumer's warm-up, off the capture (the kernel is warmed apart)
        out.copy_(consumer(md))
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        if with_metadata:
            runner.backend.record_forward_metadata_cuda_graph(bs, runner.forward_mode)
        out.copy_(consumer(md))
    return graph, out
