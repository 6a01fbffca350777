"""The speculative step's draft runner and draft-extend runner record their metadata too.

NativeSparseAttnMultiStepBackend's recorder (every draft step's backend, decode mode) bit-exact
against baseline on whole buffers; the runners' own code (stubs and every release's real files) is
executed by harness.spec_runners."""

from pathlib import Path
from unittest import mock

import pytest
import torch

from harness import stages
from harness.compare import first_mismatch
from harness.scenarios import Scenario
from harness.spec_runners import RUNNERS, SpecRunner, Step, backend_state, build_backend, compare_runners

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


# -- the runners' own code, executed (harness.spec_runners) ------------------------------------

RUNNER_STEP = Step(
    Scenario(num_draft_tokens=4, page_size=64, index_topk=48, context_len=192, capture_bs=(1, 3, 4),
             replays=4, seed=11),
    num_steps=3,
)


def _stub_side(stage: str, kind: str, runner_stage: str | None = None):
    """(runner file text, its name, backend module): the stage's stub runner around its backend."""
    module = stages.load(stage)
    runner_module = stages.load(runner_stage or stage)
    name = RUNNERS[kind][0]
    return (Path(runner_module.__file__).parent / name).read_text(), name, module


@pytest.mark.parametrize("kind", RUNNERS)
def test_patched_stub_runner_records_and_stays_bit_exact(kind):
    verdict = compare_runners(kind, _stub_side(stages.BASELINE, kind), _stub_side(stages.final(), kind), RUNNER_STEP)
    assert verdict.records and verdict.ok, verdict.describe()
    replays = verdict.events[verdict.events.index("replay"):]
    assert replays.count("replay") == RUNNER_STEP.scenario.replays and not any("replay call" in e for e in replays)


@pytest.mark.parametrize("kind", RUNNERS)
def test_unpatched_runner_around_the_patched_backend_keeps_its_replay_call(kind):
    candidate = _stub_side(stages.final(), kind, runner_stage=stages.BASELINE)
    verdict = compare_runners(kind, _stub_side(stages.BASELINE, kind), candidate, RUNNER_STEP)
    assert not verdict.records and verdict.declines is None and verdict.ok, verdict.describe()
    assert "record" not in " ".join(verdict.events)
    launches = 1 if kind == "draft_extend" else RUNNER_STEP.num_steps  # one fused launch per backend
    assert f"replay call: {launches} launches" in verdict.events


def test_whole_buffers_see_a_warm_up_the_reference_does_not_mirror():
    # The candidate's warm-ups write the metadata of the capture-time static inputs; a reference
    # that skips them differs in rows no later replay rewrites: the comparison must see that.
    with mock.patch.object(SpecRunner, "_warmup_launch", lambda self, bs: None):
        verdict = compare_runners(
            "draft", _stub_side(stages.BASELINE, "draft"), _stub_side(stages.final(), "draft"), RUNNER_STEP
        )
    assert verdict.records and not verdict.ok and "replay 0" in verdict.failure
