"""The backend's recorder outside a capture (CPU): an eager warm-up launch on the static inputs, marking nothing."""

import pytest
import torch

from harness import stages
from harness.compare import captured_state, first_mismatch
from harness.cuda_graph import recorder
from harness.runner import MODES
from harness.scenarios import Scenario

# The recorder's eager semantics, on CPU tensors through the interpreter (the scenario's batches are
# CPU tensors); a real capture on the GPU is tests/test_graph_capture.py's.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU tensors; the GPU capture: test_graph_capture")

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


@pytest.mark.parametrize("mode", FUSED_MODES)
def test_recorded_metadata_lists_what_the_last_captured_graph_holds(mode):
    # What sglang's patched runner skips the replay call for: (bs, mode) once a capture recorded
    # it, and no longer once a new capture of that bs is warming up (its graph holds nothing yet).
    scenario = _scenario(mode)
    runner = scenario.runner(stages.load(stages.final()))
    backend, bs, key = runner.backend, scenario.capture_bs[-1], (scenario.capture_bs[-1], runner.forward_mode)
    capturing = [False]
    record = recorder(backend, lambda: capturing[0])
    record(bs, runner.forward_mode)  # a warm-up run
    assert key not in backend.recorded_forward_metadata_cuda_graph
    capturing[0] = True
    record(bs, runner.forward_mode)  # the captured run
    capturing[0] = False
    assert key in backend.recorded_forward_metadata_cuda_graph
    assert (scenario.capture_bs[0], runner.forward_mode) not in backend.recorded_forward_metadata_cuda_graph
    backend.init_forward_metadata_capture_cuda_graph(
        bs, bs * runner.tokens_per_req, runner.req_pool_indices[:bs], runner.seq_lens[:bs], None,
        runner.forward_mode, runner._spec_info(bs),
    )
    record(bs, runner.forward_mode)  # the new capture's warm-up
    assert key not in backend.recorded_forward_metadata_cuda_graph
