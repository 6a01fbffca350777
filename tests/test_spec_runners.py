"""The speculative step's draft runner and draft-extend runner record their metadata too.

NativeSparseAttnMultiStepBackend's recorder (every draft step's backend, decode mode) bit-exact
against baseline on whole buffers; the runners' own code (stubs and every release's real files) is
executed by harness.spec_runners."""

from unittest import mock

import pytest
import torch

from harness import stages
from harness.compare import first_mismatch
from harness.cuda_graph import RECORDED, RECORDER
from harness.releases import version_key
from harness.scenarios import Scenario
from harness.spec_runners import (
    RUNNERS,
    SpecRunner,
    Step,
    backend_state,
    build_backend,
    compare_runners,
    stub_side,
)

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU tensors (the interpreter)")

STEP = Step(
    Scenario(num_draft_tokens=4, page_size=64, index_topk=48, mode="decode", context_len=192,
             capture_bs=(1, 3, 4), replays=4, seed=11),
    num_steps=3,
)


def _captured(module, step=STEP):
    """The multi-step backend of `module` with every bs captured on static inputs, as the draft
    runner captures it (its own req_pool_indices / seq_lens, filled with the fill value)."""
    backend = build_backend(module, "draft", step)
    max_bs = max(step.scenario.capture_bs)
    static = dict(
        req_pool_indices=torch.zeros(max_bs, dtype=torch.int32),
        seq_lens=torch.ones(max_bs, dtype=torch.int32),
        seq_lens_cpu=torch.ones(max_bs, dtype=torch.int32),
    )
    backend.init_cuda_graph_state(max_bs, max_bs)
    for bs in sorted(step.scenario.capture_bs, reverse=True):
        batch = mock.Mock(batch_size=bs, spec_info=None, **{k: v[:bs] for k, v in static.items()})
        backend.init_forward_metadata_capture_cuda_graph(batch)
    return backend, static


def _batch(static, bs):
    return mock.Mock(batch_size=bs, spec_info=None, **{k: v[:bs] for k, v in static.items()})


def _pad_copy(static, batch, bs):
    """The draft runner's replay: padded slots get the fill value, pool indices stay stale."""
    if bs != batch.raw_bs:
        static["seq_lens"].fill_(1)
        static["seq_lens_cpu"].fill_(1)
    static["seq_lens"][: batch.raw_bs].copy_(batch.seq_lens)
    static["seq_lens_cpu"][: batch.raw_bs].copy_(batch.seq_lens)
    static["req_pool_indices"][: batch.raw_bs].copy_(batch.req_pool_indices)


def _record(backend, bs, capturing):
    with mock.patch.object(torch.cuda, "is_current_stream_capturing", lambda: capturing):
        backend.record_forward_metadata_cuda_graph(bs, _decode(backend))


def _decode(backend):
    return type(backend.attn_backends[0]).__init__.__globals__["ForwardMode"].DECODE


def test_multi_step_recorder_is_every_step_bit_exact_on_whole_buffers():
    reference, ref_static = _captured(stages.load(stages.BASELINE))
    recorded, static = _captured(stages.load(stages.final()))
    decode = _decode(recorded)
    assert not hasattr(reference, "record_forward_metadata_cuda_graph")  # baseline has no recorder
    for bs in STEP.scenario.capture_bs:
        assert (bs, decode) not in recorded.recorded_forward_metadata_cuda_graph
        _record(recorded, bs, capturing=False)  # a warm-up: eager, on the static inputs
        reference.init_forward_metadata_replay_cuda_graph(_batch(ref_static, bs), bs)
        assert first_mismatch(backend_state(reference), backend_state(recorded)) is None
        _record(recorded, bs, capturing=True)  # the captured run
        assert (bs, decode) in recorded.recorded_forward_metadata_cuda_graph
        assert all((bs, decode) in b.recorded_forward_metadata_cuda_graph for b in recorded.attn_backends)
    for r, batch in enumerate(STEP.scenario_for("draft").batches()):
        bs = next(b for b in sorted(STEP.scenario.capture_bs) if b >= batch.raw_bs)
        _pad_copy(ref_static, batch, bs)
        _pad_copy(static, batch, bs)
        reference.init_forward_metadata_replay_cuda_graph(_batch(ref_static, bs), bs)
        _record(recorded, bs, capturing=True)  # what the graph's replay launches, per step
        mismatch = first_mismatch(backend_state(reference), backend_state(recorded))
        assert mismatch is None, f"replay {r} (bs {bs}): {mismatch}"
    assert len(recorded.attn_backends) == STEP.num_steps


def test_one_step_left_to_its_replay_call_keeps_the_whole_call():
    recorded, _ = _captured(stages.load(stages.final()))
    decode, bs = _decode(recorded), max(STEP.scenario.capture_bs)
    del recorded.attn_backends[1].cuda_graph_metadata_launches[bs, "decode"]  # that step: no fused launch
    _record(recorded, bs, capturing=True)
    assert (bs, decode) in recorded.attn_backends[0].recorded_forward_metadata_cuda_graph
    assert (bs, decode) not in recorded.recorded_forward_metadata_cuda_graph


def test_a_capture_for_bs_drops_it_until_every_step_records_again():
    recorded, static = _captured(stages.load(stages.final()))
    decode, bs = _decode(recorded), max(STEP.scenario.capture_bs)
    _record(recorded, bs, capturing=True)
    assert (bs, decode) in recorded.recorded_forward_metadata_cuda_graph
    recorded.init_forward_metadata_capture_cuda_graph(_batch(static, bs))  # a re-capture: new launches
    assert not any((bs, decode) in b.recorded_forward_metadata_cuda_graph for b in recorded.attn_backends)
    assert (bs, decode) not in recorded.recorded_forward_metadata_cuda_graph
    _record(recorded, bs, capturing=False)  # a warm-up records nothing
    assert (bs, decode) not in recorded.recorded_forward_metadata_cuda_graph
    _record(recorded, bs, capturing=True)
    assert (bs, decode) in recorded.recorded_forward_metadata_cuda_graph


# -- the runners' own code, executed (harness.spec_runners) ------------------------------------

RUNNER_STEP = Step(
    Scenario(num_draft_tokens=4, page_size=64, index_topk=48, context_len=192, capture_bs=(1, 3, 4),
             replays=4, seed=11),
    num_steps=3,
)


@pytest.mark.parametrize("kind", RUNNERS)
def test_patched_stub_runner_records_and_stays_bit_exact(kind):
    verdict = compare_runners(kind, stub_side(stages.BASELINE, kind), stub_side(stages.final(), kind), RUNNER_STEP)
    assert verdict.records and verdict.ok, verdict.describe()
    replays = verdict.events[verdict.events.index("replay"):]
    assert replays.count("replay") == RUNNER_STEP.scenario.replays and not any("replay call" in e for e in replays)


@pytest.mark.parametrize("kind", RUNNERS)
def test_unpatched_runner_around_the_patched_backend_keeps_its_replay_call(kind):
    candidate = stub_side(stages.final(), kind, runner_stage=stages.BASELINE)
    verdict = compare_runners(kind, stub_side(stages.BASELINE, kind), candidate, RUNNER_STEP)
    assert not verdict.records and verdict.declines is None and verdict.ok, verdict.describe()
    assert "record" not in " ".join(verdict.events)
    launches = 1 if kind == "draft_extend" else RUNNER_STEP.num_steps  # one fused launch per backend
    assert f"replay call: {launches} launches" in verdict.events


def test_whole_buffers_see_a_warm_up_the_reference_does_not_mirror():
    # The candidate's warm-ups write the metadata of the capture-time static inputs; a reference
    # that skips them differs in rows no later replay rewrites: the comparison must see that.
    with mock.patch.object(SpecRunner, "_warmup_launch", lambda self, bs: None):
        verdict = compare_runners(
            "draft", stub_side(stages.BASELINE, "draft"), stub_side(stages.final(), "draft"), RUNNER_STEP
        )
    assert verdict.records and not verdict.ok and "replay 0" in verdict.failure


@pytest.mark.parametrize("kind", RUNNERS)
def test_a_runner_not_offered_the_recorder_finds_neither_recorder_nor_recorded_view(kind):
    # bench.spec_step's eager variants: the patched runner over the patched backend with its recorder
    # hidden must launch the metadata in every replay call, never record it at capture.
    from bench.spec_step import spec_runner

    runner = spec_runner(stages.final(), kind, RUNNER_STEP, "cpu", offer_recorder=False)
    assert not hasattr(runner.proxy, RECORDER) and not hasattr(runner.proxy, RECORDED)
    assert not any(e.endswith("record") for e in runner.events)
    runner.events.clear()
    runner.proxy.lean = False  # count the replay call's launches
    runner.replay(next(iter(runner.scenario.batches("cpu"))))
    assert any(e.startswith("replay call: ") and not e.endswith(" 0 launches") for e in runner.events), runner.events


@pytest.mark.slow
def test_step_benchmark_runs_every_implementation_on_cpu():
    # bench.spec_step's body once on CPU (the interpreter; timings not comparable): the recorded
    # runners bit-exact against baseline, every implementation timed at every bs.
    from bench import spec_step

    result = spec_step.run("cpu", capture_bs=(1, 2), context=192, rounds=2, pool_size=8)
    assert all(v["failure"] is None and v["exact"] == v["replays"] for k, v in result["bit_exact"].items()
               if k != "target_verify")
    assert result["bit_exact"]["target_verify"]["exact"]
    assert result["bit_exact"]["draft"]["records"] and result["bit_exact"]["draft_extend"]["records"]
    assert [r["bs"] for r in result["host"]] == [1, 2]
    assert set(result["host"][0]["pieces"]) == set(spec_step.VARIANTS)


# -- bad input: refused at capture, one line ------------------------------------------------------

BAD_STATIC = {
    "float lengths": lambda t: t.to(torch.float32),
    "strided": lambda t: torch.stack([t, t], dim=1)[:, 0],
    "one short": lambda t: t[:-1],
}


@pytest.mark.parametrize(
    "name, bad",
    # A short seq_lens sets the captured bs itself (the metadata is sized from it): the mismatch is
    # then refused under req_pool_indices' name, the case below.
    [("seq_lens", "float lengths"), ("seq_lens", "strided"), *(("req_pool_indices", bad) for bad in BAD_STATIC)],
)
def test_multi_step_capture_refuses_static_inputs_outside_the_contract(bad, name):
    # The recorder's capture-time checks, for every step's backend: the launch the recorder records
    # reads exactly the tensors the capture passed, so they must be what a replay refreshes.
    backend = build_backend(stages.load(stages.final()), "draft", STEP)
    bs = max(STEP.scenario.capture_bs)
    backend.init_cuda_graph_state(bs, bs)
    static = {"req_pool_indices": torch.zeros(bs, dtype=torch.int32), "seq_lens": torch.ones(bs, dtype=torch.int32)}
    static[name] = BAD_STATIC[bad](static[name])
    with pytest.raises(ValueError) as e:
        backend.init_forward_metadata_capture_cuda_graph(mock.Mock(batch_size=bs, spec_info=None, **static))
    message = str(e.value)
    # Decode captures an int32 seq_lens as cache_seqlens_int32 itself (upstream's .to() copies nothing):
    # a strided one is refused under that buffer's name, its stride given.
    named = "cache_seqlens_int32" if (name, bad) == ("seq_lens", "strided") else name
    assert named in message and "\n" not in message


@pytest.mark.parametrize("kind, name", [("draft", "seq_lens"), ("draft_extend", "accept_length")])
def test_runner_whose_static_inputs_break_the_contract_is_refused_at_capture(kind, name):
    # A runner keeping a static input the launch cannot take as is (int16 here): refused while it
    # captures, in one line naming the input, before any graph exists.
    attributes = SpecRunner._attributes

    def int16_static(self):
        attrs = attributes(self)
        attrs[name] = attrs[name].to(torch.int16)
        return attrs

    with mock.patch.object(SpecRunner, "_attributes", int16_static), pytest.raises(ValueError) as e:
        SpecRunner(kind, *stub_side(stages.final(), kind)[:2], stages.load(stages.final()),
                   build_backend(stages.load(stages.final()), kind, RUNNER_STEP), RUNNER_STEP)
    assert name in str(e.value) and "int16" in str(e.value) and "\n" not in str(e.value)


# -- every release's real runners (slow) ----------------------------------------------------------

RECORDS = {  # release -> the runners that record (the others decline, with why)
    **dict.fromkeys(("0.5.5", "0.5.5.post1", "0.5.5.post2"), {"draft"}),
    **dict.fromkeys(("0.5.5.post3", "0.5.6", "0.5.6.post1", "0.5.6.post2"), {"draft", "draft_extend"}),
    **dict.fromkeys(("0.5.7", "0.5.8", "0.5.8.post1", "0.5.9", "0.5.10", "0.5.10.post1", "0.5.11", "0.5.12",
                     "0.5.12.post1"), set()),
}
NOT_FUSED = "this release's replay of the mode is not fused"
DEEPGEMM = "on CUDA its replay call refreshes DeepGEMM's paged-MQA schedule from the lengths"


@pytest.fixture(scope="module")
def derivation():
    from harness.releases import Derivation
    from harness.series import Series

    with Derivation(Series()) as d:
        yield d


def _release(derivation, version):
    from harness.upstream_exec import load_release

    stub = stages.load(stages.BASELINE)
    release, applied = derivation.table.release(version), derivation.derive(version)
    trees = derivation.files(derivation.base_commit(version)), derivation.files(applied[-1].commit)
    return [(tree, load_release(version, tree, stub, release.model_runner, label))
            for tree, label in zip(trees, ("unpatched", "series"))]


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("version", RECORDS)
def test_real_runners_record_where_the_backend_allows_and_stay_bit_exact(derivation, version):
    from harness.spec_runners import release_runners

    verdicts = release_runners(*_release(derivation, version))
    assert all(v.ok for v in verdicts.values()), {k: v.describe() for k, v in verdicts.items()}
    assert {k for k, v in verdicts.items() if v.records} == RECORDS[version]
    for kind, verdict in verdicts.items():
        if kind not in RECORDS[version]:
            expected = DEEPGEMM if version_key(version) >= version_key("0.5.7") else NOT_FUSED
            assert verdict.declines == expected, verdict.describe()


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("version", ["0.5.7", "0.5.9"])
def test_draft_runner_without_mtp_precompute_declines_and_stays_bit_exact(derivation, version, monkeypatch):
    # 0.5.7+'s multi-step replay precomputes once for every step by default; switched off, each step's
    # backend makes its own (fused) replay call: the recorder still declines, buffers still match.
    from harness.spec_runners import release_runners

    before, after = _release(derivation, version)
    monkeypatch.setenv("SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA", "false")  # 0.5.9 reads envs
    for _, module in (before, after):
        if hasattr(module.module, "NSA_ENABLE_MTP_PRECOMPUTE_METADATA"):  # 0.5.7-0.5.8: a module constant
            monkeypatch.setattr(module.module, "NSA_ENABLE_MTP_PRECOMPUTE_METADATA", False)
    verdict = release_runners(before, after)["draft"]
    assert verdict.ok and verdict.declines == DEEPGEMM, verdict.describe()
    assert set(verdict.replay_launches) == {len(build_backend(after[1], "draft", RUNNER_STEP).attn_backends)}


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("version, verb", [("0.5.6", "records"), ("0.5.9", "declines: " + DEEPGEMM)])
def test_matrix_row_says_per_runner_whether_it_records_or_why_not(derivation, version, verb):
    from harness.spec_runners import RUNNER_MODE, record_in_row

    row = {"decode": {}, "draft_extend": {}, "target_verify": {}}
    assert record_in_row(row, *_release(derivation, version)) is None
    lines = {mode: next(iter(row[mode]["runners recording"].values())) for mode in RUNNER_MODE.values()}
    assert all(line.startswith(verb) and "4/4 replays bit-exact" in line for line in lines.values()), lines
    assert "runners recording" not in row["target_verify"]  # that runner's cell is harness.upstream's
