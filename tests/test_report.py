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
