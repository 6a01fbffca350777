"""The final stage's launch recorded in a real CUDA graph, every mode: bit-exact against eager baseline (GPU only)."""

import pytest
import torch

from harness import stages
from harness.compare import captured_state, first_mismatch
from harness.cuda_graph import capture, consumer
from harness.runner import MODES
from harness.scenarios import Scenario

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA graph capture needs a GPU: run this file, or python3 -m bench.graph_demo, on one",
)


def warm_up(module, scenario) -> None:
    """Compile every captured bs's launch on a scratch runner, as the graph runner's eager warm-up runs do
    (compiling inside a capture fails; warming the compared runner would write buffers baseline never wrote)."""
    scratch = scenario.runner(module, "cuda")
    for bs in scenario.capture_bs:
        scratch.backend.record_forward_metadata_cuda_graph(bs, scratch.forward_mode)
    torch.cuda.synchronize()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("page_size", [1, 64])
def test_recorded_launch_is_bit_exact(mode, page_size):
    final = stages.load(stages.final())
    scenario = Scenario(num_draft_tokens=3, page_size=page_size, index_topk=100, mode=mode, context_len=8192,
                        capture_bs=(1, 4, 16), replays=25, seed=page_size)
    warm_up(final, scenario)
    ref = scenario.runner(stages.load(stages.BASELINE), "cuda")
    got = scenario.runner(final, "cuda")
    graphs = {bs: capture(got, bs, with_metadata=True) for bs in scenario.capture_bs}
    for i, batch in enumerate(scenario.batches("cuda")):
        bs = ref.replay(batch)
        got.prepare(batch)
        got.replay_metadata(bs)  # recorded: launches nothing
        graph, out = graphs[bs]
        graph.replay()
        torch.cuda.synchronize()
        mismatch = first_mismatch(captured_state(ref.backend), captured_state(got.backend))
        assert mismatch is None, f"replay {i}: {mismatch}"
        assert int(out) == int(consumer(ref.backend.decode_cuda_graph_metadata[bs]))
