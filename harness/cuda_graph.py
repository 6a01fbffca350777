"""Real CUDA graphs around a stage's metadata, captured and replayed the way sglang's runner does.

`graph_runner(runner, record=...)` drives the stage's own stub of sglang's CudaGraphRunner
(vendor_stub/cuda_graph_runner.py) over the harness GraphRunner's backend and static inputs:
per captured bs the backend's capture, two warm-up runs of the model, the capture of a third run;
then per step replay_prepare (input copies, the backend's replay) and replay(). The "model" is
`consumer`, which reads the buffers the attention kernels read. From patch graph-runner on, each
run first calls the backend's `record_forward_metadata_cuda_graph(bs, forward_mode)` when the
backend offers it: the warm-ups launch the metadata eagerly, the capture records it, and
replay_prepare then skips the backend's replay call for that bs (the backend lists it in
`recorded_forward_metadata_cuda_graph`). On CPU the stub's CpuGraph replays by running the captured
body again, so the same flow runs there (what is recorded runs at replay()).
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from unittest import mock

import torch

from .compare import captured_state, first_mismatch
from .runner import GraphRunner

RECORDER = "record_forward_metadata_cuda_graph"  # what the patched graph runner calls
RECORDED = "recorded_forward_metadata_cuda_graph"  # what it skips the backend's replay call for


def consumer(md) -> torch.Tensor:
    """Stands in for the model: reads the three buffers the attention kernels read (the top-k
    lengths under either name: nsa_cache_seqlens_int32, dsa_ from sglang 0.5.13)."""
    topk_lengths = md.dsa_cache_seqlens_int32 if hasattr(md, "dsa_cache_seqlens_int32") else md.nsa_cache_seqlens_int32
    return (
        md.page_table_1[:, :64].sum(dtype=torch.int64)
        + md.real_page_table[:, :2].sum(dtype=torch.int64)
        + topk_lengths.sum(dtype=torch.int64)
    )


def standins(module):
    """The graph-runner stand-ins beside a stage's nsa_backend module."""
    return importlib.import_module(".graph_runner_standins", module.__package__)


def recorder(backend, capturing):
    """The backend's metadata recorder as the patched runner calls it, or None if it has none.

    On CUDA it is the backend's own method: its launch objects see the stream capture. On CPU no
    stream capture exists, so while `capturing()` (the stand-in graph's capture)
    torch.cuda.is_current_stream_capturing() answers True, as CUDA's does inside torch.cuda.graph.
    """
    method = getattr(backend, RECORDER, None)
    if method is None or torch.device(backend.device).type == "cuda":
        return method

    def record(bs: int, forward_mode) -> None:
        with mock.patch.object(torch.cuda, "is_current_stream_capturing", capturing):
            method(bs, forward_mode)

    return record


class RunnerBackend:
    """The attention backend as the graph runner sees it: offering `record` as its recorder, or none
    (and then no recorded metadata either: the same graphs without the metadata in them)."""

    def __init__(self, backend, record=None):
        self._backend = backend
        if record is not None:
            self.record_forward_metadata_cuda_graph = record
            if hasattr(backend, RECORDED):  # the backend's own set, read as sglang's runner reads it
                self.recorded_forward_metadata_cuda_graph = getattr(backend, RECORDED)

    def __getattr__(self, name):
        if name in (RECORDER, RECORDED):  # hidden: the same graph without the metadata in it
            raise AttributeError(name)
        return getattr(self._backend, name)


def _bs_state(backend, bs: int) -> dict[str, object]:
    """The captured state a replay of `bs` can write: the shared buffers and that bs's metadata."""
    return {k: v for k, v in captured_state(backend).items() if not k.startswith("bs") or k.startswith(f"bs{bs}.")}


def logged_recorder(runner: GraphRunner, log: list[bool]):
    """The stage's recorder, noting for each warm-up (a call outside a capture) whether it wrote."""
    capturing = standins(runner.module).is_current_stream_capturing
    record = recorder(runner.backend, capturing)

    def logged(bs: int, forward_mode) -> None:
        if capturing():
            record(bs, forward_mode)
            return
        before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in _bs_state(runner.backend, bs).items()}
        record(bs, forward_mode)
        log.append(first_mismatch(before, _bs_state(runner.backend, bs)) is not None)

    return logged


def mirrored_warmups(runner: GraphRunner, log: list[bool], stage):
    """A reference's stand-in recorder in `stage`'s graph runner: where that stage's warm-up wrote,
    an eager replay of the same static inputs (what a warm-up is), so that whole buffers stay
    comparable; nothing else."""
    wrote = iter(log)
    capturing = standins(stage).is_current_stream_capturing  # the stage's CPU graphs set it

    def mirror(bs: int, forward_mode) -> None:
        if not capturing() and next(wrote):
            runner.seq_lens_sum = int(runner.seq_lens_cpu[:bs].sum())
            runner.replay_metadata(bs)

    return mirror


class InputBuffers:
    """GraphInputBuffers over the harness runner's static inputs.

    populate_from_forward_batch pads and copies as upstream's does, from the batch's device tensors
    and its host copy of the lengths (GraphRunner.copy_inputs copies those from the device: a sync).
    """

    def __init__(self, runner: GraphRunner):
        self.runner = runner
        tokens = runner.capture_bs[-1] * runner.tokens_per_req
        self.input_ids = torch.zeros(tokens, dtype=torch.int64, device=runner.device)
        self.positions = torch.zeros(tokens, dtype=torch.int64, device=runner.device)
        self.req_pool_indices = runner.req_pool_indices
        self.seq_lens = runner.seq_lens

    def populate_from_forward_batch(self, *, forward_batch, raw_bs, raw_num_token, bs, seq_len_fill_value):
        assert seq_len_fill_value == self.runner.fill_value and raw_bs == forward_batch.batch.raw_bs
        self.runner.copy_inputs(forward_batch.batch, bs, forward_batch.seq_lens_cpu)
        return self.runner.seq_lens_cpu[:bs]


def graph_runner(runner: GraphRunner, record: bool = True, recorder_of=None, stage=None):
    """The stub CudaGraphRunner of `stage` (default: the runner's own) over `runner`, every captured
    bs captured, the consumer as model.

    record: offer the backend's recorder to the runner (False: the same graphs, metadata replayed
    eagerly in replay_prepare). recorder_of(runner) overrides which recorder is offered.
    """
    module = runner.module
    stub = importlib.import_module(".cuda_graph_runner", (stage or module).__package__)
    backend = runner.backend

    def forward(input_ids, positions, forward_batch):
        return consumer(backend.decode_cuda_graph_metadata[forward_batch.batch_size])

    if recorder_of is not None:
        record_metadata = recorder_of(runner)
    else:
        capturing = standins(module).is_current_stream_capturing
        record_metadata = recorder(backend, capturing) if record else None
    model_runner = SimpleNamespace(
        attn_backend=RunnerBackend(backend, record_metadata),
        model=SimpleNamespace(forward=forward),
        tp_group=standins(module).TpGroup(),
    )
    graphs = stub.CudaGraphRunner(
        model_runner,
        InputBuffers(runner),
        runner.capture_bs,
        runner.forward_mode,
        runner.tokens_per_req,
        runner.device,
        get_spec_info=runner._spec_info,
    )
    standins(stage or module).set_global_graph_memory_pool(None)  # a graph pool of its own per runner
    graphs.capture()
    return graphs


def metadata_free_graph_runner(runner: GraphRunner):
    """The stub runner's graphs holding the model alone, its replay_prepare skipping the backend's
    replay call at every captured bs: the same steps with no metadata at all (for timing)."""
    graphs = graph_runner(runner, record=False)
    setattr(graphs.model_runner.attn_backend, RECORDED, {(bs, runner.forward_mode) for bs in runner.capture_bs})
    return graphs


def recorded_against(reference: GraphRunner, runner: GraphRunner):
    """(reference graphs, recorded graphs), comparable on whole buffers after every step.

    Both run `runner`'s stage's graph runner. The recorded runner's warm-ups write its metadata
    eagerly at capture; the reference (a stage without a recorder, e.g. baseline) replays the same
    static inputs eagerly where they wrote.
    """
    log: list[bool] = []
    recorded = graph_runner(runner, recorder_of=lambda r: logged_recorder(r, log))
    mirror = graph_runner(reference, recorder_of=lambda r: mirrored_warmups(r, log, runner.module), stage=runner.module)
    return mirror, recorded


def forward_batch(runner: GraphRunner, batch) -> SimpleNamespace:
    """What the scheduler hands the graph runner for `batch`; build it before timing a step (the
    length sum is the scheduler's host value: reading it from a device tensor synchronizes)."""
    seq_lens_cpu = batch.seq_lens.cpu()
    return standins(runner.module).ForwardBatch(
        batch=batch,
        batch_size=batch.raw_bs,
        seq_lens_cpu=seq_lens_cpu,
        seq_lens_sum=int(seq_lens_cpu.sum()),
        spec_info=runner._spec_info(runner.capture_bs[-1]),
        forward_mode=runner.forward_mode,
    )


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
