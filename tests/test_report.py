"""The committed reports regenerate from their committed data, here, without a GPU."""

import shutil

import pytest

from bench import report
from harness import stages


@pytest.fixture
def reports(tmp_path, monkeypatch):
    shutil.copytree(report.REPORTS, tmp_path, dirs_exist_ok=True)
    monkeypatch.setattr(report, "REPORTS", tmp_path)
    return tmp_path


@pytest.mark.parametrize("machine", ["h100", "cpu"])
def test_committed_report_regenerates_unchanged(reports, machine):
    committed = (reports / machine / "REPORT.md").read_text()
    assert report.write(machine).read_text() == committed


def test_committed_graph_report_regenerates_unchanged(reports):
    committed = (reports / "h100" / "GRAPH.md").read_text()
    assert report.write_graph("h100").read_text() == committed


def test_targets_are_judged_on_the_final_stage(reports):
    text = report.write("h100").read_text()
    targets = text.split("## Targets", 1)[1].split("\n## ", 1)[0]
    # judged on it, or, for a run that predates it, a line saying it is missing
    assert f"`{stages.final()}` host time <= 1.5x" in targets or f"final stage `{stages.final()}` is not in" in targets


def _timed(us: float) -> dict:
    return {"us": us, "q1": us, "q3": us}


@pytest.mark.parametrize(
    "floor, final, twin, nop, cause",
    [
        (36.0, 44.8, 44.7, 3.9, "launch"),  # full rows at bs 32: only the empty kernel's time is over
        (57.7, 80.4, 68.9, 4.3, "stride"),  # 64k rows in the 163840 table: the wider twin is within 1.2x
        (0.5, 6.4, 6.3, 4.1, "launch"),  # bs 1: within floor + 5 less the empty kernel, twin no faster
        (3.6, 10.3, 9.2, 0.5, "neither"),
        (3.6, 10.3, 9.2, 1.0, "both"),  # 9.2 - 1.0 <= 8.6, while 9.2 and 10.3 - 1.0 are not
    ],
)
def test_what_explains_a_miss_comes_from_the_controls_of_the_same_run(floor, final, twin, nop, cause):
    target = {"limit": 1.2, "min_floor_us": 25.0, "slack_us": 5.0}
    row = {"floor_us": floor, "kernel": {"final": _timed(final), "final-twin": _timed(twin), "nop-args": _timed(nop)}}
    assert not report.within(target, floor, final)
    assert report.what_explains(target, row) == cause


def test_a_record_without_controls_says_so_rather_than_counting_zero():
    target = {"limit": 1.2, "min_floor_us": 25.0, "slack_us": 5.0}
    rows = [{"id": "bs32", "floor_us": 36.0, "kernel": {"final": _timed(44.8)}}]
    numbers = report.kernel_vs_floor(target, "final", rows)
    assert not numbers["met"] and numbers["over"] == 1
    assert numbers["attribution"].startswith("This record has no controls")
