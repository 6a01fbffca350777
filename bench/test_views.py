"""The benchmark views' own logic on CPU (Triton's interpreter): the benchmark of record writes its rows, the
report claims "faster" only where quartiles separate, inputs and floors."""

import json

import pytest
import torch

from bench import graph_demo, modes, record, report
from bench import replay_operator as op
from bench.conftest import GPU
from bench.inputs import PROFILES, Config, profile_lengths
from bench.machine import series_hash
from bench.peers import nop_with_args
from harness import stages

pytestmark = pytest.mark.skipif(GPU, reason="CPU checks; the GPU runs these scripts whole (bench/gpu_run.sh)")


def test_length_profiles_keep_the_longest_request_first():
    g = torch.Generator().manual_seed(0)
    for profile in PROFILES:
        lens = profile_lengths(profile, 16, 5000, g)
        assert lens[0] == 5000 and lens.max() == 5000 and lens.min() >= 1
    with pytest.raises(ValueError, match="unknown length profile"):
        profile_lengths("zipf", 4, 100, g)


def test_record_writes_rows_marked_not_comparable(tmp_path):
    out = tmp_path / "record.json"
    record.main(str(out))
    data = json.loads(out.read_text())
    assert data["environment"]["comparable"] is False
    assert [r["id"] for r in data["rows"]] == [c.id for c in record.SMOKE_INPUTS]
    assert data["environment"]["series_hash"] == series_hash()
    every_stage = set(stages.names())
    assert all(every_stage | {"final-launch", "nop-1"} <= set(r["host"]) for r in data["rows"])


def test_faster_only_where_quartiles_separate():
    def timed(median):
        return {"us": median, "q1": median - 1, "q3": median + 1}

    assert report.separated(timed(10), timed(13)) == -1
    assert report.separated(timed(10), timed(11.5)) == 0
    assert report.versus(timed(13), timed(10)) == "slower"


def test_floor_counts_the_same_bytes_for_every_profile():
    assert len({Config(8, 4, 64, 4096, context_len=8192, profile=p).bytes_moved() for p in PROFILES}) == 1


@pytest.mark.skipif(GPU, reason="the GPU plan is the benchmark itself: bench/gpu_run.sh runs it")
def test_modes_benchmark_writes_rows_and_a_table(tmp_path):
    out = tmp_path / "modes.json"
    modes.main(str(out))
    rows = json.loads(out.read_text())["rows"]
    final = stages.final()
    assert [(r["mode"], sorted(r["host"])) for r in rows] == [
        ("decode", sorted(["baseline", final, "final-alone"])), ("draft_extend", sorted(["baseline", final, "final-alone"]))]
    assert "| draft_extend | 2 |" in modes.table(str(out))


def test_every_view_takes_its_inputs_from_the_one_registry():
    assert record.SMOKE_INPUTS is op.INPUTS["record-cpu"]
    assert [c.mode for c in op.inputs("modes")] == ["decode", "draft_extend"]
    assert graph_demo.CAPTURE_BS == op.GRAPH["capture_bs"] and graph_demo.CONTEXT == op.GRAPH["width"]
    for view in ("suite", "record", "modes"):
        assert op.INPUTS[view] and op.INPUTS[f"{view}-cpu"], view


@pytest.mark.parametrize("mode", ["target_verify", "decode", "draft_extend"])
def test_one_baseline_every_stage_and_names_a_reader_understands(mode):
    impls = op.implementations(mode)
    assert [i.name for i in impls if i.baseline] == [stages.BASELINE]
    assert [i.name for i in impls if i.role in ("baseline", "stage")] == stages.names()
    assert {"nop-args", "nop-1", "final-launch"} <= {i.name for i in impls}
    assert len({i.name for i in impls}) == len(impls)
    for impl in impls:  # a legend says what the line is, not a key
        assert impl.label != impl.name and " " in impl.label, impl


def test_the_launch_control_has_our_kernels_parameters():
    """nop-args is an empty kernel with exactly the final kernel's parameters (names, constexprs)."""
    from triton.runtime.jit import JITFunction, KernelInterface

    def compiled(kernel):  # the interpreter wraps the function: the signature is the JITFunction's
        return kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn)

    kernels = [v for k, v in vars(stages.kernel_module(stages.final())).items()
               if k.endswith("_kernel") and isinstance(v, KernelInterface)]
    assert len(kernels) == 1, "the final kernel module holds one launched kernel"
    kernel = compiled(kernels[0])
    nop = compiled(nop_with_args(kernel))
    assert nop.arg_names == kernel.arg_names and len(nop.arg_names) > 10
    assert set(nop.constexprs) == set(kernel.constexprs) != set()


def test_runs_saved_under_earlier_names_read_as_todays():
    row = {"host": {"final-replay": 1, "empty-launch": 2, "baseline": 3}, "kernel": {"final": 4, "nop-args": 5}}
    assert op.normalized(row, "graph-runner") == {
        "host": {"graph-runner": 1, "nop-1": 2, "baseline": 3}, "kernel": {"final-launch": 4, "nop-args": 5}}
