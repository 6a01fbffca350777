"""The final stage's launch recorded in a real CUDA graph: bit-exact against eager baseline (GPU only)."""

import pytest
import torch

from harness import stages
from harness.compare import captured_state, first_mismatch
from harness.cuda_graph import capture, consumer, warm_launches
from harness.scenarios import Scenario

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA graph capture needs a GPU: run this file, or python3 -m bench.graph_demo, on one",
)


@pytest.mark.parametrize("page_size", [1, 64])
def test_recorded_launch_is_bit_exact(page_size):
    final = stages.load(stages.final())
    scenario = Scenario(num_draft_tokens=3, page_size=page_size, index_topk=100, context_len=8192,
                        capture_bs=(1, 4, 16), replays=25, seed=page_size)
    warm_launches(final, scenario)
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
