"""fused.report: each target stated MET or MISSED from the data (synthetic runs built to meet and to
miss each one), and the committed H100 report regenerates byte for byte from the committed JSON."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fused import report

REPO_ROOT = Path(__file__).resolve().parents[1]
H100 = REPO_ROOT / "reports" / "h100"
TARGET_IDS = [target["id"] for target in report.load_targets()["target"]]


def _row(bs: int, profile: str, floor: float, ours: float, shipped: float, host_max: float) -> dict:
    row = {"mode": "decode", "bs": bs, "width": 163840, "profile": profile, "floor_us": floor}
    for name, us in (
        ("ours", ours),
        ("upstream_as_shipped", shipped),
        ("upstream_host_max", host_max),
        ("empty_kernel", 4.0),
    ):
        for kind in ("graph", "bare"):
            # Bare times far off every target: a report judging them instead of the graph's would differ.
            row[f"{name}/{kind}_us"] = us if kind == "graph" else us * 50
            row[f"{name}/{kind}_rounds"] = 3
    return row


def _run(changes: dict[int, dict] | None = None) -> dict:
    """A run meeting every target; `changes` {row index: {field: value}} bends it."""
    fields = ("bs", "profile", "floor", "ours", "shipped", "host_max")
    specs = [
        dict(zip(fields, (128, "all_64k", 20.0, 25.0, 100.0, 25.0))),  # (a) 25 <= 26, (b) 4x
        dict(zip(fields, (128, "all_le_4k", 1.0, 6.0, 150.0, 6.0))),  # (a) 6 <= 7, (c) 25x
        # bs 8, short rows: 1.7x, outside (b) and (c); a filter that kept it would miss them.
        dict(zip(fields, (8, "all_le_4k", 0.1, 6.0, 10.0, 6.0))),
    ]
    for index, change in (changes or {}).items():
        specs[index].update(change)
    rows = [_row(**spec) for spec in specs]
    return {
        "card": "Synthetic GPU",
        "torch": "0",
        "triton": "0",
        "python": "3",
        "patched_sha256": "a" * 64,
        "equality": {"0.5.23": {"cases": 2, "failures": []}, "patched": {"cases": 2, "failures": []}},
        "benchmark": {"copy_bandwidth_Bps": 3e12, "draft": 4, "page_size": 64, "rows": rows},
    }


def _verdicts(data: dict, current_sha: str = "a" * 64) -> dict[str, str]:
    text = report.render(data, report.load_targets(), "synthetic", current_sha)
    verdicts = {}
    for target_id in TARGET_IDS:
        (line,) = [line for line in text.splitlines() if line.startswith(f"- ({target_id}) ")]
        verdicts[target_id] = line
    return verdicts


def test_a_run_built_to_meet_every_target_is_reported_met():
    for target_id, line in _verdicts(_run()).items():
        assert "**MET**" in line, line


# Each change misses exactly one target, on the row named.
MISSES = {
    "a": ({2: {"ours": 6.2, "host_max": 6.2}}, "bs 8", "ours / bound = 1.02"),  # bound max(0.13, 6.1)
    "b": ({0: {"shipped": 70.0}}, "bs 128, width 163840, all_64k", "speedup = 2.80x"),
    "c": ({1: {"shipped": 110.0}}, "bs 128, width 163840, all_le_4k", "speedup = 18.33x"),
    "d": ({0: {"host_max": 23.5}}, "bs 128, width 163840, all_64k", "= +1.50 µs"),
}


@pytest.mark.parametrize("missed", sorted(MISSES))
def test_a_run_built_to_miss_one_target_is_reported_missed_there_only(missed):
    changes, where, worst = MISSES[missed]
    for target_id, line in _verdicts(_run(changes)).items():
        if target_id == missed:
            assert "**MISSED**" in line and where in line and worst in line, line
            assert "missed on 1 of" in line, line
        else:
            assert "**MET**" in line, line


def test_a_target_the_empty_kernel_cannot_meet_is_said_so_where_and_only_there():
    # (c) at row 1: upstream 70 µs allows 3.5 µs at 20x, under the empty kernel's 4.0.
    line = _verdicts(_run({1: {"shipped": 70.0}}))["c"]
    assert "**MISSED**" in line and "on 1 of them the empty kernel alone takes longer" in line, line
    assert "empty kernel 4.00 µs, allowed 3.50 µs" in line, line
    for missed, (changes, _, _) in MISSES.items():  # missed, but within the empty kernel's reach
        assert "empty kernel alone" not in _verdicts(_run(changes))[missed]


def test_no_measured_row_is_neither_met_nor_missed():
    data = _run()
    data["benchmark"]["rows"] = []
    assert all("**NOT MEASURED**" in line for line in _verdicts(data).values())


def test_data_of_another_kernel_is_said_plainly_with_the_command_that_refreshes_it():
    text = report.render(_run(), report.load_targets(), "h100", "b" * 64)
    assert "this data measured another kernel" in text
    assert "python -m fused.gpu_check run --out reports/h100/fused.json" in text
    assert "another kernel" not in report.render(_run(), report.load_targets(), "h100", "a" * 64)


def test_committed_h100_report_regenerates_identically(tmp_path):
    machine = tmp_path / "h100"
    machine.mkdir()
    shutil.copy(H100 / "fused.json", machine / "fused.json")
    assert report.main([str(machine)]) == 0
    assert (machine / "FUSED.md").read_text() == (H100 / "FUSED.md").read_text(), (
        "reports/h100/FUSED.md is stale: make fused-report MACHINE=h100"
    )


def test_missing_json_is_one_line_and_writes_nothing(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fused.gpu_check run" in err
    assert not (tmp_path / "FUSED.md").exists()
