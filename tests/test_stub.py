"""The stub behaves like upstream's capture/replay: shapes, aliasing, shared buffers."""

import pytest
import torch

from harness import stages
from harness.scenarios import Scenario
from harness.upstream import pin


@pytest.fixture(scope="module")
def baseline():
    return stages.load(stages.BASELINE)


def test_capture_shapes_for_target_verify(baseline):
    sc = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, context_len=320, capture_bs=(1, 4))
    runner = sc.runner(baseline)
    graph = runner.backend.decode_cuda_graph_metadata
    md = graph[4]
    assert md.page_table_1.shape == (12, 320)
    assert md.page_table_1.data_ptr() == graph["page_table"].data_ptr()  # a view of the shared buffer
    assert graph[1].page_table_1.data_ptr() == md.page_table_1.data_ptr()
    assert md.real_page_table.shape == (12, 5)
    assert md.nsa_seqlens_expanded.shape == (12,) and md.nsa_cu_seqlens_k.shape == (13,)
    assert md.cache_seqlens_int32.dtype == torch.int32


def test_page_size_one_aliases_real_page_table(baseline):
    runner = Scenario(num_draft_tokens=2, page_size=1, index_topk=48).runner(baseline)
    md = runner.backend.decode_cuda_graph_metadata[8]
    assert md.real_page_table is md.page_table_1


def test_replay_values_follow_upstream_formulas(baseline):
    sc = Scenario(num_draft_tokens=3, page_size=64, index_topk=50, context_len=320, capture_bs=(2,))
    runner = sc.runner(baseline)
    from harness.runner import Batch

    runner.replay(Batch(torch.tensor([3, 5], dtype=torch.int32), torch.tensor([10, 100], dtype=torch.int32)))
    md = runner.backend.decode_cuda_graph_metadata[2]
    assert md.nsa_seqlens_expanded.tolist() == [11, 12, 13, 101, 102, 103]
    assert md.nsa_cache_seqlens_int32.tolist() == [11, 12, 13, 50, 50, 50]
    assert md.nsa_cu_seqlens_k.tolist() == [0, 11, 23, 36, 86, 136, 186]
    assert md.cache_seqlens_int32.tolist() == [13, 103] and md.cu_seqlens_k.tolist() == [0, 13, 116]
    table = runner.backend.req_to_token
    assert torch.equal(md.page_table_1[4, :103], table[5, :103])
    assert torch.equal(md.real_page_table[0, :1], table[3, :1] // 64)


def test_flashmla_kv_is_rejected_with_reason(baseline):
    r2t = torch.zeros(2, 64, dtype=torch.int32)
    mr = baseline.build_model_runner(req_to_token=r2t, context_len=64, nsa_decode_backend="flashmla_kv")
    with pytest.raises(NotImplementedError, match="sgl_kernel"):
        baseline.NativeSparseAttnBackend(mr)


def test_pin_names_the_target_verify_branch():
    p = pin()
    assert (p["package"], p["version"]) == ("sglang", "0.5.6")
    start, end = p["target_verify_branch"]
    assert any(r["lines"][0] <= start and end <= r["lines"][1] for r in p["region"])
