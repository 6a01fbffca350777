"""One contract for input, the same in every stage.

Through the harness's graph runner every check runs before anything is written, static inputs
included, and raises ReplayInputError with a one-line message. Calling the backend directly (as
sglang's runner does, with no checks of ours): where baseline raises, every stage raises the same
exception and leaves every buffer as it was; where baseline succeeds, every stage is bit-exact.
"""

import copy

import pytest
import torch

from harness import stages
from harness.compare import captured_state, first_mismatch
from harness.runner import Batch, ReplayInputError
from harness.scenarios import Scenario

SCENARIO = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, capture_bs=(2, 4))


def _snapshot(runner) -> dict:
    return copy.deepcopy({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in captured_state(runner.backend).items()})


def _batch(pool, lens) -> Batch:
    return Batch(torch.tensor(pool, dtype=torch.int32), torch.tensor(lens, dtype=torch.int32))


@pytest.mark.parametrize("stage", stages.names())
def test_int32_overflowing_length_is_refused_before_any_write(stage):
    runner = SCENARIO.runner(stages.load(stage))
    runner.replay(_batch([0, 1], [10, 20]))
    before, static = _snapshot(runner), runner.seq_lens.clone()
    with pytest.raises(ReplayInputError, match=r"^request 1: seq_len 2147483647 \+ 3 draft tokens = 2147483650 is past context_len="):
        runner.replay(_batch([0, 1], [10, 2**31 - 1]))
    assert first_mismatch(before, _snapshot(runner)) is None
    torch.testing.assert_close(runner.seq_lens, static, rtol=0, atol=0)


@pytest.mark.parametrize("stage", stages.names())
def test_uncaptured_bs_names_the_captured_sizes(stage):
    runner = SCENARIO.runner(stages.load(stage))
    with pytest.raises(ReplayInputError, match=r"^bs 3 was not captured \(captured: 2, 4\)"):
        runner.replay_metadata(3)


@pytest.mark.parametrize("stage", stages.names())
def test_pool_index_past_req_to_token_raises_index_error(stage):
    runner = SCENARIO.runner(stages.load(stage))
    runner.replay(_batch([0, 1], [10, 20]))
    before = _snapshot(runner)
    runner.copy_inputs(_batch([0, SCENARIO.pool_size], [30, 40]), 2)  # no checks: sglang's path
    with pytest.raises(IndexError):
        runner.replay_metadata(2)
    if stage != stages.BASELINE:  # upstream writes cache_seqlens before its gather raises
        assert first_mismatch(before, _snapshot(runner)) is None


@pytest.mark.parametrize("stage", stages.patched())
@pytest.mark.parametrize("pool", [[-1, 3], [5, -SCENARIO.pool_size]])
def test_negative_pool_index_wraps_as_torch_indexing(stage, pool):
    ref, got = SCENARIO.runner(stages.load(stages.BASELINE)), SCENARIO.runner(stages.load(stage))
    for runner in (ref, got):
        runner.replay(_batch([0, 1], [SCENARIO.context_len - 3] * 2))  # long first: stale columns
        runner.copy_inputs(_batch(pool, [70, 129]), 2)
        runner.replay_metadata(2)
    assert first_mismatch(captured_state(ref.backend), captured_state(got.backend)) is None


def _mode_scenario(mode: str) -> Scenario:
    # int64 seq_lens: in decode, an int32 static seq_lens would be cache_seqlens_int32 itself (upstream's
    # capture casts it with .to(torch.int32)), so copying the inputs would already change a buffer.
    return Scenario(num_draft_tokens=3, page_size=64, index_topk=48, mode=mode, capture_bs=(2, 4),
                    seq_lens_dtype="int64")


def _accepted(pool, lens, accept) -> Batch:
    batch = _batch(pool, lens)
    return Batch(batch.req_pool_indices, batch.seq_lens, torch.tensor(accept, dtype=torch.int32))


@pytest.mark.parametrize("mode", ["decode", "draft_extend"])
def test_final_stage_pool_index_past_req_to_token_raises_before_any_write(mode):
    scenario = _mode_scenario(mode)
    runner = scenario.runner(stages.load(stages.final()))
    accept = [2, 3] if mode == "draft_extend" else None
    make = (lambda pool, lens: _accepted(pool, lens, accept)) if accept else _batch
    runner.replay(make([0, 1], [10, 20]))
    before = _snapshot(runner)
    runner.copy_inputs(make([0, scenario.pool_size], [30, 40]), 2)  # no checks: sglang's path
    with pytest.raises(IndexError, match=r"req_pool_indices\[1\] = 16 is out of bounds"):
        runner.replay_metadata(2)
    assert first_mismatch(before, _snapshot(runner)) is None


@pytest.mark.parametrize("accept, lens", [([1, 0], [10, 20]), ([1, 4], [10, 20]), ([1, 3], [10, 2])])
def test_final_stage_refuses_accept_length_outside_its_range_before_any_write(accept, lens):
    runner = _mode_scenario("draft_extend").runner(stages.load(stages.final()))
    runner.replay(_accepted([0, 1], [10, 20], [2, 3]))
    before = _snapshot(runner)
    refusal = rf"^request 1: accept_length {accept[1]} is outside \[1, min\(D=3, seq_len={lens[1]}\)\]"
    with pytest.raises(ReplayInputError, match=refusal):
        runner.replay(_accepted([0, 1], lens, accept))  # through the runner: its own check
    runner.copy_inputs(_accepted([0, 1], lens, accept), 2)  # sglang's path: the harness's CPU check
    with pytest.raises(ValueError, match=refusal):
        runner.replay_metadata(2)
    assert first_mismatch(before, _snapshot(runner)) is None


@pytest.mark.parametrize("stage", stages.patched())
@pytest.mark.parametrize(
    "mode, dtype, longest",
    [("target_verify", "int32", 2**31 - 1), ("target_verify", "int64", 2**31 - 1), ("decode", "int64", 2**32 + 5),
     ("draft_extend", "int64", 2**32 + 5)],
)
def test_direct_path_near_2_31_is_bit_exact(stage, mode, dtype, longest):
    # Past the context, baseline's host slices copy whole rows and its int32 lengths wrap; every stage
    # does the same (the fused kernel clamps a length to the width before adding D), none refuses.
    scenario = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, mode=mode, capture_bs=(2, 4),
                        seq_lens_dtype=dtype)
    accept = torch.tensor([2, 3], dtype=torch.int32) if mode == "draft_extend" else None
    runners = scenario.runner(stages.load(stages.BASELINE)), scenario.runner(stages.load(stage))
    for runner in runners:
        runner.replay(Batch(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([10, 20], dtype=getattr(torch, dtype)),
                            accept))
        runner.copy_inputs(Batch(torch.tensor([0, 1], dtype=torch.int32),
                                 torch.tensor([10, longest], dtype=getattr(torch, dtype)), accept), 2)
        runner.replay_metadata(2)  # no checks: sglang's path
    assert first_mismatch(*(captured_state(runner.backend) for runner in runners)) is None
