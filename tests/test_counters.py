"""Deterministic per-replay signals: aten ops and Triton launches (no timings in CI)."""

import pytest

from harness import stages
from harness.verify import count_ops


@pytest.fixture(scope="module")
def counts():
    return {(s, bs): count_ops(s, bs) for s in stages.names() for bs in (1, 32, 128)}


def test_baseline_grows_with_bs(counts):
    # one torch.arange per request: the cost the series removes
    assert counts[stages.BASELINE, 128].device_kernels - counts[stages.BASELINE, 1].device_kernels == 127
    assert counts[stages.BASELINE, 32].ops["arange"] == 33


@pytest.mark.parametrize("stage", stages.patched())
def test_ops_do_not_grow_with_bs(counts, stage):
    assert counts[stage, 1].device_kernels == counts[stage, 32].device_kernels == counts[stage, 128].device_kernels
    assert counts[stage, 1].host_ops == counts[stage, 128].host_ops


@pytest.mark.parametrize("stage", stages.patched())
def test_at_most_one_triton_launch(counts, stage):
    assert counts[stage, 32].triton_launches <= 1


@pytest.mark.parametrize("stage", stages.touching("target_verify"))
def test_each_target_verify_patch_issues_fewer_kernels(counts, stage):
    # until none are left: a later patch may then cut host work instead
    kernels, before = counts[stage, 32].device_kernels, counts[stages.previous(stage), 32].device_kernels
    assert kernels < before or kernels == before == 0, (stage, before, kernels)


def test_final_stage_is_one_launch_and_reads_no_host_value(counts):
    c = counts[stages.final(), 128]
    assert c.triton_launches == 1 and c.device_kernels == 0
    # what is left are the shared prologue's slices (views, no kernel): no seq_lens_cpu.max().item()
    assert set(c.ops) == {"slice"}, c.ops


@pytest.mark.parametrize("bs", [1, 32, pytest.param(128, marks=pytest.mark.slow), pytest.param(256, marks=pytest.mark.slow)])
@pytest.mark.parametrize("mode", ["decode", "draft_extend"])  # target verify: the test above
def test_final_stage_is_one_launch_in_every_mode_at_every_bs(mode, bs):
    c = count_ops(stages.final(), bs, mode=mode)
    assert (c.triton_launches, c.device_kernels) == (1, 0), (mode, bs, c.ops)
    # no accept_length.tolist(), no seq_lens_cpu.max().item(): only the prologue's slices
    assert set(c.ops) <= {"slice"}, (mode, bs, c.ops)
