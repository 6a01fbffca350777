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
        (Batch(torch.zeros(0, dtype=torch.int32), torch.zeros(0, dtype=torch.int32)),
         "^batch of 0 requests: a replay needs at least one request; skip the replay of an empty batch$"),
        (_batch(lens=(10, 318)), "^request 1: seq_len 318 \\+ 3 draft tokens = 321 is past context_len=320: "),
        (_batch(lens=(10, 0)), "^request 1: seq_len 0 is below 1"),
        (_batch(dtype=torch.float32), "seq_lens must be int32 or int64"),
        (_batch(pool_dtype=torch.float32), "req_pool_indices must be int32 or int64"),
        (Batch(torch.arange(2, dtype=torch.int32, device="meta"), torch.tensor([1, 2], dtype=torch.int32)), "is on meta"),
        (Batch(torch.tensor([0, 99], dtype=torch.int32), torch.tensor([1, 2], dtype=torch.int32)),
         "^request 1: req_pool_indices 99 is outside \\[0, 16\\) \\(req_to_token rows\\)"),
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



def test_draft_tokens_that_leave_no_room_in_the_context_are_refused_at_construction():
    with pytest.raises(ReplayInputError, match=r"^num_draft_tokens \(D\) 300 leaves no room in context_len=256: .* D <= 255"):
        Scenario(num_draft_tokens=300, page_size=64, index_topk=48, context_len=256).runner(stages.load(stages.BASELINE))


@pytest.mark.parametrize("mode", ["decode", "draft_extend"])
def test_a_length_past_the_context_adds_no_draft_tokens_where_none_are_added(mode):
    scenario = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, mode=mode, context_len=320, capture_bs=(1, 4))
    runner = scenario.runner(stages.load(stages.BASELINE))
    accept = torch.tensor([1, 1], dtype=torch.int32) if mode == "draft_extend" else None
    with pytest.raises(ReplayInputError, match=r"^request 1: seq_len 321 is past context_len=320: "):
        runner.replay(Batch(torch.arange(2, dtype=torch.int32), torch.tensor([10, 321], dtype=torch.int32), accept))


def test_accept_length_refusal_names_the_request_and_the_value():
    scenario = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, mode="draft_extend", capture_bs=(1, 4))
    runner = scenario.runner(stages.load(stages.BASELINE))
    batch = Batch(torch.arange(2, dtype=torch.int32), torch.tensor([10, 2], dtype=torch.int32),
                  torch.tensor([1, 3], dtype=torch.int32))
    with pytest.raises(ReplayInputError, match=r"^request 1: accept_length 3 is outside \[1, min\(D=3, seq_len=2\)\]: "):
        runner.replay(batch)


def test_accept_length_is_not_read_outside_draft_extend(runner):
    # Target verify reads no accept_length: one passed along is neither checked nor copied.
    batch = _batch()
    unused = Batch(batch.req_pool_indices, batch.seq_lens, torch.tensor([0, 99, 7], dtype=torch.float32))
    static = runner.accept_length.clone()
    assert runner.replay(unused) == runner.replay(batch)
    torch.testing.assert_close(runner.accept_length, static, rtol=0, atol=0)
