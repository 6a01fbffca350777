"""Bad input gets a one-line error naming the fix, and no buffer is written."""

from types import SimpleNamespace

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
    return __import__(module.__package__ + ".nsa.target_verify_metadata", fromlist=["x"])


def _metadata(bs=2, draft=3, ps=64, width=320):
    """The buffers of a captured NSAMetadata, as the launch object reads them."""
    rows = bs * draft
    table = torch.zeros(rows, width, dtype=torch.int32)
    return SimpleNamespace(
        page_size=ps,
        cache_seqlens_int32=torch.zeros(bs, dtype=torch.int32),
        cu_seqlens_k=torch.zeros(bs + 1, dtype=torch.int32),
        nsa_seqlens_expanded=torch.zeros(rows, dtype=torch.int32),
        nsa_cache_seqlens_int32=torch.zeros(rows, dtype=torch.int32),
        nsa_cu_seqlens_k=torch.zeros(rows + 1, dtype=torch.int32),
        page_table_1=table,
        real_page_table=torch.zeros(rows, -(-width // ps), dtype=torch.int32) if ps > 1 else table,
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(num_draft_tokens=0), "num_draft_tokens must be >= 1, got 0"),
        (dict(page_size=48), "page_size must be a power of two"),
        (dict(cache_seqlens_int32=torch.zeros(2, dtype=torch.int64)), "cache_seqlens_int32 must be an int32 tensor"),
        (dict(page_table_1=torch.zeros(6, 320, dtype=torch.int32, device="meta")), "page_table_1 must be an int32 tensor on cpu"),
        (dict(nsa_cu_seqlens_k=torch.zeros(6, dtype=torch.int32)), "nsa_cu_seqlens_k must be .* shape at least \\(7,\\)"),
        (dict(req_to_token=torch.zeros(4, 100, dtype=torch.int32)), "req_to_token must be"),
    ],
)
def test_launch_refuses_bad_capture(kernel, change, message):
    metadata, draft = _metadata(), change.pop("num_draft_tokens", 3)
    req_to_token = change.pop("req_to_token", torch.zeros(4, 320, dtype=torch.int32))
    for name, value in change.items():
        setattr(metadata, name, value)
    with pytest.raises(ValueError, match=message):
        kernel.TargetVerifyMetadataLaunch(metadata, req_to_token, draft, 48)


@pytest.mark.parametrize(
    "seq_lens, pool, max_seqlen_k, message",
    [
        (torch.full((2,), 10.0), torch.zeros(2, dtype=torch.int32), 13, "seq_lens must be int32 or int64"),
        (torch.full((3,), 10), torch.zeros(2, dtype=torch.int32), 13, "seq_lens must be .* of shape \\(2,\\)"),
        (torch.full((2,), 10), torch.zeros(2, dtype=torch.float32), 13, "req_pool_indices must be int32 or int64"),
        (torch.full((2,), 10, device="meta"), torch.zeros(2, dtype=torch.int32), 13, "seq_lens must be contiguous on cpu"),
        (torch.full((2,), 10), torch.zeros(2, dtype=torch.int32), 321, "exceeds the context length"),
    ],
)
def test_launch_refuses_bad_replay_without_writing(kernel, seq_lens, pool, max_seqlen_k, message):
    metadata = _metadata()
    launch = kernel.TargetVerifyMetadataLaunch(metadata, torch.ones(4, 320, dtype=torch.int32), 3, 48)
    with pytest.raises(ValueError, match=message):
        launch(seq_lens, pool, max_seqlen_k)
    assert not metadata.page_table_1.any() and not metadata.cache_seqlens_int32.any()


@pytest.mark.parametrize("draft, ps", [(1, 64), (3, 1), (5, 64), (7, 64), (8, 1)])
def test_kernel_matches_plain_torch_reference(kernel, draft, ps):
    # Liger-style: the kernel alone against a plain-torch reference, odd D included.
    bs, width, topk = 5, 320, 40
    g = torch.Generator().manual_seed(draft)
    metadata = _metadata(bs=bs, draft=draft, ps=ps, width=width)
    req_to_token = torch.randint(-1000, 10**6, (8, width), generator=g, dtype=torch.int32)
    pool = torch.randint(0, 8, (bs,), generator=g, dtype=torch.int32)
    seq = torch.randint(1, width - draft + 1, (bs,), generator=g, dtype=torch.int64)
    k = int(seq.max()) + draft
    kernel.TargetVerifyMetadataLaunch(metadata, req_to_token, draft, topk)(seq, pool, k)
    seq = seq.to(torch.int32)
    expanded = (seq[:, None] + torch.arange(1, draft + 1, dtype=torch.int32)).flatten()
    clamped = expanded.clamp(max=topk)
    rows = req_to_token[pool.long(), :k].repeat_interleave(draft, 0)
    assert torch.equal(metadata.cache_seqlens_int32, seq + draft)
    assert torch.equal(metadata.cu_seqlens_k[1:], torch.cumsum(seq + draft, 0, dtype=torch.int32))
    assert torch.equal(metadata.nsa_seqlens_expanded, expanded)
    assert torch.equal(metadata.nsa_cache_seqlens_int32, clamped)
    assert torch.equal(metadata.nsa_cu_seqlens_k[1:], torch.cumsum(clamped, 0, dtype=torch.int32))
    assert torch.equal(metadata.page_table_1[:, :k], rows)
    assert not metadata.page_table_1[:, k:].any()
    if ps > 1:
        pages = -(-k // ps)
        assert torch.equal(metadata.real_page_table[:, :pages], rows[:, ::ps] // ps)
        assert not metadata.real_page_table[:, pages:].any()
