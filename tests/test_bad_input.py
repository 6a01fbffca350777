"""Bad replay input gets a one-line error naming the fix, and no buffer is written (the launch object's own
refusals are in test_kernel.py)."""

import pytest
import torch

from harness import stages
from harness.compare import captured_state, first_mismatch
from harness.runner import Batch, ReplayInputError
from harness.scenarios import Scenario

SC = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, context_len=320, capture_bs=(1, 4))


@pytest.fixture(params=[stages.BASELINE, stages.final()])
def runner(request):
    r = SC.runner(stages.load(request.param))
    r.replay(next(iter(SC.batches())))
    return r


def _batch(n=2, lens=(10, 20), dtype=torch.int32, pool_dtype=torch.int32):
    return Batch(torch.arange(n, dtype=pool_dtype), torch.tensor(lens[:n], dtype=dtype))


@pytest.mark.parametrize(
    "batch, message",
    [
        (Batch(torch.arange(5, dtype=torch.int32), torch.full((5,), 9, dtype=torch.int32)), "does not fit the largest captured bs 4"),
        (_batch(lens=(10, 318)), "request 1: seq_len 318 \\+ 3 draft tokens is outside"),
        (_batch(dtype=torch.float32), "seq_lens must be int32 or int64"),
        (_batch(pool_dtype=torch.float32), "req_pool_indices must be int32 or int64"),
        (Batch(torch.arange(2, dtype=torch.int32, device="meta"), torch.tensor([1, 2], dtype=torch.int32)), "is on meta"),
        (Batch(torch.tensor([0, 99], dtype=torch.int32), torch.tensor([1, 2], dtype=torch.int32)), "req_pool_indices must lie in"),
    ],
)
def test_replay_refuses_without_writing(runner, batch, message):
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in captured_state(runner.backend).items()}
    inputs = runner.seq_lens.clone(), runner.req_pool_indices.clone()
    with pytest.raises(ReplayInputError, match=message):
        runner.replay(batch)
    assert first_mismatch(before, captured_state(runner.backend)) is None
    assert torch.equal(inputs[0], runner.seq_lens) and torch.equal(inputs[1], runner.req_pool_indices)


def test_draft_tokens_below_one_is_refused():
    with pytest.raises(ReplayInputError, match="num_draft_tokens \\(D\\) must be >= 1"):
        Scenario(num_draft_tokens=0, page_size=1, index_topk=48).runner(stages.load(stages.BASELINE))

