"""The 0.5.6-track series on sglang 0.5.10 - 0.5.12.post1: derived (drops, resolutions, fixups and
rename maps kept as data in patches/releases/ and patches/releases.toml) and executed.

Fast: the derivation of each release (a scratch git repository, no replay), the rename map's
round trip, the per-release merge of matrix.json. Slow: each release's real files run unpatched
and patched, one scenario per mode, whole buffers, the graph runner around the real backend.
"""

from __future__ import annotations

import json
import re

import black
import pytest

from harness import upstream
from harness.releases import (
    Derivation,
    ReleaseError,
    black_formatted,
    release_files,
    rename,
    renamed_back,
)
from harness.scenarios import matrix
from harness.series import Series
from harness.tracks import STUB, all_releases, track_for_version

DERIVED = ("0.5.10", "0.5.10.post1", "0.5.11", "0.5.12", "0.5.12.post1")
BACKEND = "python/sglang/srt/layers/attention/nsa_backend.py"
DRAFT_RUNNER = "python/sglang/srt/speculative/eagle_draft_cuda_graph_runner.py"
# What each release's spec input calls the accepted-token counts the series reads as accept_length.
ACCEPT_NAME = {"0.5.10": "accept_length", "0.5.10.post1": "accept_length", "0.5.11": "num_accepted_tokens",
               "0.5.12": "num_accept_tokens", "0.5.12.post1": "num_accept_tokens"}


@pytest.fixture(scope="module")
def derivation():
    with Derivation(Series()) as d:
        yield d


def test_the_stub_track_serves_them_and_every_release_has_a_track():
    for version in DERIVED:
        assert track_for_version(version) is STUB and version in STUB.versions()
    assert len(all_releases()) == 29 and {track_for_version(v).name for v in all_releases()} == {"0.5.6", "fused"}


@pytest.mark.network
@pytest.mark.parametrize("version", DERIVED)
def test_derivation_drops_0001_and_takes_every_other_patch(derivation, version):
    """0001 is dropped (upstream's seqlens_expand_triton does its work): its place is an empty
    commit, which the export does not mail; every other patch reaches the release."""
    applied = derivation.derive(version)
    assert [a.patch for a in applied] == Series().patch_files
    hows = {a.patch.split("-")[0]: a.how for a in applied}
    assert hows["0001"] == "dropped" and derivation.dropped(applied[0].patch, version)
    assert derivation.diff(version, 0) == ""
    assert all(how != "dropped" for patch, how in hows.items() if patch != "0001")
    assert all(derivation.diff(version, i) for i in range(1, len(applied)))


@pytest.mark.network
@pytest.mark.parametrize("version", DERIVED)
def test_the_derived_release_is_its_own_files_plus_the_series_under_its_names(derivation, version):
    base = derivation.files(derivation.base_commit(version))
    for path, data in release_files(version).items():
        assert base[path] == data, f"{path}: the derivation's base is not the release's own file"
    final = derivation.files(derivation.derive(version)[-1].commit)
    backend = final[BACKEND].decode()
    compile(backend, BACKEND, "exec")
    name = ACCEPT_NAME[version]
    assert f"spec_info.{name}[:bs]" in backend
    if name != "accept_length":  # the series' name is gone from every file it touches, whole words
        for path, data in final.items():
            assert not re.search(rb"\baccept_length\b", data), path
    # The unfused replay's device sync and upstream's host list for target verify are gone.
    replay = backend.split("def init_forward_metadata_replay_cuda_graph(", 1)[1].split("\n    def ")[0]
    assert [line for line in replay.splitlines() if ".tolist()" in line.split("#")[0]] == []
    for path, data in final.items():  # the rename pushed no line past black's 88 columns
        if path.endswith(".py") and data != base.get(path):
            assert black.format_str(data.decode(), mode=black.Mode(line_length=88)) == data.decode(), path


@pytest.mark.network
@pytest.mark.parametrize("version", ("0.5.11", "0.5.12"))
def test_the_draft_runner_records_on_the_backend_it_captures_on(derivation, version):
    """0.5.11 gives the draft runner its own draft_attn_backend: 0010's recorder and replay check
    follow it there (a fixup and a resolution in patches/releases/0010-draft-runner.toml)."""
    runner = derivation.files(derivation.derive(version)[-1].commit)[DRAFT_RUNNER].decode()
    assert "self.model_runner.draft_attn_backend" not in runner.split("def capture_one_batch_size", 1)[1]
    assert re.search(r"getattr\(\s*self\.draft_attn_backend,\s*\"record_forward_metadata_cuda_graph\"", runner)
    assert [a.how for a in derivation.derive(version)][9] == "resolved + fixup"


def test_the_rename_map_round_trips_and_refuses_an_ambiguous_file():
    renames = {"accept_length": "num_accept_tokens"}
    release = b"x = spec_info.num_accept_tokens[:bs]  # num_accept_tokens_ptr stays\n"
    back = renamed_back(release, renames, "0.5.12", "f.py")
    assert back == b"x = spec_info.accept_length[:bs]  # num_accept_tokens_ptr stays\n"
    assert rename(back, renames) == release
    assert rename(b"accept_length_ptr, accept_length", renames) == b"accept_length_ptr, num_accept_tokens"
    with pytest.raises(ReleaseError, match=r"^sglang 0\.5\.12's f\.py uses 'accept_length' and renames it .*: "):
        renamed_back(b"accept_length = num_accept_tokens\n", renames, "0.5.12", "f.py")


def test_a_renamed_file_is_formatted_only_where_upstream_is_black_clean():
    long = b"def f(a):\n    return some_function_name(argument_number_one, argument_number_two, num_accept_tokens)\n"
    formatted = black_formatted(long, None)
    assert formatted != long and max(map(len, formatted.splitlines())) <= 88
    untidy = b"x = [ 1,2 ]\n"
    assert black_formatted(long, untidy) == long  # upstream's own formatting is not touched


@pytest.mark.network
def test_a_fixup_that_no_longer_matches_is_one_line(monkeypatch):
    with Derivation(Series()) as derivation:
        real = derivation._release_data

        def stale(patch, key, version):
            found = real(patch, key, version)
            return [dict(f, before="no such text\n") for f in found] if key == "fixup" else found

        monkeypatch.setattr(derivation, "_release_data", stale)
        with pytest.raises(ReleaseError, match=r"^sglang 0\.5\.11: patches/0010-draft-runner\.patch's fixup in "
                                               r"capture_one_batch_size finds its text 0 times in .*, not once: "):
            derivation.derive("0.5.11")


def test_matrix_rows_merge_release_by_release(tmp_path):
    """A run of some 0.5.6-track releases keeps the others' rows; ok and problems cover them all."""
    committed = json.loads((upstream.REPO_ROOT / "reports" / "upstream" / "matrix.json").read_text())
    rows = {r["version"]: r for r in committed["releases"]}
    first = {**committed, "releases": [rows["0.5.6"], rows["0.5.9"]]}
    first.pop("fused", None)
    (tmp_path / "matrix.json").write_text(json.dumps(first))
    failed = json.loads(json.dumps(rows["0.5.9"]))
    failed["cells"][-1]["failure"] = "tv replay 3: bs8.page_table_1[4, 7]: expected 1, got 2"
    report = upstream.merged(tmp_path, stub_part={**first, "releases": [failed], "ok": True, "problems": []})
    assert [r["version"] for r in report["releases"]] == ["0.5.6", "0.5.9"]
    assert report["releases"][1]["cells"][-1]["failure"] and report["releases"][0] == rows["0.5.6"]
    assert not report["ok"] and report["problems"] == [
        f"sglang 0.5.9 {failed['cells'][-1]['patch']}: tv replay 3: bs8.page_table_1[4, 7]: expected 1, got 2"]


# -- executed: the release's real files, one scenario per mode ------------------------------------


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("version", ("0.5.10", "0.5.11", "0.5.12"))
def test_each_release_runs_bit_exact_and_declines_to_record_for_deepgemm(version):
    one_per_mode = [next(s for s in matrix() if s.mode == mode) for mode in ("target_verify", "decode", "draft_extend")]
    report = upstream.run_matrix([version], one_per_mode)
    assert report["ok"], report["problems"]
    (release,) = report["releases"]
    for cell in release["cells"]:
        assert cell["compiles"] and cell["exact"] == cell["scenarios"] == 3, cell
    assert all(m["fused"] and not m["records"] and "DeepGEMM" in m["declines"] for m in release["runner"].values())
    assert not release["lint"]["added"], release["lint"]
    for mode in ("decode", "draft_extend"):  # the speculative step's draft runners, as on 0.5.7 - 0.5.9
        (line,) = release["runner"][mode]["runners recording"].values()
        assert "declines" in line and "DeepGEMM" in line, line


@pytest.mark.slow
@pytest.mark.network
def test_the_release_benchmark_runs_from_what_prepare_writes(tmp_path, monkeypatch):
    """bench.release_replay on CPU (the interpreter; timings not comparable): prepare writes both
    sides' files and a wheel of sglang's sources alone, run loads them and finds the sides equal."""
    import zipfile

    from bench import release_replay
    from harness import upstream_exec

    monkeypatch.setattr(release_replay, "BUILT", tmp_path / "releases")
    monkeypatch.setattr(upstream_exec, "BUILT_WHEELS", tmp_path / "releases" / "wheels")
    monkeypatch.setattr(upstream_exec, "STANDIN_ROOTS", upstream_exec.STANDIN_ROOTS)
    release_replay.prepare(["0.5.10"])
    monkeypatch.setenv("NSA_USE_BUILD", "1")
    wheel = upstream_exec.wheel_path("0.5.10")
    assert wheel == tmp_path / "releases" / "wheels" / "sglang-0.5.10.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "sglang/srt/layers/attention/nsa_backend.py" in names and all(n.endswith(".py") for n in names)
    with pytest.raises(upstream_exec.StandinError, match="bench.release_replay prepare"):
        upstream_exec.wheel_path("0.5.12")
    monkeypatch.delenv("NSA_USE_BUILD")  # the stub's baseline from git here (the GPU host: build/stages)
    result = release_replay.run(tmp_path / "out.json", ["0.5.10"])
    rows = result["releases"]["0.5.10"]
    assert [r["mode"] for r in rows] == ["target_verify", "decode", "draft_extend"]
    assert all(r["exact"] and set(r["host_us"]) == {"unpatched", "series"} for r in rows), rows
    assert json.loads((tmp_path / "out.json").read_text())["releases"]["0.5.10"] == rows
    assert "deep_gemm" in upstream_exec.STANDIN_ROOTS  # run() gave the stand-in back


# -- fuzz: the newest release the track serves (renamed, 0.5.12's own replay), hypothesis-drawn -----

from hypothesis import HealthCheck, given, settings  # noqa: E402
from strategies import target_verify_scenarios  # noqa: E402

from harness.verify import compare_lockstep  # noqa: E402

NEWEST = DERIVED[-1]


@pytest.fixture(scope="module")
def newest_release():
    """((unpatched module), (the whole series' module)) of NEWEST's real files."""
    from harness import stages
    from harness.upstream_exec import load_release

    stub = stages.load(stages.BASELINE)
    with Derivation(Series()) as derivation:
        release = derivation.table.release(NEWEST)
        commits = (derivation.base_commit(NEWEST), derivation.derive(NEWEST)[-1].commit)
        return tuple(load_release(NEWEST, derivation.files(c), stub, release.model_runner, f"fuzz-{label}")
                     for c, label in zip(commits, ("unpatched", "series")))


@pytest.mark.slow
@pytest.mark.network
@settings(max_examples=8, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(scenario=target_verify_scenarios(replays=4))
def test_the_newest_served_release_is_bit_exact_under_fuzz(newest_release, scenario):
    unpatched, patched = newest_release
    verdict = compare_lockstep(unpatched, {"series": patched}, scenario)["series"]
    assert verdict.exact, f"sglang {NEWEST}, {scenario}: {verdict.describe()}"
