"""The speculative step's other two graph runners, executed: their real code around a real backend.

A speculative step on sglang 0.5.5-0.5.9 with NSA and EAGLE/MTP runs three CUDA graph runners, and each
one calls the attention backend's replay metadata before its graph replay: the target-verify runner
(model_executor/cuda_graph_runner.py, harness.upstream_exec), the draft-extend runner
(speculative/eagle_draft_extend_cuda_graph_runner.py, EAGLEDraftExtendCudaGraphRunner, draft extend)
and the draft runner (speculative/eagle_draft_cuda_graph_runner.py, EAGLEDraftCudaGraphRunner, over
NativeSparseAttnMultiStepBackend: decode, once per draft step's backend).

`SpecRunner` takes a runner file's text (a release's real file from its wheel, patched or not, or a
stage's stub, which holds the same methods byte for byte), cuts the runner class out with `ast` and
execs it with stand-ins for its module-level names. The instance gets the static inputs upstream's
__init__ builds (its __init__ reads server arguments and captures at once, so it is not run); then
`capture_one_batch_size` runs for every captured bs, largest first, and `replay` for each scheduler
batch: the runner's own padding, input copies, backend calls and graph replay, in its order. The
model is a stand-in that reads the metadata the attention kernels read. On CPU, torch.cuda's graph
API is a stand-in too: a capture notes what ran inside it (the recorded metadata launches and the
model's read), a replay runs those again on the same static buffers, which is what a CUDA graph
replays; on CUDA the runner captures real graphs.

`compare_runners` runs a reference (the unpatched runner around the unpatched backend) and a
candidate in lockstep and compares every backend's captured buffers whole after every replay (for
the multi-step backend: every step's backend). Where the candidate's warm-up runs launched the
metadata on the capture-time static inputs, the reference replays the same static inputs eagerly at
the same point, so buffers stay comparable (harness.cuda_graph.mirrored_warmups does the same for the
target-verify runner).
"""

from __future__ import annotations

import __future__
import ast
import bisect
import builtins
import contextlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import ModuleType, SimpleNamespace
from typing import Callable, Optional
from unittest import mock

import torch

from .compare import captured_state, first_mismatch
from .cuda_graph import RECORDED, RECORDER, consumer
from .runner import draft_extend_mode
from .scenarios import Scenario

# kind -> (stub file = the file's name under speculative/ in the wheel, runner class)
RUNNERS = {
    "draft_extend": ("eagle_draft_extend_cuda_graph_runner.py", "EAGLEDraftExtendCudaGraphRunner"),
    "draft": ("eagle_draft_cuda_graph_runner.py", "EAGLEDraftCudaGraphRunner"),
}
WHEEL_FOLDER = "sglang/srt/speculative"
HIDDEN_SIZE = 8  # the stand-in model's hidden states and vocabulary: shapes only, never read back
VOCAB_SIZE = 4
GRAPH_POOL = "graph-pool"


class SpecRunnerError(ValueError):
    """A runner or backend the harness cannot drive; the message says what to change."""


def wheel_path(kind: str) -> str:
    return f"{WHEEL_FOLDER}/{RUNNERS[kind][0]}"


# -- torch.cuda's graph API on CPU -------------------------------------------------------------


class _GraphState:
    """Which stand-in graph is being captured, and whether one is replaying (CPU); on CUDA, torch's."""

    def __init__(self, on_cpu: bool = True):
        self.on_cpu = on_cpu
        self.capturing: CpuGraph | None = None
        self.replaying = False

    def in_capture(self) -> bool:
        """Inside the runner's graph capture (not its replay)."""
        return self.capturing is not None if self.on_cpu else torch.cuda.is_current_stream_capturing()

    def active(self) -> bool:
        """torch.cuda.is_current_stream_capturing() as a recorded launch sees it (capture and replay)."""
        return self.capturing is not None or self.replaying


class CpuGraph:
    """torch.cuda.CUDAGraph on CPU: what ran inside the capture (`note`d), run again by replay()."""

    def __init__(self, state: _GraphState):
        self.state = state
        self.work: list[Callable[[], None]] = []

    def replay(self) -> None:
        self.state.replaying = True
        try:
            for work in self.work:
                work()
        finally:
            self.state.replaying = False

    def pool(self) -> str:
        return GRAPH_POOL


def _cpu_torch(state: _GraphState) -> ModuleType:
    """torch, with torch.cuda's graph API (CUDAGraph, graph, synchronize) standing in on CPU."""

    @contextmanager
    def graph(cuda_graph, pool=None, stream=None):
        state.capturing = cuda_graph
        try:
            yield
        finally:
            state.capturing = None

    overrides = {
        "CUDAGraph": lambda: CpuGraph(state),
        "graph": graph,
        "synchronize": lambda device=None: None,
        "is_current_stream_capturing": state.active,
    }

    class Cuda(ModuleType):
        def __getattr__(self, attr):
            return overrides[attr] if attr in overrides else getattr(torch.cuda, attr)

    cuda = Cuda("torch.cuda")

    class Torch(ModuleType):
        def __getattr__(self, attr):
            return cuda if attr == "cuda" else getattr(torch, attr)

    return Torch("torch")


class _GraphBackend:
    """sglang 0.5.14+'s graph backend of a runner (FullCudaGraphBackend): capture_one runs the
    runner's run_once twice eagerly, each followed by the attention backend's post-warm-up hook,
    then once under a graph capture; replay replays that graph and returns the captured output."""

    def __init__(self, torch_module: ModuleType, pool: SimpleNamespace):
        self.torch, self.pool = torch_module, pool
        self.graphs: dict = {}
        self.outputs: dict = {}

    def capture_one(self, shape_key, forward_fn, dummies=None, post_warmup_hook=None) -> None:
        for _ in range(2):
            self.torch.cuda.synchronize()
            forward_fn()
            if post_warmup_hook is not None:
                post_warmup_hook()
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, pool=self.pool.handle):
            out = forward_fn()
        self.graphs[shape_key], self.outputs[shape_key] = graph, out

    def replay(self, shape_key, forward_batch, **kwargs):
        self.graphs[shape_key].replay()
        return self.outputs[shape_key]


class _DecodeCudaGraphRunner:
    """sglang 0.5.14+'s DecodeCudaGraphRunner as the EAGLE runners use it: they subclass it for
    _pad_to_bucket (BaseCudaGraphRunner's) and set every field themselves."""

    @staticmethod
    def _pad_to_bucket(raw_size: int, buckets) -> int:
        index = bisect.bisect_left(buckets, raw_size)
        assert index < len(buckets), f"{raw_size} is past the largest captured size {buckets[-1]}"
        return buckets[index]


class _CpuEvent:
    """torch.cuda.Event on CPU: recording it orders nothing."""

    def record(self, stream=None) -> None:
        pass


def _grouped_foreach_copy_(dsts: list[torch.Tensor], srcs: list[torch.Tensor]) -> None:
    """sglang 0.5.14+'s grouped copy of the static inputs: each source into its buffer."""
    for dst, src in zip(dsts, srcs):
        dst.copy_(src)


# -- the runner's module-level names -----------------------------------------------------------


class _Namespace(SimpleNamespace):
    """ForwardBatch, EagleDraftInput, LogitsProcessorOutput: keyword fields, attributes settable."""

    def mark_forward_metadata_ready(self, replan_equivalent: bool = False) -> None:
        """0.5.13+: the draft runner marks its batch planned (the draft steps then skip planning)."""


def _fast_topk(values: torch.Tensor, topk: int, dim: int):
    """sglang.srt.speculative.spec_utils.fast_topk."""
    if topk == 1:
        return torch.max(values, dim=dim, keepdim=True)
    return torch.topk(values, topk, dim=dim)


def _runner_globals(forward_mode_enum, torch_module, pool: SimpleNamespace) -> dict:
    """Everything the runner classes' methods name at module level, in every release 0.5.5-0.5.9."""
    dp_padding = SimpleNamespace(is_max_len=lambda: False)
    return {
        "__builtins__": builtins,
        "__name__": "spec_runner",
        "torch": torch_module,
        "bisect": bisect,
        "Callable": Callable,
        "TYPE_CHECKING": False,
        "logger": logging.getLogger("spec_runner"),
        "ForwardMode": forward_mode_enum,
        "ForwardBatch": _Namespace,
        "EagleDraftInput": _Namespace,
        "EagleDraftExtendInput": _Namespace,  # 0.5.12+
        "contextlib": contextlib,  # 0.5.11+: a device timer's context, when sglang's is on
        "LogitsProcessorOutput": _Namespace,
        "CaptureHiddenMode": SimpleNamespace(NULL="NULL", LAST="LAST", FULL="FULL"),
        "DpPaddingMode": SimpleNamespace(get_default_mode_in_cuda_graph=lambda: dp_padding),
        "DeepEPCudaGraphRunnerAdapter": lambda: SimpleNamespace(capture=lambda **kw: None, replay=lambda: None),
        "set_dp_buffer_len": lambda *args: None,
        "set_is_extend_in_batch": lambda flag: None,
        "get_global_graph_memory_pool": lambda: pool.handle,
        "set_global_graph_memory_pool": lambda handle: setattr(pool, "handle", handle),
        "fast_topk": _fast_topk,
        "_is_hip": False,  # 0.5.13+: the draft-extend runner's CUDA-only top-1 fast path
        # 0.5.13+: the capture runs in the backend's forward context (one backend here: no context)
        "forward_context": lambda context: contextlib.nullcontext(),
        "ForwardContext": _Namespace,
        # 0.5.11+: debug checks of the draft runner's inputs (off unless sglang's env enables them).
        "maybe_detect_nan": lambda *args: None,
        "maybe_detect_oob": lambda *args: None,
        # 0.5.14+: the runners subclass DecodeCudaGraphRunner and capture through a graph backend
        "DecodeCudaGraphRunner": _DecodeCudaGraphRunner,
        "ShapeKey": lambda size: size,
        "SamplingBatchInfo": _Namespace,
        "_grouped_foreach_copy_": _grouped_foreach_copy_,
        "Optional": Optional,
    }


def release_names(module, fields: dict) -> dict:
    """`fields` under the names the release uses (its renames, harness.releases: e.g. 0.5.11's
    num_accepted_tokens for accept_length); the stub and releases without renames: unchanged."""
    renames = getattr(module, "renames", None) or {}
    return {renames.get(name, name): value for name, value in fields.items()}


def runner_class(source: str, filename: str, kind: str, namespace: dict) -> type:
    """The runner class of `kind` cut out of `source` with `ast` and exec'd in `namespace`."""
    name = RUNNERS[kind][1]
    tree = ast.parse(source)
    found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    if not found:
        raise SpecRunnerError(f"{filename} has no class {name}: is it sglang's {RUNNERS[kind][0]}?")
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)
    flags = __future__.annotations.compiler_flag if future else 0
    code = compile(ast.Module(body=found, type_ignores=[]), filename, "exec", flags=flags, dont_inherit=True)
    exec(code, namespace)
    return namespace[name]


# -- the backend, as the runner sees it --------------------------------------------------------


def backend_state(backend) -> dict[str, object]:
    """Every captured buffer of a backend; of every step's backend for the multi-step one."""
    steps = getattr(backend, "attn_backends", None)
    if steps is None:
        return captured_state(backend)
    return {f"step{i}.{k}": v for i, step in enumerate(steps) for k, v in captured_state(step).items()}


class _LoggedBackend:
    """The attention backend as the runner calls it: every call noted in `events`, in order.

    Offers the backend's recorder and its recorded view only where the backend has them (an
    unpatched backend: the runner finds neither). A recorder call inside a capture is also noted to
    the captured graph, so that its CPU replay launches again (what a CUDA graph replays)."""

    def __init__(self, backend, events: list[str], state: _GraphState, on_cpu: bool, warmups: list[bool],
                 offer_recorder: bool = True, recorded=None):
        self._backend, self._events, self._state, self._on_cpu, self._warmups = backend, events, state, on_cpu, warmups
        self.lean = False  # set for timing: no event, no count around the replay call
        self._offer_recorder = offer_recorder
        if offer_recorder and hasattr(backend, RECORDER):
            self.record_forward_metadata_cuda_graph = self._record
        if recorded is not None:  # what the runner is told was recorded, whatever was (metadata-free graphs)
            self.recorded_forward_metadata_cuda_graph = recorded

    def __getattr__(self, name):
        # The recorded view is the backend's own, made by its init_cuda_graph_state (after this proxy).
        # Not offered: both hidden, or the runner would find the backend's own recorder through this
        # fallback (and record a CUDA capture into the "eager" graphs).
        if name == RECORDER or (name == RECORDED and not self._offer_recorder):
            raise AttributeError(name)
        return getattr(self._backend, name)

    def _prefix(self) -> str:
        return "captured " if self._state.in_capture() else ""

    def _launch_recorder(self, bs, forward_mode) -> None:
        method = getattr(self._backend, RECORDER)
        if self._on_cpu:  # no stream capture on CPU: the stand-in graph's, as CUDA's answers
            with mock.patch.object(torch.cuda, "is_current_stream_capturing", self._state.active):
                method(bs, forward_mode)
        else:
            method(bs, forward_mode)

    def _record(self, bs, forward_mode) -> None:
        self._events.append(self._prefix() + "record")
        if self._state.in_capture():
            self._launch_recorder(bs, forward_mode)
            if self._on_cpu:
                self._state.capturing.work.append(lambda: self._launch_recorder(bs, forward_mode))
            return
        before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in backend_state(self._backend).items()}
        self._launch_recorder(bs, forward_mode)
        self._warmups.append(first_mismatch(before, backend_state(self._backend)) is not None)

    def init_forward_metadata_capture_cuda_graph(self, *args, **kwargs):
        self._events.append("capture")
        return self._backend.init_forward_metadata_capture_cuda_graph(*args, **kwargs)

    def init_forward_metadata_replay_cuda_graph(self, *args, **kwargs):
        return self._replay_call(self._backend.init_forward_metadata_replay_cuda_graph, *args, **kwargs)

    def init_forward_metadata_out_graph(self, forward_batch, in_capture: bool = False):
        """0.5.13+: the capture's call (in_capture) and the replay's, in one method."""
        if in_capture:
            self._events.append("capture")
            return self._backend.init_forward_metadata_out_graph(forward_batch, in_capture=True)
        return self._replay_call(self._backend.init_forward_metadata_out_graph, forward_batch)

    def _replay_call(self, method, *args, **kwargs):
        from .counters import count_replay

        if self.lean:
            return method(*args, **kwargs)
        with count_replay() as counts:
            out = method(*args, **kwargs)
        self._events.append(f"replay call: {counts.triton_launches} launches")
        return out


# -- the runner ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One speculative configuration: EAGLE/MTP with topk 1 (what NSA runs), `num_steps` draft steps,
    D = num_steps + 1 draft tokens verified per request; the scenario gives tables, lengths, bs."""

    scenario: Scenario
    num_steps: int = 3

    @property
    def num_draft_tokens(self) -> int:
        return self.num_steps + 1

    def scenario_for(self, kind: str) -> Scenario:
        mode = "draft_extend" if kind == "draft_extend" else "decode"
        return replace(self.scenario, mode=mode, num_draft_tokens=self.num_draft_tokens, seq_lens_dtype="int32")


def stub_side(stage: str, kind: str, runner_stage: str | None = None) -> tuple:
    """(runner file text, its name, backend module): a stage's stub runner of `kind` (or another
    stage's, `runner_stage`) around the stage's backend, as compare_runners takes a side."""
    from pathlib import Path

    from . import stages

    name = RUNNERS[kind][0]
    runner_module = stages.load(runner_stage or stage)
    return (Path(runner_module.__file__).parent / name).read_text(), name, stages.load(stage)


def build_backend(module, kind: str, step: Step, device="cpu"):
    """The draft-extend runner's NativeSparseAttnBackend, or the draft runner's multi-step backend."""
    scenario = step.scenario_for(kind)
    model_runner = module.build_model_runner(
        device=torch.device(device),
        page_size=scenario.page_size,
        context_len=scenario.context_len,
        index_topk=scenario.index_topk,
        num_draft_tokens=step.num_draft_tokens,
        req_to_token=scenario.req_to_token(device),
    )
    if kind == "draft_extend":
        return module.NativeSparseAttnBackend(model_runner)
    return module.NativeSparseAttnMultiStepBackend(model_runner, topk=1, speculative_num_steps=step.num_steps)


class SpecRunner:
    """One graph runner of `kind`, from `source`, over `backend`; every captured bs captured.

    events: what the runner did, in order ("capture", "record" / "forward", prefixed "captured "
    inside the graph capture, "replay", "replay call: N launches").

    offer_recorder=False: the backend's recorder is hidden from the runner (the same runner with the
    metadata eager); metadata_free=True: no recorder either, and the runner is told every captured bs
    was recorded, so its replay makes no replay call (graphs holding no metadata, for timing)."""

    def __init__(self, kind: str, source: str, filename: str, module, backend, step: Step, mirror=None, device="cpu",
                 offer_recorder: bool = True, metadata_free: bool = False):
        self.kind, self.step, self.module = kind, step, module
        self.scenario = step.scenario_for(kind)
        self.device = torch.device(device)
        self.on_cpu = self.device.type == "cpu"
        self.state = _GraphState(self.on_cpu)
        self.events: list[str] = []
        self.warmups: list[bool] = []  # per warm-up run: did the recorder write (candidate only)
        self._mirror = mirror  # the candidate's warm-up log, replayed eagerly here (reference only)
        self.backend = backend
        self._offer_recorder = offer_recorder and not metadata_free
        self._metadata_free = metadata_free
        self.pool = SimpleNamespace(handle=None)
        namespace = _runner_globals(module.ForwardMode, _cpu_torch(self.state) if self.on_cpu else torch, self.pool)
        cls = runner_class(source, filename, kind, namespace)
        # 0.5.14+ capture in capture_one_shape through a graph backend and replay in execute.
        self.graph_backend = _GraphBackend(namespace["torch"], self.pool) if hasattr(cls, "capture_one_shape") else None
        self.runner = cls.__new__(cls)
        self.runner.__dict__.update(self._attributes())
        backend.init_cuda_graph_state(self.runner.max_bs, self.runner.max_num_token)  # as __init__ does
        for bs in reversed(self.runner.capture_bs):  # largest first, as upstream's capture()
            if self.graph_backend is not None:
                self.runner.capture_one_shape(bs, None)
                continue
            graph, out = self.runner.capture_one_batch_size(bs, None)
            self.runner.graphs[bs], self.runner.output_buffers[bs] = graph, out

    @property
    def graphs(self) -> dict:
        """bs -> the runner's captured graph."""
        return self.graph_backend.graphs if self.graph_backend is not None else self.runner.graphs

    # What each runner's __init__ sets that its capture and replay read (sglang 0.5.6's values, one
    # rank: no DP attention, no torch.compile, no pdmux).
    def _attributes(self) -> dict:
        scenario, step, device = self.scenario, self.step, self.device
        capture_bs = sorted(scenario.capture_bs)
        mode = self.module.ForwardMode.DECODE if self.kind == "draft" else draft_extend_mode(self.module.ForwardMode)
        recorded = {(bs, mode) for bs in capture_bs} if self._metadata_free else None
        self.proxy = logged = _LoggedBackend(
            self.backend, self.events, self.state, self.on_cpu, self.warmups, self._offer_recorder, recorded
        )
        max_bs = capture_bs[-1]
        fill = 1  # NativeSparseAttnBackend.get_cuda_graph_seq_len_fill_value()
        per_bs = 1 if self.kind == "draft" else step.num_draft_tokens  # topk 1; num_steps + 1
        tokens = max_bs * per_bs
        spec_algorithm = SimpleNamespace(is_eagle=lambda: True, is_standalone=lambda: False)
        model_runner = SimpleNamespace(
            tp_group=SimpleNamespace(barrier=lambda: None),
            req_to_token_pool=None,
            token_to_kv_pool=None,
            spec_algorithm=spec_algorithm,
            model=SimpleNamespace(forward=self._model_forward),
            device_timer=None,  # 0.5.11+: no device timing
            model_config=SimpleNamespace(vocab_size=VOCAB_SIZE),  # 0.5.11+: the draft runner's input checks
            canary_manager=None,  # 0.5.13+: no canary checks
            server_args=SimpleNamespace(speculative_use_rejection_sampling=False),  # 0.5.14+
        )
        zeros = lambda *shape, dtype=torch.int64: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        attrs = dict(
            graphs={},
            output_buffers={},
            stream=None,
            capture_bs=capture_bs,
            max_bs=max_bs,
            max_num_token=tokens,
            num_tokens_per_bs=per_bs,
            speculative_num_steps=step.num_steps,
            topk=1,
            seq_len_fill_value=fill,
            disable_padding=False,
            require_gathered_buffer=False,
            require_mlp_tp_gather=False,
            require_mlp_sync=False,
            require_attn_tp_gather=False,
            tp_size=1,
            dp_size=1,
            enable_pdmux=False,
            deepep_adapter=SimpleNamespace(capture=lambda **kw: None, replay=lambda: None),
            global_num_tokens_gpu=None,
            global_num_tokens_for_logprob_gpu=None,
            model_runner=model_runner,
            seq_lens_cpu=torch.full((max_bs,), fill, dtype=torch.int32),
            req_pool_indices=zeros(max_bs, dtype=torch.int32),
            seq_lens=torch.full((max_bs,), fill, dtype=torch.int32, device=device),
            positions=zeros(tokens),
            mrope_positions=zeros(3, tokens),
            backend=self.graph_backend,  # 0.5.14+
            # 0.5.14+: the draft-extend replay publishes a read-done event for the scheduler
            device_module=SimpleNamespace(Event=_CpuEvent if self.on_cpu else torch.cuda.Event),
        )
        if self.kind == "draft":
            model_runner.draft_attn_backend = logged
            attrs.update(
                draft_attn_backend=logged,  # 0.5.11+: the runner's own backend
                # 0.5.12+ undo draft_forward's position steps after each run
                eagle_worker=SimpleNamespace(draft_forward=self._draft_forward, speculative_num_steps=step.num_steps),
                extend_seq_lens_cpu=[fill] * max_bs,
                extend_seq_lens=torch.ones(max_bs, dtype=torch.int32, device=device),
                input_ids=zeros(tokens),
                out_cache_loc=zeros(tokens * step.num_steps),
                topk_p=zeros(max_bs, 1, dtype=torch.float32),
                topk_index=zeros(max_bs, 1),
                hidden_states=zeros(max_bs, HIDDEN_SIZE, dtype=torch.float32),
                temperatures=torch.ones(max_bs, 1, dtype=torch.float32, device=device),  # 0.5.14+
            )
        else:
            model_runner.attn_backend = logged
            attrs.update(
                draft_extend_attn_backend=logged,  # 0.5.11+: the runner's own backend
                eagle_worker=SimpleNamespace(draft_extend_attn_backend=logged),
                forward_mode=draft_extend_mode(self.module.ForwardMode),
                padded_static_len=-1,
                extend_seq_lens_cpu=[per_bs] * max_bs,
                extend_seq_lens=torch.ones(max_bs, dtype=torch.int32, device=device),
                accept_length=torch.full((max_bs,), per_bs, dtype=torch.int32, device=device),
                # 0.5.11+ keep the accepted drafts (accept_length - 1) beside it (0.5.12: "correct")
                num_accepted_drafts=torch.full((max_bs,), per_bs - 1, dtype=torch.int32, device=device),
                num_correct_drafts=torch.full((max_bs,), per_bs - 1, dtype=torch.int32, device=device),
                input_ids=zeros(tokens),
                out_cache_loc=torch.ones(tokens, dtype=torch.int64, device=device),
                hidden_states=zeros(tokens, HIDDEN_SIZE, dtype=torch.float32),
                next_token_logits_buffer=zeros(max_bs, VOCAB_SIZE, dtype=torch.float32),
            )
        attrs = release_names(self.module, attrs)
        # 0.5.10+ keep the static inputs on self.buffers (the same tensors: one set of buffers).
        attrs["buffers"] = SimpleNamespace(
            global_num_tokens_gpu=None,
            global_num_tokens_for_logprob_gpu=None,
            rids_int=None,  # 0.5.13+: no request ids, no bootstrap rooms (one rank, no disaggregation)
            bootstrap_room_ids_int=None,
            draft_probs=None,  # 0.5.14+: no rejection sampling
            **{name: value for name, value in attrs.items() if isinstance(value, torch.Tensor)},
        )
        return attrs

    # -- the model stand-ins: read the metadata, as the attention kernels do ----------------------

    def _steps(self):
        return getattr(self.backend, "attn_backends", [self.backend])

    def _read_metadata(self, bs: int, out: torch.Tensor) -> None:
        out.copy_(sum(consumer(b.decode_cuda_graph_metadata[bs]) for b in self._steps()))

    def _run_model(self, bs: int, out: torch.Tensor) -> None:
        capturing = self.state.in_capture()
        self.events.append(("captured " if capturing else "") + "forward")
        if not capturing and self._mirror is not None and next(self._mirror, False):
            self._warmup_launch(bs)
        self._read_metadata(bs, out)
        if capturing and self.on_cpu:
            self.state.capturing.work.append(lambda: self._read_metadata(bs, out))

    def _accepted(self) -> torch.Tensor:
        """The runner's static accept_length buffer, under the release's name."""
        return getattr(self.runner, release_names(self.module, {"accept_length": None}).popitem()[0])

    def _warmup_launch(self, bs: int) -> None:
        """What the candidate's warm-up launched: the replay call on the capture-time static inputs."""
        r = self.runner
        if self.kind == "draft":
            batch = _Namespace(
                req_pool_indices=r.req_pool_indices[:bs], seq_lens=r.seq_lens[:bs],
                seq_lens_cpu=r.seq_lens_cpu[:bs], spec_info=None,
            )
            self.backend.init_forward_metadata_replay_cuda_graph(batch, bs)
            return
        self.backend.init_forward_metadata_replay_cuda_graph(
            bs=bs,
            req_pool_indices=r.req_pool_indices,
            seq_lens=r.seq_lens,
            seq_lens_sum=int(r.seq_lens_cpu[:bs].sum()),
            encoder_lens=None,
            forward_mode=r.forward_mode,
            spec_info=_Namespace(**release_names(self.module, dict(accept_length=self._accepted()[:bs]))),
            seq_lens_cpu=r.seq_lens_cpu,
        )

    def _draft_forward(self, forward_batch):
        bs = forward_batch.batch_size
        out = torch.zeros(bs, dtype=torch.int64, device=self.device)
        self._run_model(bs, out)
        # (parent_list, top_scores_index, draft_tokens): the runner slices each to raw_bs; 0.5.14+
        # also the draft probabilities (None without rejection sampling)
        outputs = (out.view(bs, 1), out.view(bs, 1), out.view(bs, 1))
        return outputs + (None,) if self.graph_backend is not None else outputs

    def _model_forward(self, input_ids, positions, forward_batch):
        bs = forward_batch.batch_size
        read = torch.zeros((), dtype=torch.int64, device=self.device)
        self._run_model(bs, read)
        logits = torch.zeros(bs, VOCAB_SIZE, dtype=torch.float32, device=self.device)
        hidden = torch.zeros(bs, HIDDEN_SIZE, dtype=torch.float32, device=self.device)
        return _Namespace(next_token_logits=logits, hidden_states=hidden, read=read)

    # -- a scheduler step -------------------------------------------------------------------------

    def forward_batch(self, batch) -> _Namespace:
        """What the speculative worker hands the runner for `batch` (harness.runner.Batch)."""
        raw_bs, device = batch.raw_bs, self.device
        seq_lens = batch.seq_lens.to(torch.int32)
        seq_lens_cpu = seq_lens.cpu()
        common = dict(
            batch_size=raw_bs,
            req_pool_indices=batch.req_pool_indices,
            seq_lens=seq_lens,
            seq_lens_cpu=seq_lens_cpu,
            seq_lens_sum=int(seq_lens_cpu.sum()),
            global_num_tokens_cpu=None,
            forward_mode=self.module.ForwardMode.DECODE if self.kind == "draft" else self.runner.forward_mode,
        )
        if self.kind == "draft":
            return _Namespace(
                **common,
                out_cache_loc=torch.zeros(raw_bs * self.step.num_steps, dtype=torch.int64, device=device),
                positions=torch.zeros(raw_bs, dtype=torch.int64, device=device),
                spec_info=_Namespace(
                    topk_p=torch.zeros(raw_bs, 1, device=device),
                    topk_index=torch.zeros(raw_bs, 1, dtype=torch.int64, device=device),
                    hidden_states=torch.zeros(raw_bs, HIDDEN_SIZE, device=device),
                ),
            )
        tokens = raw_bs * self.runner.num_tokens_per_bs
        accept = batch.accept_length.to(torch.int32)
        return _Namespace(
            **common,
            input_ids=torch.zeros(tokens, dtype=torch.int64, device=device),
            extend_seq_lens=accept,
            extend_seq_lens_cpu=accept.cpu().tolist(),
            out_cache_loc=torch.zeros(tokens, dtype=torch.int64, device=device),
            positions=torch.zeros(tokens, dtype=torch.int64, device=device),
            spec_info=_Namespace(
                hidden_states=torch.zeros(tokens, HIDDEN_SIZE, device=device),
                num_accepted_drafts=accept - 1,  # 0.5.11
                num_correct_drafts=accept - 1,  # 0.5.12+
                **release_names(self.module, dict(accept_length=accept)),
            ),
        )

    def replay(self, batch) -> int:
        """The runner's replay of one scheduler batch; returns the captured bs it replayed."""
        self.events.append("replay")
        (self.runner.execute if self.graph_backend is not None else self.runner.replay)(self.forward_batch(batch))
        return self.runner.capture_bs[bisect.bisect_left(self.runner.capture_bs, batch.raw_bs)]


# -- verdicts -----------------------------------------------------------------------------------

# What a recording runner does for each captured bs, executed: the backend's capture, the recorder
# before the model in both warm-up runs and in the captured run; and at each replay, no replay call.
RECORDING = ["capture", "record", "forward", "record", "forward", "captured record", "captured forward"]


@dataclass
class RunnerVerdict:
    """One runner of one release (or stage) against its reference, on one step configuration."""

    kind: str
    records: bool = False  # every captured bs recorded (RECORDING) and no replay made the replay call
    declines: str | None = None  # the runner offered the capture, the backend left it to the replay call: why
    replays: int = 0
    exact: int = 0  # replays after which every backend buffer equals the reference's, whole
    failure: str | None = None  # the first mismatch ("replay r: buffer[index]: expected, got") or problem
    events: list[str] | None = None
    notes: list[str] | None = None  # what the release's own code said while it ran (e.g. a fallback)

    @property
    def replay_launches(self) -> list[int]:
        """Triton launches of each replay call the runner made (none where everything recorded)."""
        return [int(e.split(": ")[1].split()[0]) for e in self.events or () if e.startswith("replay call")]

    @property
    def ok(self) -> bool:
        return self.failure is None and self.exact == self.replays

    def describe(self) -> str:
        how = "records" if self.records else f"declines ({self.declines})" if self.declines else "eager"
        tail = f"; {self.failure}" if self.failure else ""
        return f"{self.kind}: {how}, {self.exact}/{self.replays} replays bit-exact{tail}"


def _capture_events(events: list[str]) -> list[list[str]]:
    """The events of each captured bs (from one "capture" to the next), before the first replay."""
    first_replay = events.index("replay") if "replay" in events else len(events)
    out: list[list[str]] = []
    for event in events[:first_replay]:
        if event == "capture":
            out.append([])
        out[-1].append(event)
    return out


def declined_because(backend, bs: int, forward_mode) -> str:
    """Why a (step's) backend left captured `bs` to its replay call, read off what it captured, in
    its recorder's order: no fused launch for the mode, flashmla_kv's host-computed metadata, a
    DeepGEMM schedule (harness.upstream._declined_because words them alike; not imported: it needs
    git, which a GPU host running bench.spec_step lacks)."""
    launch = getattr(backend, "_fused_launch", None)
    if launch is not None and launch(bs, forward_mode) is None:
        return "this release's replay of the mode is not fused"
    metadata = backend.decode_cuda_graph_metadata[bs]
    if getattr(metadata, "flashmla_metadata", None) is not None:
        return "flashmla_kv computes its metadata on the host in the replay call"
    if hasattr(metadata, "paged_mqa_schedule_metadata"):
        return "on CUDA its replay call refreshes DeepGEMM's paged-MQA schedule from the lengths"
    return "unknown"


def _verdict(kind: str, runner: SpecRunner) -> RunnerVerdict:

    events = runner.events
    captures = _capture_events(events)
    replays = events[events.index("replay"):] if "replay" in events else []
    replay_calls = [e for e in replays if e.startswith("replay call")]
    offered = any("record" in e for c in captures for e in c)
    verdict = RunnerVerdict(kind, events=events)
    if captures and all(c == RECORDING for c in captures) and not replay_calls:
        verdict.records = True
    elif offered:
        step = runner._steps()[0]
        bs = runner.runner.capture_bs[-1]
        mode = runner.module.ForwardMode.DECODE if kind == "draft" else runner.runner.forward_mode
        if all(c == RECORDING for c in captures) and replay_calls:
            verdict.declines = declined_because(step, bs, mode)
        else:
            verdict.failure = f"{kind} runner: offers the recorder, but runs {', '.join(events[:12])}"
    return verdict


def compare_runners(kind: str, reference: tuple, candidate: tuple, step: Step, device="cpu") -> RunnerVerdict:
    """Reference and candidate runner of `kind` in lockstep over the step's batches, whole buffers
    compared after every replay. Each side is (runner file text, filename, backend module)."""
    (ref_source, ref_name, ref_module), (source, name, module) = reference, candidate
    cand = SpecRunner(kind, source, name, module, build_backend(module, kind, step, device), step, device=device)
    ref = SpecRunner(
        kind, ref_source, ref_name, ref_module, build_backend(ref_module, kind, step, device), step,
        mirror=iter(cand.warmups), device=device,
    )
    replays, exact, failure = 0, 0, None
    for r, batch in enumerate(cand.scenario.batches(device)):
        ref.replay(batch)
        cand.replay(batch)
        replays += 1
        mismatch = first_mismatch(backend_state(ref.backend), backend_state(cand.backend))
        if mismatch is None:
            exact += 1
        elif failure is None:
            failure = f"{cand.scenario.name} replay {r}: {mismatch}"
    verdict = _verdict(kind, cand)
    verdict.replays, verdict.exact = replays, exact
    verdict.failure = verdict.failure or failure
    return verdict


# -- a release's real runners -------------------------------------------------------------------

# The step configuration each release's runners are executed on: 3 draft steps (D = 4), page size
# 64, a table wider than any length, three captured bs (padding and stale slots in every replay).
RELEASE_STEP = Step(
    Scenario(num_draft_tokens=4, page_size=64, index_topk=48, context_len=192, capture_bs=(1, 3, 4),
             replays=4, seed=22),
    num_steps=3,
)


def release_runners(before: tuple, after: tuple, step: Step = RELEASE_STEP) -> dict[str, RunnerVerdict]:
    """Both runners of one release, each side (tree, module) as harness.upstream derives and loads
    them: the unpatched real runner around the unpatched real backend is the reference, the patched
    pair the candidate."""
    from .releases import REPO_PREFIX

    out = {}
    for kind in RUNNERS:
        path = REPO_PREFIX + wheel_path(kind)
        sides = [(tree[path].decode(), path, module) for tree, module in (before, after)]
        out[kind] = compare_runners(kind, *sides, step)
    return out


def recording_line(v: RunnerVerdict) -> str:
    """A matrix row's "runners recording" for one runner: "records", "declines: why", or the problem."""
    exact = f"{v.exact}/{v.replays} replays bit-exact"
    if not v.ok:
        return f"FAILS: {v.failure or exact}"
    launches = sorted(set(v.replay_launches))
    eager = f"eager replay call: {'/'.join(map(str, launches))} Triton launch(es)"
    if launches == [0]:
        eager += ", none of them the series' fused launch"
    notes = "".join(f"; {note}" for note in v.notes or ())
    if v.records:
        return f"records ({exact}; no replay call{notes})"
    if v.declines:
        return f"declines: {v.declines} ({exact}; {eager}{notes})"
    return f"does not offer the recorder ({exact}; {eager}{notes})"


# The mode each runner replays: where a matrix row's per-mode `runner` carries its line.
RUNNER_MODE = {"draft_extend": "draft_extend", "draft": "decode"}
RUNNER_NAMES = {"draft_extend": "draft-extend runner", "draft": "draft runner (multi-step backend)"}


def record_in_row(runner_row: dict, before: tuple, after: tuple) -> str | None:
    """Run both runners of a release and put each one's line in the row's mode, under "runners
    recording" (harness.upstream.run_release's hook). Returns the problems, if any, in one line."""
    import contextlib
    import io

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):  # the release's own warnings (a JIT fallback)
            verdicts = release_runners(before, after)
    except Exception as e:  # the runners' code could not be cut out or run: say so in the row
        return f"speculative runners: {type(e).__name__}: {e}"
    fallback = "falling back to individual copies" in printed.getvalue()
    problems = []
    for kind, verdict in verdicts.items():
        if fallback and kind == "draft":
            verdict.notes = ["sglang's JIT fused metadata copy is not built here: its own fallback copies ran"]
        line = recording_line(verdict)
        if RUNNER_MODE[kind] in runner_row:
            runner_row[RUNNER_MODE[kind]]["runners recording"] = {RUNNER_NAMES[kind]: line}
        if not verdict.ok:
            problems.append(f"{RUNNER_NAMES[kind]}: {line}")
    return "; ".join(problems) or None
