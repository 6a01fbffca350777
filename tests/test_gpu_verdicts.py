"""bench.gpu_verdicts' CPU-independent parts: it imports, its sync check covers every mode, and it flags a syncing final stage."""

from bench import gpu_verdicts
from harness import stages
from harness.runner import MODES


def test_sync_check_covers_every_mode_with_a_padded_replay():
    for mode in MODES:
        scenario = gpu_verdicts.sync_scenario(mode)
        assert scenario.mode == mode
        batches = list(scenario.batches())
        runner = scenario.runner(stages.load(stages.final()))
        runner.replay(batches[0])
        assert runner.prepare(batches[1]) in scenario.capture_bs


def test_final_stage_syncs_names_the_modes_that_synced():
    final = stages.final()
    clean = {mode: {final: "no device sync", stages.BASELINE: "syncs: x"} for mode in MODES}
    assert gpu_verdicts.final_stage_syncs(clean) == []
    clean["decode"][final] = "syncs: called a synchronizing CUDA operation"
    assert gpu_verdicts.final_stage_syncs(clean) == ["decode: syncs: called a synchronizing CUDA operation"]
