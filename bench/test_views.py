"""The benchmark views' own logic on CPU (Triton's interpreter): the benchmark of record writes its rows, the
report claims "faster" only where quartiles separate, inputs and floors."""

import json

import pytest
import torch

from bench import record, report
from bench.conftest import GPU
from bench.inputs import PROFILES, Config, profile_lengths

pytestmark = pytest.mark.skipif(GPU, reason="CPU checks; the GPU runs these scripts whole (bench/gpu_run.sh)")


def test_length_profiles_keep_the_longest_request_first():
    g = torch.Generator().manual_seed(0)
    for profile in PROFILES:
        lens = profile_lengths(profile, 16, 5000, g)
        assert lens[0] == 5000 and lens.max() == 5000 and lens.min() >= 1
    with pytest.raises(ValueError, match="unknown length profile"):
        profile_lengths("zipf", 4, 100, g)


def test_record_writes_rows_marked_not_comparable(tmp_path):
    out = tmp_path / "record.json"
    record.main(str(out))
    data = json.loads(out.read_text())
    assert data["environment"]["comparable"] is False
    assert [r["id"] for r in data["rows"]] == [c.id for c in record.SMOKE_INPUTS]
    assert all({"final-replay", "final-launch", "nop-1"} <= set(r["host"]) for r in data["rows"])


def test_faster_only_where_quartiles_separate():
    def timed(median):
        return {"us": median, "q1": median - 1, "q3": median + 1}

    assert report.separated(timed(10), timed(13)) == -1
    assert report.separated(timed(10), timed(11.5)) == 0
    assert report.versus(timed(13), timed(10)) == "slower"


def test_floor_counts_the_same_bytes_for_every_profile():
    assert len({Config(8, 4, 64, 4096, context_len=8192, profile=p).bytes_moved() for p in PROFILES}) == 1


@pytest.mark.skipif(GPU, reason="the GPU plan is the benchmark itself: bench/gpu_run.sh runs it")
def test_modes_benchmark_writes_rows_and_a_table(tmp_path):
    from bench import modes

    out = tmp_path / "modes.json"
    modes.main(str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], sorted(r["host"])) for r in rows] == [
        ("decode", ["baseline", "final", "final-alone"]), ("draft_extend", ["baseline", "final", "final-alone"])]
    assert "| draft_extend | 2 |" in modes.table(str(out))
