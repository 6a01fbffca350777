"""The wiring patch on the REAL cuda_graph_runner.py of releases: its capture and replay code, executed."""

import pytest

from harness import stages
from harness.releases import Derivation
from harness.scenarios import matrix
from harness.series import Series
from harness.upstream import RECORDING, graph_runner_verdict

# The oldest release (no attn_backend local, static inputs on self), the reference and the newest.
RELEASES = ("0.5.5", "0.5.6", "0.5.9")


@pytest.fixture(scope="module")
def trees():
    """Per release: (unpatched files, files after the whole series)."""
    with Derivation(Series()) as derivation:
        out = {}
        for version in RELEASES:
            applied = derivation.derive(version)
            out[version] = derivation.files(derivation.base_commit(version)), derivation.files(applied[-1].commit)
        return out


@pytest.mark.parametrize("version", RELEASES)
def test_patched_real_runner_records_and_replay_launches_nothing(trees, version):
    final = stages.load(stages.final())
    assert graph_runner_verdict(trees[version][1], final, matrix()[0]) == (True, None)


@pytest.mark.parametrize("version", RELEASES)
def test_unpatched_real_runner_never_records(trees, version):
    final = stages.load(stages.final())
    assert graph_runner_verdict(trees[version][0], final, matrix()[0]) == (False, None)


def test_recording_is_the_three_runs_in_order():
    assert RECORDING.count("record") == 2 and RECORDING.index("captured record") < RECORDING.index("captured forward")
