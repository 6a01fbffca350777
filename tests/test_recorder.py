"""The backend's recorder outside a capture (CPU): an eager warm-up launch on the static inputs, marking nothing."""

import pytest

from harness import stages
from harness.compare import captured_state, first_mismatch
from harness.runner import MODES
from harness.scenarios import Scenario

FUSED_MODES = MODES  # the final stage writes every mode in one launch


def _scenario(mode: str) -> Scenario:
    return Scenario(num_draft_tokens=3, page_size=64, index_topk=48, mode=mode, context_len=192,
                    capture_bs=(2, 4), replays=3, seed=5)


@pytest.mark.parametrize("mode", FUSED_MODES)
def test_record_outside_a_capture_is_the_replay_launch_and_marks_nothing(mode):
    final = stages.load(stages.final())
    scenario = _scenario(mode)
    recording, replaying = scenario.runner(final), scenario.runner(final)
    for batch in scenario.batches():
        bs = recording.prepare(batch)
        replaying.replay(batch)
        recording.backend.record_forward_metadata_cuda_graph(bs, recording.forward_mode)
        # the warm-up launch wrote what the replay call writes
        assert first_mismatch(captured_state(replaying.backend), captured_state(recording.backend)) is None
        recording.replay_metadata(bs)  # not recorded: the replay call still launches
        assert first_mismatch(captured_state(replaying.backend), captured_state(recording.backend)) is None
