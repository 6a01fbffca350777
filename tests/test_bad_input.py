"""Bad input gets a one-line error naming the fix, and no buffer is written."""

import pytest
import torch

from harness import stages
from harness.compare import captured_state, first_mismatch
from harness.runner import Batch, ReplayInputError
from harness.scenarios import Scenario

SC = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, context_len=320, capture_bs=(1, 4))


@pytest.fixture(params=["baseline", "repeat-audit"])
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
        Scenario(num_draft_tokens=0, page_size=1, index_topk=48).runner(stages.load("baseline"))


@pytest.fixture(scope="module")
def kernel():
    module = stages.load("repeat-audit")
    return __import__(module.__package__ + ".nsa_target_verify_metadata", fromlist=["x"])


def _launcher_args(bs=2, draft=3, ps=64, width=320):
    rows = bs * draft
    table = torch.zeros(rows, width, dtype=torch.int32)
    return dict(
        seq_lens=torch.full((bs,), 10, dtype=torch.int32),
        req_pool_indices=torch.zeros(bs, dtype=torch.int32),
        req_to_token=torch.zeros(4, width, dtype=torch.int32),
        num_draft_tokens=draft, topk=48, page_size=ps, max_seqlen_k=13,
        cache_seqlens=torch.zeros(bs, dtype=torch.int32), cu_seqlens_k=torch.zeros(bs + 1, dtype=torch.int32),
        seqlens_expanded=torch.zeros(rows, dtype=torch.int32), nsa_cache_seqlens=torch.zeros(rows, dtype=torch.int32),
        nsa_cu_seqlens_k=torch.zeros(rows + 1, dtype=torch.int32), page_table_1=table,
        real_page_table=torch.zeros(rows, width // ps, dtype=torch.int32) if ps > 1 else table,
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(num_draft_tokens=9), "num_draft_tokens must be in \\[1, 8\\]"),
        (dict(num_draft_tokens=0), "num_draft_tokens must be in"),
        (dict(seq_lens=torch.full((2,), 10.0)), "seq_lens must be a 1-D int32 or int64"),
        (dict(max_seqlen_k=321), "exceeds the context length"),
        (dict(page_size=48), "page_size must be a power of two"),
        (dict(cache_seqlens=torch.zeros(2, dtype=torch.int64)), "cache_seqlens must be an int32 tensor"),
        (dict(page_table_1=torch.zeros(6, 320, dtype=torch.int32, device="meta")), "page_table_1 must be an int32 tensor on cpu"),
    ],
)
def test_launcher_refuses_what_it_cannot_do(kernel, change, message):
    args = _launcher_args()
    args.update(change)
    with pytest.raises(ValueError, match=message):
        kernel.fill_target_verify_metadata(**args)


def test_launcher_refuses_bs_beyond_one_program(kernel):
    args = _launcher_args(bs=kernel.MAX_BS + 1, draft=1)
    with pytest.raises(ValueError, match="what one program scans"):
        kernel.fill_target_verify_metadata(**args)


@pytest.mark.parametrize("draft", [1, 3, 5, 7, 8])
def test_kernel_matches_plain_torch_reference(kernel, draft):
    # Liger-style: the kernel alone against a plain-torch reference, odd D included.
    bs, ps, width, topk = 5, 64, 320, 40
    g = torch.Generator().manual_seed(draft)
    args = _launcher_args(bs=bs, draft=draft, ps=ps, width=width)
    args["req_to_token"] = torch.randint(-1000, 10**6, (8, width), generator=g, dtype=torch.int32)
    args["req_pool_indices"] = torch.randint(0, 8, (bs,), generator=g, dtype=torch.int32)
    args["seq_lens"] = torch.randint(1, width - draft + 1, (bs,), generator=g, dtype=torch.int64)
    args["topk"] = topk
    k = int(args["seq_lens"].max()) + draft
    args["max_seqlen_k"] = k
    kernel.fill_target_verify_metadata(**args)
    seq = args["seq_lens"].to(torch.int32)
    expanded = (seq[:, None] + torch.arange(1, draft + 1, dtype=torch.int32)).flatten()
    clamped = expanded.clamp(max=topk)
    rows = args["req_to_token"][args["req_pool_indices"].long(), :k].repeat_interleave(draft, 0)
    assert torch.equal(args["cache_seqlens"], seq + draft)
    assert torch.equal(args["cu_seqlens_k"][1:], torch.cumsum(seq + draft, 0, dtype=torch.int32))
    assert torch.equal(args["seqlens_expanded"], expanded)
    assert torch.equal(args["nsa_cache_seqlens"], clamped)
    assert torch.equal(args["nsa_cu_seqlens_k"][1:], torch.cumsum(clamped, 0, dtype=torch.int32))
    assert torch.equal(args["page_table_1"][:, :k], rows)
    assert not args["page_table_1"][:, k:].any()
    pages = -(-k // ps)
    assert torch.equal(args["real_page_table"][:, :pages], rows[:, ::ps] // ps)
    assert not args["real_page_table"][:, pages:].any()
