"""upstream-check on the fused track (harness/upstream_fused.py) and the one table of every release.

Each cell is executed on the release's real files: the check must pass on the series and fail on a
patch that does not apply, a derived module that computes something else, and a signature that
breaks one of the release's callers. The one table (MATRIX.md) holds every release since 0.5.5.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from fused import cases, track
from fused.cases import Case
from harness import upstream, upstream_fused
from harness.series import REPO_ROOT
from harness.tracks import all_releases

pytestmark = pytest.mark.network  # the wheels of the fused releases

# The cheap part of upstream_fused.CASES (its wide row costs the interpreter most of a minute).
SMALL = tuple(c for c in upstream_fused.CASES if c.width < 1000)


def test_the_case_set_covers_what_it_says():
    names = [upstream_fused.case_name(c) for c in upstream_fused.CASES]
    assert {c.mode for c in upstream_fused.CASES} == set(cases.MODES)
    assert {c.page_size for c in upstream_fused.CASES} == {1, 64}
    assert any(c.bs == 0 for c in upstream_fused.CASES) and any(c.width > 2**20 for c in upstream_fused.CASES)
    assert any("no-page_table_1" in n for n in names) and any("paged_mqa_ctx_lens_2d" in n for n in names)
    assert {c.static_extend_len for c in upstream_fused.CASES if c.mode == "draft_extend"} == {True, False}
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("version", ["0.5.15", "0.5.17", "0.5.23"])
def test_a_release_row_on_the_series(monkeypatch, version):
    monkeypatch.setattr(upstream_fused, "CASES", SMALL)
    row = upstream_fused.run_release(version)
    assert row["error"] is None
    (cell,) = row["cells"]
    assert upstream_fused.cell_ok(cell), cell
    assert cell["cases"] == len(SMALL) and cell["call_sites"] >= 3
    assert not row["lint"]["added"] and row["lint"]["files"] == [track.release(version)["module"]]
    assert {s["function"] for s in row["callers"]} == set(upstream_fused.FUNCTIONS)
    assert all(s["where"].startswith("python/sglang/srt/layers/attention/") for s in row["callers"])


def test_the_export_patch_applies_only_onto_the_release_s_own_module():
    (patch, diff), = upstream_fused.export_patches("0.5.17")
    own = track.upstream_source("0.5.17")
    assert f"+++ b/{track.release('0.5.17')['module']}" in diff
    assert upstream_fused.applies("0.5.17", own, diff) is None
    other = track.upstream_source("0.5.20")  # the same path, another release's text
    assert "patch does not apply" in upstream_fused.applies("0.5.17", other, diff)


def test_a_derived_module_that_computes_something_else_is_not_equal():
    version = "0.5.23"
    good = upstream_fused.derived_sources(version)[-1]
    text = "dsa_seq = tl.minimum(seq, dsa_index_topk)"
    assert good.count(text) == 1
    topk = (Case("decode", (5, 70, 193), 193, topk=64),)
    upstream_text = track.upstream_source(version)
    mutant = good.replace(text, "dsa_seq = tl.minimum(seq, dsa_index_topk - 1)")
    runs, equal, failure = upstream_fused.equality(upstream_text, mutant, "physical_page_size", topk)
    assert (runs, equal) == (1, 0) and "dsa_cache_seqlens" in failure, failure
    assert upstream_fused.equality(upstream_text, good, "physical_page_size", topk)[1] == 1


def test_a_signature_that_breaks_a_caller_fails_the_callers_check():
    good = upstream_fused.derived_sources("0.5.20")[-1]
    assert all(c["ok"] for c in upstream_fused.check_callers("0.5.20", good))
    renamed = re.sub(r"\bnext_n\b", "num_draft_tokens", good)  # target verify's keyword, as the callers pass it
    broken = [c for c in upstream_fused.check_callers("0.5.20", renamed) if not c["ok"]]
    assert broken and all(c["function"] == "fused_dsa_target_verify_metadata" for c in broken)
    assert "num_draft_tokens" in broken[0]["problem"]


def test_kpool_is_read_from_the_wheel():
    assert upstream_fused.kpool("0.5.17") is None
    k = upstream_fused.kpool("0.5.23")
    assert k["module"] == "python/sglang/kernels/ops/attention/dsa/kpool_metadata/"
    # Every call goes through the manager's attributes since 0.5.20: all of them reach KPool.
    assert k["calls"] == [s["where"] for s in upstream_fused.call_sites("0.5.23")] and len(k["calls"]) == 5
    assert k["functions"] == [
        "decode.fused_dsa_decode_metadata_kpool", "draft_extend.fused_dsa_draft_extend_metadata_kpool",
        "verify.fused_dsa_target_verify_metadata_kpool"]
    assert upstream_fused.kpool("0.5.20")["functions"] == [
        "decode.fused_dsa_decode_metadata", "draft_extend.fused_dsa_draft_extend_metadata",
        "verify.fused_dsa_target_verify_metadata"]


# -- the CLI: the version picks the track ------------------------------------------------------------


@pytest.mark.parametrize("version, says", [("0.4.9", "not a release this series knows")])
def test_a_version_no_track_serves_is_one_line(version, says):
    proc = subprocess.run([sys.executable, "-m", "harness", "upstream-check", "--version", version],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and says in proc.stderr and "0.5.15 - 0.5.23" in proc.stderr, proc.stderr


# -- the one table and the merge -------------------------------------------------------------------


def _fused_row(version: str, equal: int = 3) -> dict:
    return {"version": version, "track": "fused", "module": track.release(version)["module"], "error": None,
            "cells": [{"patch": "0001-x.patch", "applies": True, "compiles": True, "lint": [], "cases": 3,
                       "equal": equal, "callers": 5, "call_sites": 5, "failure": None if equal == 3 else "differs"}],
            "lint": {"files": [], "patched": [], "upstream": [], "added": []}, "callers": [], "kpool": None}


def test_matrix_has_one_table_of_every_release_and_merges_each_track(tmp_path):
    stub_part = json.loads((REPO_ROOT / "reports" / "upstream" / "matrix.json").read_text())
    stub_part.pop("fused", None)
    upstream.write_report(upstream.merged(tmp_path, stub_part=stub_part), tmp_path)
    first = {**upstream_fused.header(), "releases": [_fused_row("0.5.17"), _fused_row("0.5.23", equal=2)]}
    upstream.write_report(upstream.merged(tmp_path, fused_part=first), tmp_path)
    again = {**upstream_fused.header(), "releases": [_fused_row("0.5.23")]}  # a resumed run: one release
    upstream.write_report(upstream.merged(tmp_path, fused_part=again), tmp_path)
    upstream.write_report(upstream.merged(tmp_path, stub_part=stub_part), tmp_path)  # keeps the fused rows

    report = json.loads((tmp_path / "matrix.json").read_text())
    assert [r["version"] for r in report["fused"]["releases"]] == ["0.5.17", "0.5.23"]
    assert report["fused"]["ok"] and report["releases"] == stub_part["releases"]
    assert list(report["tracks"]) == list(all_releases()) and report["tracks"]["0.5.14"] == "0.5.6"
    md = (tmp_path / "MATRIX.md").read_text()
    table = md.split("\n\n| release | track |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    tracks = {}
    for line in table:
        version, name = [c.strip() for c in line.strip("|").split("|")[:2]]
        tracks.setdefault(version, set()).add(name)
    assert list(tracks) == list(all_releases()) and len(tracks) == 29
    assert tracks["0.5.14"] == {"0.5.6"} and tracks["0.5.9"] == {"0.5.6"} and tracks["0.5.23"] == {"fused"}
    assert sum(line.startswith("| 0.5.9 | 0.5.6 |") for line in table) == len(stub_part["patches"])
    assert "| 0.5.16 | fused | - |" in md and "--track fused --version 0.5.16" in md  # not run: says how
    assert "| 0.5.23 | fused | 0001 | yes | yes | clean | 3/3 cases equal" in md


def test_a_patch_that_breaks_a_caller_fails_its_cell(monkeypatch):
    monkeypatch.setattr(upstream_fused, "CASES", SMALL[:1])
    derived = upstream_fused.derived_sources
    monkeypatch.setattr(upstream_fused, "derived_sources",
                        lambda v: [derived(v)[0]] + [re.sub(r"\bmax_len\b", "width", t) for t in derived(v)[1:]])
    row = upstream_fused.run_release("0.5.17")
    (cell,) = row["cells"]
    assert cell["applies"] and cell["compiles"] and not upstream_fused.cell_ok(cell)
    assert cell["callers"] < cell["call_sites"] and all(
        not c["ok"] for c in row["callers"] if c["function"] == "fused_dsa_decode_metadata")


def test_a_run_of_some_0_5_6_releases_keeps_the_others_rows_of_the_same_series(tmp_path):
    # The 0.5.6 track's matrix can be regenerated a few releases per process: their rows replace the
    # old ones, the other releases' rows stay (same series, same scenarios), and ok / problems follow
    # the merged rows; a row of another series is dropped, not kept as a verdict on this one.
    whole = json.loads((REPO_ROOT / "reports" / "upstream" / "matrix.json").read_text())
    whole.pop("fused", None)
    (tmp_path / "matrix.json").write_text(json.dumps(whole))
    failing = json.loads(json.dumps(whole["releases"][0]))
    failing["cells"][-1]["failure"] = "replay 3: differs"
    part = {**whole, "releases": [failing], "problems": [], "ok": True}
    merged = upstream.merged(tmp_path, stub_part=part)
    assert [r["version"] for r in merged["releases"]] == [r["version"] for r in whole["releases"]]
    assert merged["releases"][0] == failing and merged["releases"][1:] == whole["releases"][1:]
    assert not merged["ok"] and any("replay 3: differs" in p for p in merged["problems"])
    other_series = {**part, "patches": [*whole["patches"], "0099-new.patch"]}
    assert [r["version"] for r in upstream.merged(tmp_path, stub_part=other_series)["releases"]] == [failing["version"]]
