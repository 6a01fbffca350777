"""The 0.5.6-track series on sglang 0.5.13, 0.5.13.post1 and 0.5.14, where NSA is renamed DSA.

The release keeps the backend in dsa_backend.py (nsa_backend.py is a re-export shim), the series'
kernel module in dsa/, and names the metadata DSAMetadata, its buffers dsa_*. The series is derived
on the release's files with those names put back (name_parts in patches/releases.toml), then renamed
forward: every derived file is where the release keeps it, under the release's names. The release
reaches capture and replay through init_forward_metadata_out_graph (in_capture or not), which the
harness calls as sglang's graph runners do (harness.upstream_exec.with_capture_and_replay_calls).
0.5.14 also moved the decode graph runner (model_executor/runner/decode_cuda_graph_runner.py,
DecodeCudaGraphRunner: `paths` and `renames`) and has one draft-extend mode, DRAFT_EXTEND_V2, tested
by is_draft_extend_v2() (renamed back to the series' is_draft_extend()).

Fast: the name-part rename itself. Network: the derivation. Slow: the real files executed, one
scenario per mode, whole buffers, and the graph runners around the real backend.
"""

from __future__ import annotations

import re

import black
import pytest

from harness.names import Names, part, release_names, rename
from harness.releases import Derivation, ReleaseError, release_files, renamed_back
from harness.series import Series
from harness.tracks import STUB, track_for_version

DSA = ("0.5.13", "0.5.13.post1", "0.5.14")
PARTS = {"NativeSparseAttn": "DeepseekSparseAttn", "nsa": "dsa", "NSA": "DSA"}
BACKEND = "python/sglang/srt/layers/attention/dsa_backend.py"
KERNELS = "python/sglang/srt/layers/attention/dsa/cuda_graph_metadata.py"
RUNNER_0514 = "python/sglang/srt/model_executor/runner/decode_cuda_graph_runner.py"


def test_a_name_part_is_renamed_inside_identifiers_and_paths_not_inside_words():
    series = b"from .nsa.cuda_graph_metadata import x  # NSAMetadata, compute_nsa_seqlens, transaction\n"
    release = b"from .dsa.cuda_graph_metadata import x  # DSAMetadata, compute_dsa_seqlens, transaction\n"
    assert rename(series, {}, PARTS) == release
    assert renamed_back(release, {}, "0.5.13", "f.py", PARTS) == series
    assert rename(b"class NativeSparseAttnMultiStepBackend:", {}, PARTS) == b"class DeepseekSparseAttnMultiStepBackend:"
    assert not part("nsa").search(b"transaction unsafe NSAX")
    with pytest.raises(ReleaseError, match=r"^sglang 0\.5\.13's f\.py uses 'nsa' and renames it to 'dsa': .* "
                                           r"name_parts in releases\.toml$"):
        renamed_back(b"nsa_x = dsa_y\n", {}, "0.5.13", "f.py", PARTS)


def test_a_release_keeps_a_file_where_its_names_or_its_moves_say():
    names = Names({}, PARTS, {"python/a/cuda_graph_runner.py": "python/a/runner/decode_cuda_graph_runner.py"})
    assert names.path("python/sglang/srt/layers/attention/nsa_backend.py") == BACKEND
    assert names.path("python/sglang/srt/layers/attention/nsa/cuda_graph_metadata.py") == KERNELS
    assert names.path("python/a/cuda_graph_runner.py") == "python/a/runner/decode_cuda_graph_runner.py"
    assert names.name("sglang.srt.layers.attention.nsa.utils") == "sglang.srt.layers.attention.dsa.utils"
    assert not Names() and Names().path("x/nsa.py") == "x/nsa.py"


def test_the_release_table_names_the_dsa_releases():
    assert release_names("0.5.13") == release_names("0.5.13.post1")
    for version in DSA:
        assert release_names(version).name_parts == PARTS and track_for_version(version) is STUB
    names = release_names("0.5.14")
    assert names.path("python/sglang/srt/model_executor/cuda_graph_runner.py") == RUNNER_0514
    assert names.name("CudaGraphRunner.is_draft_extend") == "DecodeCudaGraphRunner.is_draft_extend_v2"
    assert names.name("EAGLEDraftCudaGraphRunner") == "EAGLEDraftCudaGraphRunner"  # a part of a word stays


@pytest.fixture(scope="module")
def derivation():
    with Derivation(Series()) as d:
        yield d


@pytest.mark.network
@pytest.mark.parametrize("version", DSA)
def test_every_derived_file_is_where_the_release_keeps_it_under_its_names(derivation, version):
    applied = derivation.derive(version)
    assert [a.patch for a in applied] == Series().patch_files and applied[0].how == "dropped"
    base = derivation.files(derivation.base_commit(version))
    release = derivation.table.release(version)
    for path, data in release_files(version, release).items():
        assert base[release.path(path)] == data, f"{path}: the derivation's base is not the release's own file"
    final = derivation.files(applied[-1].commit)
    assert BACKEND in final and KERNELS in final
    assert not any("nsa" in path.split("/")[-1] for path in final), sorted(final)
    for path, data in final.items():
        assert not part("nsa").search(data) and not part("NSA").search(data), path
        if path.endswith(".py") and data != base.get(path):
            compile(data, path, "exec")
            assert black.format_str(data.decode(), mode=black.Mode(line_length=88)) == data.decode(), path
    backend = final[BACKEND].decode()
    # The draft-extend replay reads no accepted length on the host, and the DeepGEMM refresh reads
    # the whole dsa_seqlens_expanded buffer, as 0.5.13 does: no device sync left in that mode.
    replay = backend.split("def _apply_cuda_graph_metadata(", 1)[1].split("\n    def ")[0]
    assert [line for line in replay.splitlines() if ".tolist()" in line.split("#")[0]] == []
    assert re.search(r"schedule_seqlens_expanded = metadata\.dsa_seqlens_expanded\n", replay)
    if version == "0.5.14":  # its ForwardMode has neither DRAFT_EXTEND nor is_draft_extend(include_v2=)
        assert "include_v2" not in backend and "is_draft_extend(" not in backend
        runner = final[RUNNER_0514].decode()
        capture = runner.split("    def capture_one_shape(", 1)[1].split("\n    def ")[0]
        assert capture.index("record_metadata(bs, forward_batch.forward_mode)") < capture.index("return forward(")
        load = runner.split("    def load_batch(", 1)[1].split("\n    def ")[0]
        assert "recorded_forward_metadata_cuda_graph" in load


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("version", ["0.5.13", "0.5.14"])
def test_the_real_files_run_bit_exact_and_the_runners_decline_for_deepgemm(derivation, version):
    """One scenario per mode on the release's real files, unpatched against the whole series; then
    the release's own graph runner, draft runner and draft-extend runner around the patched backend."""
    from harness import stages
    from harness.scenarios import matrix
    from harness.spec_runners import record_in_row
    from harness.upstream import runner_report
    from harness.upstream_exec import load_release
    from harness.verify import compare_lockstep

    applied = derivation.derive(version)
    release = derivation.table.release(version)
    base, final = derivation.files(derivation.base_commit(version)), derivation.files(applied[-1].commit)
    stub = stages.load(stages.final())
    unpatched = load_release(version, base, stub, release.model_runner, "unpatched")
    patched = load_release(version, final, stub, release.model_runner, "final")
    scenarios = [next(s for s in matrix() if s.mode == mode) for mode in ("target_verify", "decode", "draft_extend")]
    for scenario in scenarios:
        verdict = compare_lockstep(unpatched, {"final": patched}, scenario)["final"]
        assert verdict.exact and verdict.replays == scenario.replays, verdict.describe()
    row = runner_report(final, patched, scenarios)
    assert all(m["fused"] and not m["records"] and "DeepGEMM" in m["declines"] for m in row.values()), row
    assert record_in_row(row, (base, unpatched), (final, patched)) is None
    lines = [line for m in row.values() for line in m.get("runners recording", {}).values()]
    assert len(lines) == 2 and all(line.startswith("declines: ") and "DeepGEMM" in line for line in lines), lines


@pytest.mark.network
@pytest.mark.parametrize("version", ["0.5.13", "0.5.14"])
def test_the_mails_speak_the_release_s_names_and_its_own_sentences(tmp_path, version):
    """The mails: subjects and Descriptions under DSA names (the harness keeps its name), the
    [[header]] edits where a sentence is the release's own, each Description refolded within 72."""
    from harness import export

    folder = tmp_path / "dist"
    names = export.export([version], out=folder)[version]
    mails = {name: (folder / f"sglang-{version}" / name).read_text() for name in [export.COVER, *names]}
    for name, mail in mails.items():
        header = mail.split("\n---\n", 1)[0]
        assert not part("nsa").search(header.replace("nsa-verify-patches", "").encode()), name
        description = ("Description: " + header.split("\nDescription: ", 1)[-1]).split("\nAuthor: ", 1)[0]
        assert name == export.COVER or max(map(len, description.splitlines())) <= 72, name
    assert all(re.search(r"^Subject: \[PATCH \d+/10\] (dsa|\w*cuda_graph_runner):", m, re.M) for m in mails.values())
    assert "no device sync is left in draft extend" in " ".join(mails["0006-draft-extend.patch"].split())
    assert "forward_batch.attn_backend" not in mails["0008-graph-runner.patch"].split("\n---\n", 1)[0]
    headers = " ".join(m.split("\n---\n", 1)[0] for m in mails.values())
    # 0.5.14's runners capture in capture_one_shape and replay in load_batch / execute
    assert ("capture_one_batch_size" in headers) == (version == "0.5.13")
    assert ("capture_one_shape" in headers) == (version == "0.5.14")


def test_a_header_edit_that_no_longer_matches_is_one_line(monkeypatch):
    from harness import export
    from harness.series import SeriesError

    with Derivation(Series()) as derivation:
        monkeypatch.setattr(derivation, "_release_data", lambda patch, key, version: [
            {"before": "no such sentence.", "after": "x"}] if key == "header" else [])
        header = "Subject: [PATCH] nsa: x\nDescription: One sentence.\nAuthor: a\n"
        with pytest.raises(SeriesError, match=r"^sglang 0\.5\.13: patches/0006-draft-extend\.patch's header edit "
                                              r"finds its text 0 times in the Description, not once: "):
            export.release_header(derivation, "0006-draft-extend.patch", "0.5.13", header)
