"""The wiring patch on the REAL cuda_graph_runner.py of releases, around the same tree's real backend:
their capture and replay code, cut out of the files and executed."""

import pytest

from harness import stages
from harness.releases import Derivation
from harness.scenarios import matrix
from harness.series import Series
from harness.upstream import RECORDING, graph_runner_verdict
from harness.upstream_exec import load_release

# The oldest release (no attn_backend local, static inputs on self), the reference and the newest.
RELEASES = ("0.5.5", "0.5.6", "0.5.9")


@pytest.fixture(scope="module")
def releases():
    """Per release: (tree, real module) unpatched and after the whole series."""
    stub = stages.load(stages.BASELINE)
    out = {}
    with Derivation(Series()) as derivation:
        for version in ("0.5.5", "0.5.6", "0.5.9"):
            release = derivation.table.release(version)
            commits = (derivation.base_commit(version), derivation.derive(version)[-1].commit)
            out[version] = [
                (tree, load_release(version, tree, stub, release.model_runner, label))
                for tree, label in ((derivation.files(c), label) for c, label in zip(commits, ("unpatched", "series")))
            ]
    return out


@pytest.mark.parametrize("version", ["0.5.5", "0.5.6"])
def test_patched_real_runner_records_and_skips_the_replay_call(releases, version):
    tree, module = releases[version][1]
    assert graph_runner_verdict(tree, module, matrix()[0]) == (True, None)


def test_real_backend_declines_recording_where_its_replay_refreshes_deepgemm(releases):
    # 0.5.9's replay call refreshes a DeepGEMM schedule from the lengths after the launch: the
    # patched runner offers the capture, the backend's recorder declines, the replay keeps launching.
    tree, module = releases["0.5.9"][1]
    records, problem = graph_runner_verdict(tree, module, matrix()[0])
    assert not records
    assert problem.endswith("captured record, captured forward, replay call, replay: 1 launches")


@pytest.mark.parametrize("version", ["0.5.5", "0.5.6", "0.5.9"])
def test_unpatched_real_runner_never_records(releases, version):
    tree, module = releases[version][0]
    assert graph_runner_verdict(tree, module, matrix()[0]) == (False, None)


def test_recording_is_the_three_runs_in_order():
    assert RECORDING.count("record") == 2 and RECORDING.index("captured record") < RECORDING.index("captured forward")
    assert "replay call" not in RECORDING and RECORDING[-1] == "replay: 0 launches"
