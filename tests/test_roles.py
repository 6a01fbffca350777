"""Stage roles: what tests and tools ask for instead of spelling stage names."""

import pytest

from harness import stages
from harness.counters import count_replay
from harness.runner import MODES
from harness.scenarios import Scenario


def test_roles_follow_series_order():
    order = stages.names()
    assert order[0] == stages.BASELINE
    assert stages.patched() == order[1:] and stages.final() == order[-1]
    assert [stages.previous(s) for s in order[1:]] == order[:-1]


def test_baseline_has_no_previous_stage():
    with pytest.raises(ValueError, match="has no previous stage"):
        stages.previous(stages.BASELINE)


def test_touching_cache_agrees_with_a_fresh_trace(tmp_path, monkeypatch):
    # touching() is cached in build/ across runs; a cache that no longer matches the trace would move
    # stages out of the bit-exact matrix unseen. Traced afresh into an empty cache folder, it must agree.
    cached = {mode: stages.touching(mode) for mode in MODES}
    monkeypatch.setattr(stages, "TOUCHING_CACHE", tmp_path)
    stages._touching_by_mode.cache_clear()
    try:
        assert {mode: stages.touching(mode) for mode in MODES} == cached
        assert len(list(tmp_path.glob("*.json"))) == 1
    finally:
        stages._touching_by_mode.cache_clear()


@pytest.mark.parametrize("mode", MODES)
def test_the_series_changes_every_modes_replay(mode):
    # The series replaces every mode's replay: a trace that saw no stage touch one would be broken.
    assert stages.touching(mode), mode


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown mode 'prefill'"):
        stages.touching("prefill")


def _ops(stage: str, mode: str) -> dict:
    scenario = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, mode=mode, capture_bs=(4,))
    runner = scenario.runner(stages.load(stage))
    batch = next(iter(scenario.batches()))
    runner.replay(batch)  # warm-up
    bs = runner.prepare(batch)
    with count_replay([runner.seq_lens_cpu]) as counts:
        runner.replay_metadata(bs)
    return counts.as_dict()


@pytest.mark.parametrize(
    "stage, mode", [(s, m) for m in MODES for s in stages.patched() if s not in stages.touching(m)]
)
def test_untouched_modes_replay_the_same_ops(stage, mode):
    # touching() is derived from the source lines a replay executes; the op counts must agree
    assert _ops(stage, mode) == _ops(stages.previous(stage), mode)


def test_final_stage_ships_a_kernel_module():
    kernel = stages.kernel_module(stages.final())
    assert isinstance(kernel.CudaGraphMetadataLaunch, type)


def test_baseline_has_no_kernel_module():
    with pytest.raises(LookupError, match="no Triton kernel module"):
        stages.kernel_module(stages.BASELINE)

