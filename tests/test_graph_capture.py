"""Stage `graph` inside a real CUDA graph: bit-exact against eager baseline (GPU only)."""

import os

import pytest
import torch

from harness.compare import captured_state, first_mismatch
from harness.scenarios import Scenario

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA graph capture needs a GPU: run this file, or python3 -m bench.graph_demo, on one",
)


def _modules():
    if os.environ.get("NSA_USE_BUILD"):  # a GPU machine without git: `python -m harness build` output
        from harness.loader import load_built

        return load_built()
    from harness import stages

    return {name: stages.load(name) for name in ("baseline", "graph")}


@pytest.mark.parametrize("page_size", [1, 64])
def test_recorded_launch_is_bit_exact(page_size):
    from bench.graph_demo import capture, consumer

    modules = _modules()
    scenario = Scenario(num_draft_tokens=3, page_size=page_size, index_topk=100, context_len=8192,
                        capture_bs=(1, 4, 16), replays=25, seed=page_size)
    scratch = scenario.runner(modules["graph"], "cuda")  # compile outside the capture and the compared buffers
    for bs in scenario.capture_bs:
        scratch.backend.target_verify_launches[bs](*scratch.backend.target_verify_launches[bs].static_inputs)
    ref = scenario.runner(modules["baseline"], "cuda")
    got = scenario.runner(modules["graph"], "cuda")
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
