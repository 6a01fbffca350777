"""The graph-runner wiring: the stub CudaGraphRunner records the backend's metadata and stays bit-exact."""

import hashlib
import tomllib
from types import SimpleNamespace

import pytest
import torch

from harness import stages
from harness.compare import captured_state, first_mismatch
from harness.counters import count_replay
from harness.cuda_graph import forward_batch, graph_runner, recorded_against, standins
from harness.releases import REPO_PREFIX, UPSTREAM_FILES, map_patch, to_upstream
from harness.scenarios import Scenario, matrix
from harness.series import PATCH_DIR, STUB_DIR, Series, stage_name

RUNNER_STUB = f"{STUB_DIR}/cuda_graph_runner.py"
SMALL = Scenario(num_draft_tokens=3, page_size=64, index_topk=48, context_len=320, capture_bs=(2, 4), replays=3)


def first_recording_runner() -> str:
    """The first stage whose stub graph runner differs from baseline's: the wiring patch."""
    series = Series()
    base = series.materialize(stages.BASELINE)[RUNNER_STUB]
    return next(name for name in stages.patched() if series.materialize(name)[RUNNER_STUB] != base)


class Probe:
    """A backend that logs what the graph runner asks of it, in order."""

    def __init__(self, offers_recorder: bool):
        self.events = []
        self.capturing = None
        if offers_recorder:
            self.record_forward_metadata_cuda_graph = self._record

    def _record(self, bs, forward_mode):
        self.events.append(("captured record" if self.capturing() else "record", bs, forward_mode))

    def get_cuda_graph_seq_len_fill_value(self):
        return 1

    def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens,
                                                 forward_mode, spec_info):
        self.events.append(("capture", bs, forward_mode))

    def init_forward_metadata_replay_cuda_graph(self, bs, *args, seq_lens_cpu=None):
        self.events.append(("replay", bs))


def probe_runner(stage: str, offers_recorder: bool):
    module = stages.load(stage)
    stub = __import__(module.__package__ + ".cuda_graph_runner", fromlist=["CudaGraphRunner"])
    backend = Probe(offers_recorder)
    backend.capturing = standins(module).is_current_stream_capturing

    def forward(input_ids, positions, fb):
        backend.events.append(("captured forward" if backend.capturing() else "forward", fb.batch_size))
        return torch.zeros(())

    buffers = SimpleNamespace(input_ids=torch.zeros(8), positions=torch.zeros(8), req_pool_indices=torch.zeros(4),
                              seq_lens=torch.ones(4))
    model_runner = SimpleNamespace(attn_backend=backend, model=SimpleNamespace(forward=forward),
                                   tp_group=standins(module).TpGroup())
    runner = stub.CudaGraphRunner(model_runner, buffers, (4,), module.ForwardMode.TARGET_VERIFY, 2, torch.device("cpu"))
    runner.capture()
    return backend, module.ForwardMode.TARGET_VERIFY


def test_patched_runner_records_before_forward_in_every_run():
    backend, mode = probe_runner(first_recording_runner(), offers_recorder=True)
    assert backend.events == [
        ("capture", 4, mode),
        ("record", 4, mode), ("forward", 4),  # two warm-up runs: eager
        ("record", 4, mode), ("forward", 4),
        ("captured record", 4, mode), ("captured forward", 4),  # the captured run records
    ]


@pytest.mark.parametrize("offers_recorder", [True, False])
def test_unpatched_runner_and_backends_without_recorder_are_untouched(offers_recorder):
    stage = first_recording_runner() if not offers_recorder else stages.previous(first_recording_runner())
    backend, mode = probe_runner(stage, offers_recorder)
    assert backend.events == [("capture", 4, mode), ("forward", 4), ("forward", 4), ("captured forward", 4)]


def _recorded_scenarios() -> list:
    """Every third target-verify and decode scenario; the fast tier keeps the first of each mode x page size."""
    chosen = [s for s in matrix() if s.mode in ("target_verify", "decode")][::3]
    fast = {}
    for s in chosen:
        if max(s.capture_bs) <= 8:
            fast.setdefault((s.mode, s.page_size), s)
    return [pytest.param(s, id=s.name, marks=() if s in fast.values() else pytest.mark.slow) for s in chosen]


@pytest.mark.parametrize("scenario", _recorded_scenarios())
def test_recorded_graphs_are_bit_exact_against_baseline(scenario):
    ref = scenario.runner(stages.load(stages.BASELINE))
    got = scenario.runner(stages.load(stages.final()))
    ref_graphs, got_graphs = recorded_against(ref, got)
    for i, batch in enumerate(scenario.batches()):
        got.check(batch)
        expected = ref_graphs.replay(forward_batch(ref, batch))
        actual = got_graphs.replay(forward_batch(got, batch))
        mismatch = first_mismatch(captured_state(ref.backend), captured_state(got.backend))
        assert mismatch is None, f"step {i}: {mismatch}"
        assert int(actual) == int(expected), f"step {i}: the consumer read other metadata"


@pytest.mark.parametrize("record, launches", [(True, 0), (False, 1)])
def test_replay_prepare_launches_nothing_once_recorded(record, launches):
    runner = SMALL.runner(stages.load(stages.final()))
    graphs = graph_runner(runner, record=record)
    for batch in SMALL.batches():
        fb = forward_batch(runner, batch)
        with count_replay() as counts:
            graphs.replay_prepare(fb)
        assert counts.triton_launches == launches
        assert counts.device_kernels == 3  # the input copies, in every variant alike


def test_stub_runner_regions_are_pinned():
    pin = tomllib.loads((Series().root / STUB_DIR / "UPSTREAM_PIN.toml").read_text())
    (runner,) = [f for f in pin["file"] if f["stub"] == "cuda_graph_runner.py"]
    lines = Series().baseline[RUNNER_STUB].splitlines(keepends=True)
    for region in runner["region"]:
        start, end = region["stub_lines"]
        assert hashlib.sha256(b"".join(lines[start - 1 : end])).hexdigest() == region["sha256"], region["name"]


def test_pinned_files_map_to_their_upstream_paths():
    assert to_upstream(RUNNER_STUB) == "python/sglang/srt/model_executor/cuda_graph_runner.py"
    assert to_upstream(f"{STUB_DIR}/nsa_backend.py") == "python/sglang/srt/layers/attention/nsa_backend.py"
    assert to_upstream(f"{STUB_DIR}/nsa/x.py") == "python/sglang/srt/layers/attention/nsa/x.py"
    assert REPO_PREFIX + UPSTREAM_FILES[RUNNER_STUB] == to_upstream(RUNNER_STUB)
    series = Series()
    patch = next(p for p in series.patch_files if stage_name(p) == first_recording_runner())
    mapped = map_patch((series.root / PATCH_DIR / patch).read_bytes())
    assert b"+++ b/python/sglang/srt/model_executor/cuda_graph_runner.py\n" in mapped
    assert b"vendor_stub" not in mapped
