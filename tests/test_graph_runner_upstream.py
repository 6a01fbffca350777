"""The wiring patch on the REAL cuda_graph_runner.py of releases, around the same tree's real backend:
their capture and replay code, cut out of the files and executed."""

import pytest

from harness.scenarios import matrix
from harness.upstream import RECORDING, graph_runner_verdict, runner_verdict


@pytest.mark.parametrize("version", ["0.5.5", "0.5.6"])
def test_patched_real_runner_records_and_skips_the_replay_call(real_releases, version):
    tree, module = real_releases[version][1]
    assert graph_runner_verdict(tree, module, matrix()[0]) == (True, None)


def test_real_backend_declines_recording_where_its_replay_refreshes_deepgemm(real_releases):
    # 0.5.9's replay call refreshes a DeepGEMM schedule from the lengths after the launch: the
    # patched runner offers the capture, the backend's recorder declines, the replay keeps launching.
    # A declining recorder is no problem: the cell says why, from what the backend captured.
    tree, module = real_releases["0.5.9"][1]
    verdict = runner_verdict(tree, module, matrix()[0])
    assert not verdict["records"] and verdict["problem"] is None
    assert "DeepGEMM's paged-MQA schedule" in verdict["declines"]
    assert verdict["events"][-4:] == ["captured record", "captured forward", "replay call", "replay: 1 launches"]


@pytest.mark.parametrize("version", ["0.5.5", "0.5.6", "0.5.9"])
def test_unpatched_real_runner_never_records(real_releases, version):
    tree, module = real_releases[version][0]
    assert graph_runner_verdict(tree, module, matrix()[0]) == (False, None)


def test_recording_is_the_three_runs_in_order():
    assert RECORDING.count("record") == 2 and RECORDING.index("captured record") < RECORDING.index("captured forward")
    assert "replay call" not in RECORDING and RECORDING[-1] == "replay: 0 launches"
