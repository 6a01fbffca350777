"""Every stage of the series against baseline, whole buffers, replay by replay."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import mode_scenarios, target_verify_scenarios

from harness import stages
from harness.compare import captured_state, first_mismatch
from harness.runner import MODES
from harness.scenarios import Scenario, matrix
from harness.verify import compare_stage


def test_final_stage_reads_no_host_lengths():
    # Poison seq_lens_cpu after the graph runner filled it: what the series ships must not notice
    # in any mode (its launch lives in the CUDA graph, where no host value is read).
    for mode in MODES:
        scenario = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, mode=mode, context_len=320,
                            capture_bs=(2, 4))
        ref = scenario.runner(stages.load(stages.BASELINE))
        got = scenario.runner(stages.load(stages.final()))
        for i, batch in enumerate(scenario.batches()):
            ref.replay(batch)
            bs = got.prepare(batch)
            got.seq_lens_cpu.fill_(10**6)
            got.replay_metadata(bs)
            mismatch = first_mismatch(captured_state(ref.backend), captured_state(got.backend))
            assert mismatch is None, f"{mode} replay {i}: {mismatch}"


def _cost(scenario: Scenario) -> tuple:
    """Interpreter time grows with the captured rows and the replays; the name breaks ties."""
    return max(scenario.capture_bs) * scenario.num_draft_tokens * scenario.replays, scenario.name


def _bit_exact_cases() -> list:
    """(stage, scenario) for the matrix, each marked with its tier.

    A stage that does not touch a mode runs the same source lines as the stage before it in that
    mode (stages.touching), so each scenario is replayed on the stages that touch its mode, and on
    the final stage, what the series ships. The fast tier keeps, for every stage x mode, the cheapest
    scenario of each page size, and for the final stage every edge profile captured at bs <= 8
    (page boundaries, int32 limits, accept-length edges); the rest (bs up to 256) is `slow`.
    """
    final = stages.final()
    cases = [
        (stage, scenario)
        for scenario in matrix()
        for stage in stages.patched()
        if stage in stages.touching(scenario.mode) or stage == final
    ]
    fast = set()
    def group(case) -> tuple:
        return case[0], case[1].mode, case[1].page_size

    for key in {group(case) for case in cases}:
        fast.add(min((case for case in cases if group(case) == key), key=lambda case: _cost(case[1])))
    fast |= {
        (stage, scenario)
        for stage, scenario in cases
        if stage == final and max(scenario.capture_bs) <= 8
        and (scenario.token_values, scenario.lengths, scenario.accept) != ("small", "random", "random")
    }
    return [
        pytest.param(stage, scenario, id=f"{stage}-{scenario.name}",
                     marks=() if (stage, scenario) in fast else pytest.mark.slow)
        for stage, scenario in cases
    ]


@pytest.mark.parametrize("stage, scenario", _bit_exact_cases())
def test_stage_bit_exact(stage, scenario):
    verdict = compare_stage(stage, scenario)
    assert verdict.exact, f"{stage} {scenario.name} {verdict.describe()}"
    assert verdict.replays == scenario.replays


@pytest.mark.slow
@pytest.mark.parametrize("stage", stages.patched())
# derandomize: the same examples on every run and machine, so CI is deterministic; 15 per stage on
# top of the named matrix, which holds the edges (long drafts, big batches, page boundaries, int32
# limits) on purpose.
@settings(max_examples=15, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=target_verify_scenarios(replays=5))
def test_stage_bit_exact_fuzz(stage, scenario):
    verdict = compare_stage(stage, scenario)
    assert verdict.exact, f"{scenario}: {verdict.describe()}"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["decode", "draft_extend"])  # target verify: the fuzz above
@settings(max_examples=15, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_final_stage_bit_exact_fuzz_in_every_mode(mode, data):
    scenario = data.draw(mode_scenarios(mode, replays=5))
    verdict = compare_stage(stages.final(), scenario)
    assert verdict.exact, f"{scenario}: {verdict.describe()}"


def test_comparison_reports_first_differing_index():
    a = {"buf": torch.zeros(3, 4, dtype=torch.int32)}
    b = {"buf": a["buf"].clone()}
    b["buf"][2, 1] = 7
    m = first_mismatch(a, b)
    assert (m.buffer, m.index, m.expected, m.actual) == ("buf", (2, 1), 0, 7)
    assert str(m) == "buf[2, 1]: expected 0, got 7"


def test_first_mismatch_is_the_same_on_every_run():
    # Buffers present on one side only: the first in name order is reported, not a set's iteration order.
    names = [f"bs{i}.buf" for i in range(40)]
    expected = {name: torch.zeros(1) for name in names}
    assert first_mismatch(expected, {}).buffer == min(names)
    assert first_mismatch({}, dict(reversed(expected.items()))).buffer == min(names)


@pytest.mark.parametrize(
    "change, what",
    [
        (lambda t: t.to(torch.int64), "dtype"),
        (lambda t: t.t().contiguous().t(), "stride"),
        (lambda t: t[:2], "shape"),
    ],
)
def test_comparison_sees_dtype_stride_shape(change, what):
    a = torch.arange(12, dtype=torch.int32).view(3, 4)
    m = first_mismatch({"buf": a}, {"buf": change(a)})
    assert m is not None and m.what == what


def test_stale_columns_are_compared():
    # A stage that rewrote the whole page table (not only :max_seqlen_k) must be caught.
    base = Scenario(num_draft_tokens=2, page_size=1, index_topk=48, capture_bs=(4,))
    ref = base.runner(stages.load(stages.BASELINE))
    got = base.runner(stages.load(stages.BASELINE))
    batches = list(base.batches())
    for b in batches[:2]:
        ref.replay(b)
        got.replay(b)
    got.backend.decode_cuda_graph_metadata["page_table"][:, -1] += 1  # a column no replay wrote
    m = first_mismatch(captured_state(ref.backend), captured_state(got.backend))
    assert m is not None and m.buffer in ("page_table", "bs4.page_table_1", "bs4.real_page_table")
