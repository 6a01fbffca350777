"""The launch object the series ships (the final stage's), alone, against a plain-torch reference.

In the style of sglang's metadata kernel tests: an eager reference computes every buffer from the
same starting contents, and whole buffers are compared exactly (values, dtype, shape, stride),
so index 0 of the cumsum buffers and the columns past max_seqlen_k must keep what was there.
On CPU, Triton runs through its interpreter (tests/conftest.py); on a GPU machine, compiled on the GPU.
"""

import inspect
from types import SimpleNamespace

import pytest
import torch

from harness import stages
from harness.env import triton_device

DEVICE = triton_device()
SLOW = pytest.mark.slow  # wide tables and big batches: minutes under the interpreter (make test-slow)

OUTPUTS = ("cache_seqlens_int32", "cu_seqlens_k", "nsa_seqlens_expanded", "nsa_cache_seqlens_int32",
           "nsa_cu_seqlens_k", "page_table_1", "real_page_table")
SEQ_LEN_FILL = 1  # what the graph runner writes into padded slots (get_cuda_graph_seq_len_fill_value)


@pytest.fixture(scope="module")
def kernel():
    return stages.kernel_module(stages.final())


def captured(bs, draft, page_size, width, seed=0, mode="target_verify"):
    """The buffers of one captured NSAMetadata, filled with noise that the launch must leave alone."""
    g = torch.Generator().manual_seed(seed)
    rows = bs * draft

    def noise(*shape):
        return torch.randint(-99, 99, shape, generator=g, dtype=torch.int32).to(DEVICE)

    table = noise(rows, width)
    cache_seqlens = noise(bs)
    return SimpleNamespace(
        page_size=page_size,
        cache_seqlens_int32=cache_seqlens,
        cu_seqlens_k=noise(bs + 1),
        nsa_seqlens_expanded=cache_seqlens if mode == "decode" else noise(rows),  # one buffer in decode, as upstream
        nsa_cache_seqlens_int32=noise(rows),
        nsa_cu_seqlens_k=noise(rows + 1),
        page_table_1=table,
        real_page_table=noise(rows, -(-width // page_size)) if page_size > 1 else table,  # aliased, as upstream
    )


def reference(md, req_to_token, draft, topk, seq_lens, req_pool_indices, accept_length=None,
              mode="target_verify") -> dict[str, torch.Tensor]:
    """Plain torch, eager: every output buffer after one replay of `mode` (decode: draft is 1)."""
    out = {name: getattr(md, name).clone() for name in OUTPUTS}
    if md.page_size == 1:
        out["real_page_table"] = out["page_table_1"]
    seq = seq_lens.to(torch.int32)
    bs, width = seq.shape[0], md.page_table_1.shape[1]
    cache = seq + draft if mode == "target_verify" else seq
    q = accept_length.long().cpu() if mode == "draft_extend" else torch.full((bs,), draft)
    rows = int(q.sum())
    expanded = torch.cat([torch.arange(int(c) - int(n) + 1, int(c) + 1, dtype=torch.int32) for c, n in zip(cache, q)])
    expanded = expanded.to(seq.device)
    clamped = expanded.clamp(max=topk)
    out["cache_seqlens_int32"][:] = cache
    out["cu_seqlens_k"][1:] = torch.cumsum(cache, 0)
    if mode == "decode":
        out["nsa_seqlens_expanded"] = out["cache_seqlens_int32"]
    else:
        out["nsa_seqlens_expanded"][:rows] = expanded
    out["nsa_cache_seqlens_int32"][:rows] = clamped
    out["nsa_cu_seqlens_k"][1 : 1 + rows] = torch.cumsum(clamped, 0)
    max_seqlen_k = min(int(cache.max()), width)
    tokens = req_to_token[req_pool_indices.long(), :max_seqlen_k].repeat_interleave(q.to(seq.device), 0)
    out["page_table_1"][:rows, :max_seqlen_k] = tokens
    if md.page_size > 1:
        pages = -(-max_seqlen_k // md.page_size)
        out["real_page_table"][:rows, :pages] = torch.div(tokens[:, :: md.page_size], md.page_size, rounding_mode="floor")
    return out


def assert_buffers_equal(md, expected: dict[str, torch.Tensor]) -> None:
    for name in OUTPUTS:
        torch.testing.assert_close(getattr(md, name), expected[name], rtol=0, atol=0, check_stride=True, msg=name)
    if md.page_size == 1:
        assert md.real_page_table is md.page_table_1


def batch(bs, draft, width, pool_rows, seed, dtype=torch.int32, padded=0):
    """Lengths up to exactly the width (the longest request fills the table), the last `padded` slots as the
    graph runner pads them (seq_len = fill value, stale pool indices)."""
    g = torch.Generator().manual_seed(seed)
    seq_lens = torch.randint(1, width - draft + 1, (bs,), generator=g)
    seq_lens[0] = width - draft
    if padded:
        seq_lens[bs - padded:] = SEQ_LEN_FILL
    pool = torch.randint(-pool_rows, pool_rows, (bs,), generator=g)  # negatives count from the end
    return seq_lens.to(DEVICE, dtype), pool.to(DEVICE, dtype)


@pytest.mark.parametrize(
    "bs, draft, page_size, width, topk, padded, dtype",
    [
        (1, 1, 64, 320, 48, 0, torch.int32),
        (5, 3, 1, 17, 4096, 0, torch.int64),  # odd width below one 16-column body
        (5, 3, 64, 333, 40, 0, torch.int32),  # odd width, partial last page
        (3, 5, 16, 1025, 500, 0, torch.int64),  # one column past a column block
        (7, 7, 64, 1000, 48, 0, torch.int32),
        (4, 8, 1, 256, 4096, 2, torch.int32),  # padded batch: two slots of fill value
        (8, 2, 64, 320, 48, 7, torch.int64),  # all but one slot padding
        pytest.param(64, 2, 64, 10_000, 2048, 0, torch.int32, marks=SLOW),  # more column blocks than column programs
        pytest.param(1, 4, 64, 131_072 + 64, 2048, 0, torch.int64, marks=SLOW),  # a very wide table: 128k context
        pytest.param(200, 16, 1, 64, 4096, 3, torch.int32, marks=SLOW),  # long drafts, a batch scanned in chunks
    ],
)
def test_launch_matches_plain_torch(kernel, bs, draft, page_size, width, topk, padded, dtype):
    md = captured(bs, draft, page_size, width, seed=bs + draft)
    g = torch.Generator().manual_seed(width)
    req_to_token = torch.randint(-(1 << 20), 1 << 20, (bs + 3, width), generator=g, dtype=torch.int32).to(DEVICE)  # floor
    seq_lens, pool = batch(bs, draft, width, bs + 3, seed=draft, dtype=dtype, padded=padded)
    launch = kernel.CudaGraphMetadataLaunch(md, req_to_token, draft, topk, torch.ones_like(seq_lens),
                                               torch.zeros_like(pool))
    expected = reference(md, req_to_token, draft, topk, seq_lens, pool)
    launch(seq_lens, pool)
    assert_buffers_equal(md, expected)


def test_shorter_replay_keeps_the_longer_ones_columns(kernel):
    bs, draft, width = 4, 3, 700
    md = captured(bs, draft, 64, width)
    req_to_token = torch.randint(0, 1 << 20, (8, width), dtype=torch.int32, generator=torch.Generator().manual_seed(1))
    req_to_token = req_to_token.to(DEVICE)
    launch = kernel.CudaGraphMetadataLaunch(md, req_to_token, draft, 48, *_inputs(bs))
    for longest in (width - draft, 100, 5):
        seq_lens = torch.full((bs,), longest, dtype=torch.int32, device=DEVICE)
        pool = torch.randperm(8)[:bs].to(DEVICE, torch.int32)
        expected = reference(md, req_to_token, draft, 48, seq_lens, pool)
        launch(seq_lens, pool)
        assert_buffers_equal(md, expected)


@pytest.mark.parametrize(
    "bs, draft, page_size, width, topk, accept",
    [
        (1, 1, 64, 320, 48, "all-1"),
        (5, 3, 1, 17, 4096, "random"),  # odd width below one 16-column body
        (5, 4, 64, 333, 40, "all-D"),  # odd width, partial last page
        (9, 4, 64, 1000, 48, "seq_len"),  # accept_length == seq_len: expanded lengths start at 1
        pytest.param(200, 16, 1, 64, 4096, "random", marks=SLOW),  # long drafts, a batch scanned in chunks
        pytest.param(256, 4, 64, 700, 100, "random", marks=SLOW),  # the largest captured bs
    ],
)
def test_draft_extend_launch_matches_plain_torch(kernel, bs, draft, page_size, width, topk, accept):
    md = captured(bs, draft, page_size, width, seed=bs + draft, mode="draft_extend")
    g = torch.Generator().manual_seed(width)
    req_to_token = torch.randint(-(1 << 20), 1 << 20, (bs + 3, width), generator=g, dtype=torch.int32).to(DEVICE)
    seq_lens = torch.randint(draft, width + 1, (bs,), generator=g)
    seq_lens[0] = width
    accept_length = {
        "all-1": torch.ones(bs, dtype=torch.int64),
        "all-D": torch.full((bs,), draft),
        "random": torch.randint(1, draft + 1, (bs,), generator=g),
        "seq_len": torch.randint(1, draft + 1, (bs,), generator=g),
    }[accept]
    if accept == "seq_len":
        seq_lens[1:] = accept_length[1:]
    seq_lens, accept_length = seq_lens.to(DEVICE, torch.int32), accept_length.to(DEVICE, torch.int32)
    pool = torch.randint(-(bs + 3), bs + 3, (bs,), generator=g).to(DEVICE, torch.int32)
    # as sglang's draft-extend runner captures: seq_lens at the fill value, accept_length D
    launch = kernel.CudaGraphMetadataLaunch(md, req_to_token, draft, topk, torch.ones_like(seq_lens),
                                            torch.zeros_like(pool), mode="draft_extend",
                                            accept_length=torch.full_like(accept_length, draft))
    expected = reference(md, req_to_token, draft, topk, seq_lens, pool, accept_length, mode="draft_extend")
    launch(seq_lens, pool, accept_length)
    assert_buffers_equal(md, expected)


@pytest.mark.parametrize(
    "bs, page_size, width, topk, dtype",
    [(1, 64, 320, 48, torch.int32), (7, 1, 17, 4096, torch.int64),
     pytest.param(64, 64, 10_000, 2048, torch.int32, marks=SLOW), pytest.param(256, 16, 1025, 500, torch.int64, marks=SLOW)],
)
def test_decode_launch_matches_plain_torch(kernel, bs, page_size, width, topk, dtype):
    md = captured(bs, 1, page_size, width, seed=bs, mode="decode")
    g = torch.Generator().manual_seed(width)
    req_to_token = torch.randint(-(1 << 20), 1 << 20, (bs + 3, width), generator=g, dtype=torch.int32).to(DEVICE)
    seq_lens, pool = batch(bs, 0, width, bs + 3, seed=bs, dtype=dtype, padded=bs // 3)
    launch = kernel.CudaGraphMetadataLaunch(md, req_to_token, None, topk, torch.ones_like(seq_lens),
                                            torch.zeros_like(pool), mode="decode")
    expected = reference(md, req_to_token, 1, topk, seq_lens, pool, mode="decode")
    launch(seq_lens, pool)
    assert_buffers_equal(md, expected)
    assert md.nsa_seqlens_expanded is md.cache_seqlens_int32


@pytest.mark.skipif(DEVICE != "cpu", reason="the harness checks eager replays' values on CPU tensors only")
@pytest.mark.parametrize("accepted, seq_len", [(0, 5), (4, 5), (3, 2), (-1, 5)])
def test_harness_refuses_accept_length_out_of_range_before_any_write(kernel, accepted, seq_len):
    # The shipped module reads no value on the host (on CUDA it would sync every replay); the harness's
    # CPU adapter (harness.loader.check_eager_cpu_replays) holds eager CPU replays to baseline's refusals.
    md = captured(2, 3, 64, 320, mode="draft_extend")
    before = {name: getattr(md, name).clone() for name in OUTPUTS}
    seq_lens, pool = _inputs(2)
    launch = kernel.CudaGraphMetadataLaunch(md, _zeros(4, 320), 3, 48, seq_lens, pool, mode="draft_extend",
                                            accept_length=torch.full((2,), 3, dtype=torch.int32))
    with pytest.raises(ValueError, match=rf"^request 1: accept_length {accepted} is outside \[1, min\(D=3, seq_len={seq_len}\)\]$"):
        launch(torch.tensor([5, seq_len], dtype=torch.int32), pool, torch.tensor([1, accepted], dtype=torch.int32))
    assert_buffers_equal(md, before)


def test_record_launches_on_the_static_inputs(kernel):
    bs, draft, width = 3, 2, 320
    md = captured(bs, draft, 64, width)
    req_to_token = torch.arange(6 * width, dtype=torch.int32, device=DEVICE).view(6, width)
    seq_lens, pool = _inputs(bs)
    launch = kernel.CudaGraphMetadataLaunch(md, req_to_token, draft, 48, seq_lens, pool)
    seq_lens.copy_(torch.tensor([40, 318, 7]))  # the graph runner refreshes the bound inputs in place
    pool.copy_(torch.tensor([5, 0, 2]))
    expected = reference(md, req_to_token, draft, 48, seq_lens, pool)
    launch.record()  # outside a capture (a warm-up run): an eager launch that marks nothing
    assert not launch.recorded
    assert_buffers_equal(md, expected)
    if DEVICE == "cuda":  # as sglang's runner: eager warm-up runs, then the capture records
        md.page_table_1.zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            launch.record()
        assert launch.recorded
        graph.replay()
        torch.cuda.synchronize()
        assert_buffers_equal(md, expected)


def _inputs(bs=2, dtype=torch.int32):
    return torch.full((bs,), 10, dtype=dtype, device=DEVICE), torch.zeros(bs, dtype=dtype, device=DEVICE)


def _zeros(*shape, dtype=torch.int32, device=DEVICE):
    return torch.zeros(shape, dtype=dtype, device=device)


def _non_unit_stride(rows, cols):
    return _zeros(cols, rows).t()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(num_draft_tokens=0), "num_draft_tokens must be >= 1"),
        (dict(page_size=48), "page_size must be a power of two"),
        (dict(page_size=0), "page_size must be a power of two"),
        (dict(page_size=2048), "page_size must be a power of two <= 1024"),
        (dict(page_size=1), "real_page_table must be page_table_1"),
        (dict(cache_seqlens_int32=_zeros(2, dtype=torch.int64)), "cache_seqlens_int32 must be an int32 tensor"),
        (dict(cu_seqlens_k=_zeros(2)), "cu_seqlens_k must be .* shape at least \\(3,\\)"),
        (dict(nsa_seqlens_expanded=_zeros(5)), "nsa_seqlens_expanded must be .* at least \\(6,\\)"),
        (dict(nsa_cache_seqlens_int32=_zeros(6, dtype=torch.float32)), "nsa_cache_seqlens_int32 must be an int32"),
        (dict(nsa_cu_seqlens_k=_zeros(6)), "nsa_cu_seqlens_k must be .* shape at least \\(7,\\)"),
        (dict(page_table_1=_zeros(6, 320, device="meta")), f"page_table_1 must be an int32 tensor on {DEVICE}"),
        (dict(page_table_1=_non_unit_stride(6, 320)), "page_table_1 must be .* unit last stride"),
        (dict(real_page_table=_zeros(6, 4)), "real_page_table must be .* shape at least \\(6, 5\\)"),
        (dict(req_to_token=_zeros(4, 100)), "req_to_token must be .* shape at least \\(1, 320\\)"),
        (dict(seq_lens=_zeros(2, dtype=torch.float32)), "seq_lens must be int32 or int64"),
        (dict(req_pool_indices=_zeros(3)), "req_pool_indices must be .* of shape \\(2,\\)"),
    ],
)
def test_capture_refuses(kernel, change, message):
    md = captured(bs=2, draft=3, page_size=64, width=320)
    draft = change.pop("num_draft_tokens", 3)
    req_to_token = change.pop("req_to_token", _zeros(4, 320))
    seq_lens, pool = _inputs()
    seq_lens, pool = change.pop("seq_lens", seq_lens), change.pop("req_pool_indices", pool)
    for name, value in change.items():
        setattr(md, name, value)
    with pytest.raises(ValueError, match=message):
        kernel.CudaGraphMetadataLaunch(md, req_to_token, draft, 48, seq_lens, pool)


@pytest.mark.parametrize(
    "seq_lens, pool, message",
    [
        (torch.full((2,), 10.0, device=DEVICE), _zeros(2), "seq_lens must be int32 or int64"),
        (torch.full((3,), 10, device=DEVICE), _zeros(2), "seq_lens must be .* of shape \\(2,\\)"),
        (torch.full((2, 1), 10, device=DEVICE), _zeros(2), "seq_lens must be .* of shape \\(2,\\)"),
        (torch.full((2,), 10, device=DEVICE), _zeros(2, dtype=torch.float32), "req_pool_indices must be int32 or int64"),
        (torch.full((2,), 10, device="meta"), _zeros(2), f"seq_lens must be contiguous on {DEVICE}"),
        (torch.full((4,), 10, device=DEVICE)[::2], _zeros(2), f"seq_lens must be contiguous on {DEVICE}"),
        (torch.full((2,), 10, device=DEVICE), _zeros(2, 2)[:, 0], "req_pool_indices must be contiguous"),
    ],
)
def test_capture_refuses_static_inputs_it_cannot_launch_on(kernel, seq_lens, pool, message):
    # Checked once, at capture: a replay launches on inputs laid out as these (the runner's static views).
    md = captured(bs=2, draft=3, page_size=64, width=320)
    with pytest.raises(ValueError, match=message):
        kernel.CudaGraphMetadataLaunch(md, _zeros(4, 320) + 1, 3, 48, seq_lens, pool)


@pytest.mark.parametrize(
    "accept_length, message",
    [(_zeros(2, dtype=torch.float32), "accept_length must be int32 or int64"), (_zeros(3), "accept_length must be .* \\(2,\\)")],
)
def test_draft_extend_capture_refuses_accept_length_it_cannot_launch_on(kernel, accept_length, message):
    md = captured(bs=2, draft=3, page_size=64, width=320, mode="draft_extend")
    with pytest.raises(ValueError, match=message):
        kernel.CudaGraphMetadataLaunch(md, _zeros(4, 320), 3, 48, *_inputs(), mode="draft_extend",
                                       accept_length=accept_length)


@pytest.mark.skipif(DEVICE != "cpu", reason="the harness checks eager replays' values on CPU tensors only")
def test_harness_refuses_a_pool_index_outside_req_to_token(kernel):
    md = captured(bs=2, draft=3, page_size=64, width=320)
    before = {name: getattr(md, name).clone() for name in OUTPUTS}
    launch = kernel.CudaGraphMetadataLaunch(md, _zeros(4, 320), 3, 48, *_inputs())
    with pytest.raises(IndexError, match="req_pool_indices\\[1\\] = 4 is out of bounds"):
        launch(_inputs()[0], torch.tensor([-4, 4], dtype=torch.int32))
    assert_buffers_equal(md, before)


@pytest.mark.parametrize("seam", [".tolist()", ".item()", '"cpu"', "getattr(", "_is_capturing", "INTERPRET"])
def test_the_shipped_module_carries_no_harness_seam(kernel, seam):
    # Written for CUDA as sglang would ship it: no host value read, no CPU or interpreter branch, nothing
    # private for a harness to patch (the CPU adapters live in harness.env and harness.loader).
    assert seam not in inspect.getsource(kernel)
