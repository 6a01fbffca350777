"""The benchmark operator of NSA's CUDA-graph metadata replay, in the manner of tritonbench: one registry of
inputs, the implementations measured on them (one marked baseline) and the metrics. Every benchmark is a
view of it, choosing a set of inputs, implementations and metrics:

    bench/test_replay.py   pytest-benchmark, one input after another (`make bench`; the stored runs,
                           compared with `make bench-compare`)
    bench/record.py        the benchmark of record: every implementation of an input interleaved round
                           by round, median and quartiles (what REPORT.md and README quote)
    bench/modes.py         decode and draft extend
    bench/graph_demo.py    the graph runner's step (its capture list and table come from GRAPH here)

Implementations (`implementations(mode)`), by role:
    baseline   sglang 0.5.6's whole backend replay: the reference every stage is bit-exact against
    stage      every later stage of the series (harness.stages), its whole backend replay
    launch     the final stage's launch object, called bare (its input checks + Triton's launcher)
    peer       upstream 0.5.23's fused kernel of the mode as it really ships (`-static`: the table's
               width as max length), and given the batch's max read on the host first (`-hostmax`, not
               timed); draft extend: `-v1` (our semantics) and `-v2-static` (as 0.5.23 ships its v2
               mode: more rows, so listed, not compared)
    control    `nop-args`: an empty kernel with our kernel's parameters, launched on our grid with our
               arguments (tritonbench's nop_with_args: what any launch of this signature pays);
               `nop-1`: an empty one-argument launch (any Python Triton launch's host floor)
    variant    `final-twin`: the final launch on the same batch in a table 2048 columns wider (the same
               bytes; the rows no longer a multiple of 640 KiB apart: the row stride, notebook/)
Metrics (METRICS): host µs of one call with the queue drained before it (what the scheduler thread
pays), GPU µs (triton.testing.do_bench median), and the floor ratio (GPU µs / the memory floor:
Config.bytes_moved() at the device-to-device copy bandwidth measured in the same run).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

from harness.env import triton_device

DEVICE = triton_device()  # before triton is imported
GPU = DEVICE == "cuda"

import torch  # noqa: E402

from bench.inputs import Config, launch_buffers, prepared_runner  # noqa: E402
from bench.peers import empty_launch, load_upstream_kernels, mode_peers, nop_with_args  # noqa: E402
from bench.timing import captured_launch, interleaved_host_us, interleaved_kernel_us, launch_kwargs  # noqa: E402
from harness import stages  # noqa: E402

TARGET_VERIFY, DECODE, DRAFT_EXTEND = "target_verify", "decode", "draft_extend"
WIDE, NARROW = 163840, 65600  # DeepSeek V3.2's 160k context; the 64k-context buffer of earlier runs
TWIN_EXTRA_COLUMNS = 2048  # 8 KiB of int32: off every multiple of 640 KiB that 163840 and 65600 are near

METRICS = {
    "host_us": "host µs of one call, the queue drained before it (median [q1, q3] of interleaved rounds)",
    "kernel_us": "GPU µs of one call (triton.testing.do_bench median per round, rounds interleaved)",
    "floor_ratio": "GPU µs / the memory floor (bytes the replay must move / copy bandwidth of the same run)",
}


def _c(bs, D=4, page=64, maxlen=65536, width=WIDE, profile="equal", mode=TARGET_VERIFY) -> Config:
    return Config(bs, D, page, maxlen, context_len=width, profile=profile, mode=mode)


# The one registry of inputs: view name -> inputs on a GPU; `<view>-cpu`: the few the interpreter runs.
INPUTS: dict[str, list[Config]] = {
    # bs x D x page size x max length, lengths spread over [max / 2, max - D], a 64k-context buffer
    "suite": [Config(*c) for c in itertools.product((1, 8, 32, 128, 256), (2, 4), (1, 64), (4096, 65536))],
    "suite-cpu": [Config(*c, context_len=320) for c in itertools.product((1, 8), (2,), (1, 64), (256,))],
    # the bs sweep at the wide table, full-width lengths in three profiles, D, page size, the narrow table, 4k
    "record": ([_c(bs) for bs in (1, 8, 32, 64, 128, 256)]
               + [_c(bs, maxlen=WIDE, profile=p) for bs in (32, 128) for p in ("equal", "uniform", "one-long")]
               + [_c(128, D=D) for D in (1, 2, 8)]
               + [_c(bs, page=1) for bs in (32, 128)]
               + [_c(bs, width=NARROW) for bs in (128, 256)]
               + [_c(128, maxlen=4096)]),
    "record-cpu": [Config(2, 2, 64, 256, context_len=320, profile="uniform"),
                   Config(3, 1, 1, 300, context_len=320, profile="one-long")],
    # sglang's graph-runner buffers at the wide table, lengths uniform up to 64k
    "modes": [_c(bs, maxlen=65536, profile="uniform", mode=m) for m in (DECODE, DRAFT_EXTEND) for bs in (1, 32, 128, 256)],
    "modes-cpu": [_c(2, maxlen=256, width=320, profile="uniform", mode=m) for m in (DECODE, DRAFT_EXTEND)],
}
# The graph runner's step (bench.graph_demo): sglang's capture list with speculative decoding
# (ServerArgs._generate_cuda_graph_batch_sizes) up to 256, the wide table, lengths uniform in [1, 64k].
GRAPH = dict(capture_bs=tuple(list(range(1, 9)) + list(range(10, 33, 2)) + list(range(40, 65, 4))
                              + list(range(72, 257, 8))),
             width=WIDE, draft=4, page_size=64, topk=2048, max_len=65536)


def inputs(view: str) -> list[Config]:
    """The inputs of `view` on this machine (a GPU's full set, or the interpreter's few)."""
    return INPUTS[view if GPU else f"{view}-cpu"]


def final_launch(runner, mode: str, bs: int):
    """The final stage's launch object the backend built at capture for (`mode`, `bs`): the one place that
    knows where a backend keeps them."""
    backend = runner.backend
    if hasattr(backend, "cuda_graph_metadata_launches"):  # one (bs, mode) -> launch map (patch 0008 on)
        return backend.cuda_graph_metadata_launches[bs, mode]
    if hasattr(backend, f"{mode}_launches"):  # one bs -> launch dict per mode (patches 0005-0007)
        return getattr(backend, f"{mode}_launches")[bs]
    raise LookupError(f"the final stage's backend keeps no {mode} launches: update bench.replay_operator.final_launch")


class Prepared:
    """One input made ready: a runner per stage (built on first use), the final launch, the peers."""

    def __init__(self, config: Config, upstream=None):
        self.config, self.upstream, self._runners = config, upstream, {}

    def runner(self, stage: str):
        if stage not in self._runners:
            self._runners[stage] = prepared_runner(stages.load(stage), self.config, DEVICE)
        return self._runners[stage]

    def replay(self, stage: str) -> Callable:
        runner, bs = self.runner(stage), self.config.bs
        return lambda: runner.replay_metadata(bs)

    @cached_property
    def launch(self):
        return final_launch(self.runner(stages.final()), self.config.mode, self.config.bs)

    def launch_call(self) -> Callable:
        launch = self.launch
        return lambda: launch(*launch.static_inputs)

    def nop_args(self) -> Callable | None:
        if not GPU:  # the interpreter launches through another path: no JITFunction.run to capture
            return None
        jit_fn, args, kwargs = captured_launch(self.launch_call())
        nop, kwargs = nop_with_args(jit_fn), launch_kwargs(kwargs)
        return lambda: nop[self.launch.grid](*args, **kwargs)

    def twin(self) -> Callable | None:
        """Our launch on the same batch in buffers TWIN_EXTRA_COLUMNS wider (the source rows copied): the
        same bytes move, and only the distance between the rows differs."""
        if not GPU or self.config.mode != TARGET_VERIFY:
            return None
        c, runner = self.config, self.runner(stages.final())
        width, req_to_token = runner.backend.decode_cuda_graph_metadata[c.bs].page_table_1.shape[1], runner.backend.req_to_token
        buffers = launch_buffers(c.bs, c.D, c.page_size, width + TWIN_EXTRA_COLUMNS, DEVICE)
        wider = torch.zeros(req_to_token.shape[0], req_to_token.shape[1] + TWIN_EXTRA_COLUMNS, dtype=torch.int32,
                            device=DEVICE)
        wider[:, : req_to_token.shape[1]] = req_to_token
        seq_lens, pool = self.launch.static_inputs[:2]
        twin = type(self.launch)(buffers, wider, c.D, c.topk, seq_lens, pool)
        return lambda: twin(seq_lens, pool)

    def peers(self) -> dict[str, Callable]:
        if self.upstream is None:
            return {}
        c = self.config
        # on the final stage's captured buffers, beside its launch
        return mode_peers(self.upstream, self.runner(stages.final()), c.mode, c.bs, c.D, c.page_size, c.topk)


@dataclass(frozen=True)
class Impl:
    """One implementation: `build` gives its call on a prepared input, or None where it cannot run here."""

    name: str  # the key results are stored under
    role: str  # baseline, stage, launch, peer, control, variant
    label: str  # what a table header or a plot legend says
    metrics: tuple[str, ...]  # of "host_us", "kernel_us" (floor_ratio follows kernel_us)
    build: Callable[[Prepared], Callable | None]

    @property
    def baseline(self) -> bool:
        return self.role == "baseline"


PEER_LABELS = {
    "upstream-static": "upstream 0.5.23's kernel, bare call, as it ships (table width as max length)",
    "upstream-hostmax": "upstream 0.5.23's kernel, bare call, given the batch's max from the host",
    "upstream-v1": "upstream 0.5.23's draft-extend kernel, bare call, our semantics (v1)",
    "upstream-v2-static": "upstream 0.5.23's draft-extend kernel, bare call, as it ships (v2: all D rows)",
}
LABELS = {
    "final-launch": "final stage's launch object, bare call",
    "final-twin": "final launch, table 2048 columns wider",
    "nop-args": "empty kernel, our arguments and grid",
    "nop-1": "empty Triton launch, one argument",
    **PEER_LABELS,
}


def stage_label(stage: str) -> str:
    """A stage's legend: its name and patch number (baseline: sglang 0.5.6)."""
    names = stages.names()
    return "baseline (sglang 0.5.6)" if stage == stages.BASELINE else f"{stage} ({names.index(stage):04d})"


def label(name: str) -> str:
    return LABELS.get(name) or (stage_label(name) + ": whole replay" if name in stages.names() else name)


def implementations(mode: str = TARGET_VERIFY) -> list[Impl]:
    """Every implementation of `mode`, baseline first."""
    impls = [Impl(s, "baseline" if s == stages.BASELINE else "stage", label(s), ("host_us",),
                  lambda p, s=s: p.replay(s)) for s in stages.names()]
    impls += [
        Impl("final-launch", "launch", label("final-launch"), ("host_us", "kernel_us"), Prepared.launch_call),
        Impl("final-twin", "variant", label("final-twin"), ("kernel_us",), Prepared.twin),
        Impl("nop-args", "control", label("nop-args"), ("host_us", "kernel_us"), Prepared.nop_args),
        Impl("nop-1", "control", label("nop-1"), ("host_us",), lambda p: empty_launch(DEVICE)),
    ]
    peer_names = {TARGET_VERIFY: ("upstream-static", "upstream-hostmax"), DECODE: ("upstream-static", "upstream-hostmax"),
                  DRAFT_EXTEND: ("upstream-v1", "upstream-v2-static")}[mode]
    impls += [Impl(n, "peer", LABELS[n], ("host_us", "kernel_us"), lambda p, n=n: p.peers().get(n)) for n in peer_names]
    return impls


def upstream():
    """Upstream 0.5.23's metadata kernels, or None, and the note saying which (or why not)."""
    return load_upstream_kernels()


def measure(config: Config, impls: list[Impl], upstream_module, rounds: dict, bandwidth: float | None) -> dict:
    """One row: every impl of `impls` that runs here, each metric interleaved round by round over them.
    rounds: {"host_us": (rounds, warmup), "kernel_us": rounds}."""
    prepared = Prepared(config, upstream_module)
    calls = {impl: impl.build(prepared) for impl in impls}
    runs = {impl: call for impl, call in calls.items() if call is not None}
    host = {i.name: c for i, c in runs.items() if "host_us" in i.metrics}
    kernel = {i.name: c for i, c in runs.items() if "kernel_us" in i.metrics and GPU}
    host_rounds, warmup = rounds["host_us"]
    row = dict(id=config.id, mode=config.mode, bs=config.bs, D=config.D, page_size=config.page_size,
               maxlen=config.maxlen, width=config.context_len, profile=config.profile, bytes=config.bytes_moved(),
               floor_us=config.floor_us(bandwidth) if bandwidth and config.mode == TARGET_VERIFY else None,
               skipped=[i.name for i, c in calls.items() if c is None],
               host=interleaved_host_us(host, host_rounds, warmup=warmup) if host else {},
               kernel=interleaved_kernel_us(kernel, rounds["kernel_us"]) if kernel else {})
    if row["floor_us"]:
        row["floor_ratio"] = {name: x["us"] / row["floor_us"] for name, x in row["kernel"].items() if name != "nop-args"}
    return row


# Names earlier runs stored, read as today's (runs saved before the operator named every implementation once).
OLD_NAMES = {"host": {"final-replay": "{final}", "final": "{final}", "empty-launch": "nop-1"},
             "kernel": {"final": "final-launch"}}


def normalized(row: dict, final_stage: str) -> dict:
    """`row` of a saved run with today's implementation names (the final stage's replay under its stage's name)."""
    out = dict(row)
    for metric, renames in OLD_NAMES.items():
        out[metric] = {renames.get(name, name).format(final=final_stage): x for name, x in row.get(metric, {}).items()}
    return out
