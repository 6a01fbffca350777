"""The committed reports regenerate from their committed data, here, without a GPU; stale data is said to be
stale, with the command that refreshes it; every stage is covered and every plot labelled."""

import json
import shutil

import pytest

from bench import report
from harness import stages


@pytest.fixture
def reports(tmp_path, monkeypatch):
    shutil.copytree(report.REPORTS, tmp_path, dirs_exist_ok=True)
    monkeypatch.setattr(report, "REPORTS", tmp_path)
    return tmp_path


def _record_hash(reports, machine):
    return report.saved_hash(json.loads((reports / machine / "record.json").read_text()))


@pytest.mark.parametrize("machine", ["h100", "cpu"])
def test_committed_report_regenerates_unchanged(reports, machine, monkeypatch):
    # As of the series the committed data measured, its hash and its final stage (a later series makes the
    # report say its data is stale: tested below), so that regenerating is compared with what was committed.
    if _record_hash(reports, machine):
        monkeypatch.setattr(report, "series_hash", lambda: _record_hash(reports, machine))
    record = json.loads((reports / machine / "record.json").read_text())
    monkeypatch.setattr(report.stages, "final", lambda: record["environment"]["final_stage"])
    monkeypatch.setattr(report.stages, "names", lambda: record["environment"]["stages"])
    committed = (reports / machine / "REPORT.md").read_text()
    assert report.write(machine).read_text() == committed


def test_data_of_another_series_is_reported_stale_with_the_command_that_refreshes_it(reports, monkeypatch):
    monkeypatch.setattr(report, "series_hash", lambda: "0123456789ab")
    for machine, advice in (("h100", "bench/gpu_run.sh OUT"), ("cpu", "`make report` on a machine without a GPU")):
        text = report.write(machine).read_text()
        assert "**Data older than the series.**" in text and "`record.json`" in text and advice in text


def test_this_machines_stale_runs_are_measured_again_not_reused(reports, monkeypatch):
    monkeypatch.setattr(report, "series_hash", lambda: "0123456789ab")
    ran = []
    monkeypatch.setattr(report.subprocess, "run", lambda cmd, check: ran.append(cmd[2]))
    report.produce_missing("cpu")
    assert ran == ["pytest", "bench.gpu_verdicts", "bench.record", "bench.modes"]
    assert not (reports / "cpu" / "record.json").exists()


def test_fresh_runs_are_reused(reports, monkeypatch):
    monkeypatch.setattr(report, "series_hash", lambda: _record_hash(reports, "cpu"))
    monkeypatch.setattr(report.subprocess, "run", lambda cmd, check: pytest.fail(f"re-ran {cmd}"))
    report.produce_missing("cpu")


@pytest.mark.parametrize("machine", ["h100", "cpu"])
def test_per_patch_table_has_every_stage(reports, machine):
    text = report.write(machine).read_text()
    table = text.split("## Per patch", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines() if line.startswith("| ")][1:]
    assert rows == stages.names()


def test_plots_say_what_each_line_is_and_cpu_plots_that_timings_are_not_comparable(reports, monkeypatch):
    import matplotlib.figure

    seen = []
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, path, **kwargs):
        labels = [text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
        panels = [[t.get_text() for t in ax.texts] for ax in fig.axes]
        seen.append((path.name, labels, panels))
        return real_savefig(fig, path, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    report.write("h100")
    h100, seen[:] = list(seen), []
    report.write("cpu")
    assert h100 and seen
    for name, labels, panels in h100 + seen:
        assert labels and all(" " in label for label in labels), (name, labels)  # words, not keys like nop-1
    assert all(report.NOT_COMPARABLE in texts for name, labels, panels in seen for texts in panels)
    assert not any(report.NOT_COMPARABLE in texts for name, labels, panels in h100 for texts in panels)


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
    row = {"floor_us": floor, "kernel": {"final-launch": _timed(final), "final-twin": _timed(twin),
                                         "nop-args": _timed(nop)}}
    assert not report.within(target, floor, final)
    assert report.what_explains(target, row) == cause


def test_a_record_without_controls_says_so_rather_than_counting_zero():
    target = {"limit": 1.2, "min_floor_us": 25.0, "slack_us": 5.0}
    rows = [{"id": "bs32", "floor_us": 36.0, "kernel": {"final-launch": _timed(44.8)}}]
    numbers = report.kernel_vs_floor(target, "final", rows)
    assert not numbers["met"] and numbers["over"] == 1
    assert numbers["attribution"].startswith("This record has no controls")


def test_step_report_reads_every_number_from_spec_step_json(tmp_path, monkeypatch):
    # STEP.md: the step table, the per-runner table and the target, judged from the data alone.
    data = json.loads((report.REPORTS.parent / "notebook/h200/spec_step_run1_eager_graphs_recorded.json").read_text())
    data["host"][0]["recorded_extra_per_runner"]["draft"]["median"] = 1.25  # within the limit: 8 (runner, bs) left over it
    (tmp_path / "h200").mkdir()
    (tmp_path / "h200" / "spec_step.json").write_text(json.dumps(data))
    monkeypatch.setattr(report, "REPORTS", tmp_path)
    text = report.write_step("h200").read_text()
    assert "| 1 | 1586.4 [1531.7, 1730.5] |" in text and "| 256 | draft (all steps) | 720.7 |" in text
    assert "MISSED on 8 of 21 (runner, bs)" in text and "worst 8.5 µs (draft (all steps), bs 256)" in text
    for x in data["host"]:
        for p in report.STEP_RUNNERS:
            x["recorded_extra_per_runner"][p]["median"] = 0.5
    (tmp_path / "h200" / "spec_step.json").write_text(json.dumps(data))
    assert "at every bs: met; worst 0.5 µs" in report.write_step("h200").read_text()
