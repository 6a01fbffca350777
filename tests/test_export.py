"""What a release's exported mails claim is what that release's own execution showed.

The cover letter's claim sentences come from the release's matrix row (harness.export.claims); these
tests read them back independently and check each against the row, feed rows that say otherwise
(a recorder that declines, a lint finding the series adds) and check the letter changes with them,
and check the mails' form: `git am` onto the release's own files, 72 columns, shortlog, diffstat,
base-commit, headers free of anything only this repository's readers can follow.
"""

from __future__ import annotations

import email
import json
import re
import subprocess

import git
import pytest
import torch

from harness import export as ex
from harness import step_numbers
from harness.releases import GIT_ENV, Derivation, Table, release_tree
from harness.scenarios import matrix
from harness.series import Series

# The reference, the last before upstream's Triton expansion, two after, and the first under DSA names.
RELEASES = ("0.5.6", "0.5.9", "0.5.10", "0.5.12", "0.5.13", "0.5.14")


SPEC_LINES = {True: "records (6/6 replays bit-exact; no replay call)",
              False: "declines: the replay call refreshes a schedule (6/6 replays bit-exact; eager replay call: 1 "
                     "Triton launch(es))"}


def row(version="0.5.9", *, records=True, declines=None, fused=True, added=(), upstream=(),
        spec_records=None) -> dict:
    """A matrix row as harness.upstream writes it, with the facts a test wants (spec_records: the
    speculative runners' lines, True or False for both; None: a row older than them)."""
    mode = {"fused": fused, "device_kernels": 0, "triton_launches": 1, "host_ops": 2,
            "records": records, "declines": declines, "problem": None}
    runner = {m: dict(mode) for m in ("target_verify", "decode", "draft_extend")}
    if spec_records is not None:
        runner["draft_extend"]["runners recording"] = {"draft-extend runner": SPEC_LINES[spec_records]}
        runner["decode"]["runners recording"] = {"draft runner (multi-step backend)": SPEC_LINES[spec_records]}
    return {
        "version": version, "error": None, "code_path": {},
        "cells": [{"patch": p, "how": "clean", "compiles": True, "lint": [], "exact": 35, "scenarios": 35,
                   "failure": None, "records": records and p.startswith("0008"), "declines": None,
                   "fused": ["target_verify", "decode", "draft_extend"] if fused else []}
                  for p in Series().patch_files],
        "runner": runner,
        "lint": {"files": [], "patched": sorted({*added, *upstream}), "upstream": list(upstream), "added": list(added)},
    }


def spec_lines(r: dict) -> dict:
    return {name: line for m in r["runner"].values() for name, line in (m.get("runners recording") or {}).items()}


def backed(sentence: str, r: dict) -> bool:
    """Whether the row backs one claim sentence: read back from the sentence, not from claims()."""
    modes = {name: mode for mode, name in ex.MODE_NAMES.items()}
    named = [modes[n] for n in modes if n in sentence]
    if m := re.search(r"in (\d+)/(\d+) scenarios", sentence):
        return all(c["exact"] == c["scenarios"] == int(m[1]) and c["failure"] is None for c in r["cells"])
    if sentence.startswith("Fused into one Triton launch"):
        return bool(named) and all(r["runner"][m]["fused"] for m in named)
    if sentence.startswith("Left as sglang"):
        return bool(named) and not any(r["runner"][m]["fused"] for m in named)
    if sentence.startswith("The speculative step's"):
        names = [n for n in spec_lines(r) if n in sentence]
        if sentence.endswith(" too."):
            return bool(names) and all(spec_lines(r)[n].startswith("records") for n in names)
        why = sentence.split(": ", 1)[1].rstrip(".") if ": " in sentence else ""
        return bool(names) and all(not spec_lines(r)[n].startswith("records") and why in spec_lines(r)[n]
                                   for n in names)
    if "records" in sentence:
        return bool(named) and all(r["runner"][m]["records"] for m in named)
    if sentence.startswith("Not recorded"):
        runners = [n for n in spec_lines(r) if n in sentence]  # the runners that decline alike
        return bool(named) and all(not r["runner"][m]["records"] and r["runner"][m]["declines"] in sentence
                                   for m in named) and all(
            spec_lines(r)[n].startswith("declines: ") and spec_lines(r)[n].split(": ", 1)[1].startswith(
                sentence.split("): ", 1)[1].rstrip(".")) for n in runners)
    if "adds no" in sentence:
        return not r["lint"]["added"]
    if sentence.startswith("Left as is, upstream's own:"):
        return bool(r["lint"]["upstream"]) and all(
            f.split(": ")[0].rsplit("/", 1)[-1] in sentence and f.rsplit(": ", 1)[-1] in sentence
            for f in r["lint"]["upstream"])
    if sentence.startswith("The numbers below were taken on sglang"):
        return r["version"] not in sentence
    return False  # a claim this test cannot read back is a claim nobody checked


@pytest.mark.parametrize("facts", [
    {}, {"records": False, "declines": "the replay call refreshes a schedule"},
    {"fused": False, "records": False, "declines": "not fused"},
    {"added": ["x.py: ruff: F401 unused"]}, {"upstream": ["a/y.py: ruff: F541 f-string", "b/z.py: isort: unsorted"]},
    {"spec_records": True}, {"records": False, "declines": "a schedule", "spec_records": False},
])
def test_every_claim_is_backed_by_the_row(facts):
    r = row(**facts)
    sentences = ex.claims("0.5.9", r, "0.5.6")
    assert sentences
    for sentence in sentences:
        assert backed(sentence, r), sentence


def test_a_declining_recorder_is_never_claimed_as_recording():
    r = row(records=False, declines="the replay call refreshes DeepGEMM's paged-MQA schedule")
    text = " ".join(ex.claims("0.5.9", r, "0.5.6"))
    assert "records" not in text and "Not recorded (target verify, decode and draft extend)" in text
    assert "cuda_graph_runner records target verify and decode" in " ".join(ex.claims("0.5.9", row(), "0.5.6"))
    spec = " ".join(ex.claims("0.5.9", row(spec_records=False), "0.5.6"))
    assert "The speculative step's" in spec and "decline: the replay call refreshes a schedule." in spec
    assert "record too" not in spec and "records too" not in spec


def test_lint_claim_follows_the_row():
    assert any("adds no" in s for s in ex.claims("0.5.9", row(), "0.5.6"))
    assert not any("adds no" in s for s in ex.claims("0.5.9", row(added=["a.py: black: would reformat"]), "0.5.6"))


def test_a_row_without_the_fields_backs_no_claim():
    old = row()
    del old["runner"]
    (only,) = ex.claims("0.5.6", old, "0.5.6")
    assert only.startswith("No executed result") and "harness.upstream --trace --write" in only
    stale, numbers = ex.claims("0.5.9", None, "0.5.6")
    assert stale.startswith("No executed result") and numbers == "The numbers below were taken on sglang 0.5.6's code."


def test_the_backer_can_fail():
    r = row(records=False, declines="why")
    assert not backed("The patched graph runner records target verify into the CUDA graph.", r)
    assert not backed("The series adds no black, isort or ruff finding.", row(added=["a"]))


# -- the mails themselves, for the reference and the newest release -------------------------------

FORBIDDEN = re.compile(r"session|NOTES\.md|tests/|bench/|issue \d|0\.5\.2\d|reports/")


def assert_applied_whole(repo, folder, names: list[str]) -> None:
    """git am made one commit per mail, each with the mail's whole subject and DEP-3 in its body."""
    commits = list(repo.iter_commits())
    assert len(commits) == 1 + len(names)
    for commit, name in zip(reversed(commits[:-1]), names):
        subject = " ".join(email.message_from_string((folder / name).read_text())["Subject"].split())
        assert subject.endswith("] " + commit.summary), (name, subject, commit.summary)
        assert commit.message.split("\n\n", 1)[1].startswith("Description: "), (name, commit.message[:200])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    rows = {v: row(v, records=v == "0.5.6",
                   declines=None if v == "0.5.6" else "the replay call refreshes DeepGEMM's paged-MQA schedule")
            for v in RELEASES}
    matrix_json = out / "matrix.json"
    matrix_json.write_text(json.dumps({"scenarios": [], "releases": list(rows.values())}))
    return out, ex.export(list(RELEASES), out / "dist", matrix=matrix_json)


@pytest.mark.parametrize("version", RELEASES)
def test_export_form_and_git_am_onto_the_release(exported, version, tmp_path):
    out, names = exported
    folder = out / "dist" / f"sglang-{version}"
    cover = (folder / ex.COVER).read_text()
    body = cover.split("\n\n", 1)[1]
    assert len(body.splitlines()) <= 55, len(body.splitlines())
    assert max(map(len, body.splitlines())) <= ex.WIDTH, max(body.splitlines(), key=len)
    assert f"base-commit: v{version}\n" in cover and "files changed" in cover
    assert f"nsa-verify-patches ({len(names[version])}):" in cover
    assert Table.load().release(version).host_work in " ".join(body.split())  # what this release's replay does
    assert ("0001-quickwin.patch" in names[version]) == (version in ("0.5.6", "0.5.9"))  # dropped from 0.5.10
    assert ("records target verify" in cover) == (version == "0.5.6")
    step = step_numbers.run_of_record()  # its numbers: recorded only where the release's runner records
    recorded_rows = re.findall(r"^ .*runner.* \d+-\d+ recorded +\d+-\d+$", cover, re.M)  # the numbers' rows
    assert bool(recorded_rows) == (version == "0.5.6" and step is not None), recorded_rows
    assert not FORBIDDEN.search(cover), FORBIDDEN.search(cover)
    for name in names[version]:
        mail = (folder / name).read_text()
        header = mail.split("\n---\n", 1)[0]
        assert not FORBIDDEN.search(header), (name, FORBIDDEN.search(header))
        assert "\nAuthor: " in header and "\nForwarded: no" in header and "\nTested: " in header
    repo = git.Repo.init(tmp_path)
    repo.git.update_environment(**GIT_ENV)
    for rel, data in release_tree(version).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    repo.git.add("-A")
    repo.git.commit("-q", "-m", f"sglang {version}")
    repo.git.am(*[str(folder / n) for n in names[version]])
    assert_applied_whole(repo, folder, names[version])


def test_a_folded_subject_is_one_subject():
    header = "From: a\nSubject: [PATCH 1/2] runner: record\n attention metadata\nDescription: x\n y"
    assert ex._header_fields(header) == ("runner: record attention metadata", "", "Description: x\n y")


# -- 0006 on releases that refresh DeepGEMM's schedule: it gets the live rows, as before -----------


def test_draft_extend_hands_the_deepgemm_schedule_the_live_rows(monkeypatch):
    """On CUDA 0.5.9's replay call refreshes DeepGEMM's paged-MQA schedule from the lengths. Run it
    with the refresh on (is_cuda) and a schedule that encodes what it was given (row count and
    sum): the patched replay's schedule buffer must equal the unpatched one's, whole."""
    from harness import stages
    from harness.upstream_exec import ENVIRONMENT, load_release
    from harness.verify import compare_lockstep

    given = []

    def schedule(lens, block_kv, num_sms):
        given.append(lens.shape[0])
        return torch.tensor([[lens.shape[0], int(lens.sum())]] * (num_sms + 1), dtype=torch.int32)

    monkeypatch.setitem(ENVIRONMENT, ("sglang.srt.utils", "is_cuda"), lambda: True)
    monkeypatch.setitem(ENVIRONMENT, ("deep_gemm", "get_paged_mqa_logits_metadata"), schedule)
    monkeypatch.setitem(ENVIRONMENT, ("deep_gemm", "get_num_sms"), lambda: 4)
    stub = stages.load(stages.BASELINE)
    with Derivation(Series()) as derivation:
        release = derivation.table.release("0.5.9")
        commits = {"unpatched": derivation.base_commit("0.5.9"), "series": derivation.derive("0.5.9")[-1].commit}
        modules = {label: load_release("0.5.9", derivation.files(c), stub, release.model_runner, f"deepgemm-{label}")
                   for label, c in commits.items()}
    scenario = next(s for s in matrix() if s.mode == "draft_extend" and s.accept == "random")
    verdict = compare_lockstep(modules["unpatched"], {"series": modules["series"]}, scenario)["series"]
    assert verdict.exact, verdict.describe()
    assert len(set(given)) > 1, "the scenario never varied the live row count: the check proves nothing"


# -- the matrix row the mails are generated from: each release's real backend ----------------------


@pytest.mark.parametrize("version, records", [("0.5.6", True), ("0.5.9", False)])
def test_matrix_row_runs_the_runner_around_the_release_s_real_backend(version, records):
    from harness.upstream import run_matrix

    one_per_mode = [next(s for s in matrix() if s.mode == mode) for mode in ("target_verify", "decode", "draft_extend")]
    report = run_matrix([version], one_per_mode)
    assert report["ok"], report["problems"]
    (release,) = report["releases"]
    last = release["cells"][-1]
    assert last["records"] is records and all(m["records"] is records for m in release["runner"].values())
    assert all(m["fused"] for m in release["runner"].values()) and set(last["fused"]) == set(release["runner"])
    if not records:  # 0.5.9's NSAMetadata carries the DeepGEMM schedule its replay call refreshes
        assert "DeepGEMM" in last["declines"] and "DeepGEMM" in " ".join(ex.claims(version, release, "0.5.6"))
    assert not release["lint"]["added"] and release["lint"]["upstream"], release["lint"]


# -- the fused track (0.5.15 - 0.5.23): the release's module, the letter read from its row ----------

from fused import track as fused_track  # noqa: E402
from harness import export_fused as fx  # noqa: E402
from harness import upstream_fused  # noqa: E402
from harness.series import SeriesError  # noqa: E402

FUSED_RELEASES = ("0.5.15", "0.5.17", "0.5.20", "0.5.23")  # one per distinct module text
NO_CONTRACT = ("0.5.15", "0.5.15.post1", "0.5.16")  # no live-prefix contract in their docstring
FUSED_FORBIDDEN = re.compile(r"session|NOTES\.md|tests/|bench/|issue \d|reports/")
CONSUMERS_SENTENCE = "Its indexer, top-k transform and attention read each row only up to cache_seqlens."


def fused_row(version: str, *, equal=12, added=(), upstream=(), broken_caller=False) -> dict:
    """A fused matrix row as harness.upstream_fused writes it, with the facts a test wants."""
    entry = fused_track.release(version)
    callers = [{"where": f"python/sglang/srt/layers/attention/dsa_backend.py:{n}", "function": f, "positional": 0,
                "keywords": [], "starred": False, "ok": not (broken_caller and n == 1), "problem": None}
               for n, f in enumerate(upstream_fused.FUNCTIONS, 1)]
    return {
        "version": version, "track": "fused", "module": entry["module"], "module_sha256": entry["module_sha256"],
        "page_size_arg": entry["page_size_arg"], "live_prefix_contract": entry["live_prefix_contract"], "error": None,
        "cells": [{"patch": p.name, "applies": True, "compiles": True, "lint": list(added), "cases": 12,
                   "equal": equal, "callers": 3 - broken_caller, "call_sites": 3,
                   "failure": None if equal == 12 else "decode-ps64-bs7-w193: differs"}
                  for p in fused_track.series()],
        "lint": {"files": [entry["module"]], "patched": sorted({*added, *upstream}), "upstream": list(upstream),
                 "added": list(added)},
        "callers": callers,
        "kpool": upstream_fused.kpool(version),
    }


def letter_claims(cover: str) -> list[str]:
    """The letter's bullets under "How it was tested", each unwrapped into one sentence."""
    section = cover.split("How it was tested", 1)[1].split("\n\nHow to reproduce", 1)[0]
    return [" ".join(b.split()) for b in section.split("\n- ")[1:]]


def fused_backed(sentence: str, r: dict, record: dict | None) -> bool:
    """Whether the row (or the run of record) backs one claim of the fused letter: read back from
    the sentence, not from export_fused.claims."""
    cells = r["cells"]
    if sentence.startswith("Applied to "):
        return r["module"] in sentence and all(c["applies"] and c["compiles"] for c in cells)
    if "adds no" in sentence:
        return not r["lint"]["added"]
    if sentence.startswith("Left as is, upstream's own:"):
        return bool(r["lint"]["upstream"]) and all(f.rsplit(": ", 1)[-1] in sentence for f in r["lint"]["upstream"])
    if m := re.search(r"agree on upstream's contract in (\d+)/(\d+) cases", sentence):
        last = cells[-1]
        return last["equal"] == last["cases"] == int(m[1]) == int(m[2]) and last["failure"] is None
    if m := re.search(r"\((\d+) call sites\) binds", sentence):
        return len(r["callers"]) == int(m[1]) and all(c["ok"] for c in r["callers"])
    if m := re.search(r"^GPU \((.*)\): .* in (\d+) cases", sentence):
        eq = record["equality"]
        return (not fx.stale(record) and record["card"] == m[1] and eq[r["version"]]["cases"] == int(m[2])
                and not eq[r["version"]]["failures"] and not eq["patched"]["failures"])
    if sentence.startswith("Not changed: with SGLANG_EXPERIMENTAL_DSA_KPOOL_METADATA_FUSION"):
        return bool(r["kpool"]) and r["kpool"]["module"].removeprefix("python/") in sentence
    return False  # a claim this test cannot read back is a claim nobody checked


@pytest.fixture()
def consumers_toml(tmp_path, monkeypatch):
    path = tmp_path / "consumers.toml"
    path.write_text(f'[release."0.5.15"]\nlive_prefix_safe = true\nsummary = "{CONSUMERS_SENTENCE}"\n'
                    '[release."0.5.16"]\nlive_prefix_safe = false\nsummary = "Its top-k reads past it."\n')
    monkeypatch.setattr(fx, "CONSUMERS", path)
    return path


@pytest.mark.network
@pytest.mark.parametrize("facts", [{}, {"equal": 11}, {"added": ["m.py: ruff: F401 unused"]},
                                   {"upstream": ["a/m.py: ruff: F541 f-string"]}, {"broken_caller": True}])
@pytest.mark.parametrize("version", ["0.5.17", "0.5.23"])
def test_every_fused_claim_is_backed_by_the_row(version, facts):
    r = fused_row(version, **facts)
    record = fx.run_of_record()
    sentences = fx.claims(version, r, record)
    assert sentences
    for sentence in sentences:
        assert fused_backed(sentence, r, record[1] if record else None), sentence
    text = " ".join(sentences)
    assert ("agree on upstream's contract" in text) == (facts.get("equal", 12) == 12)
    assert ("call sites) binds" in text) == (not facts.get("broken_caller"))
    assert ("KPool" in text) == (version == "0.5.23")


def test_the_fused_backer_can_fail():
    r = fused_row("0.5.23", equal=11)
    assert not fused_backed("CPU: sglang 0.5.23's own kernels and the patched ones agree on upstream's "
                            "contract in 12/12 cases", r, None)
    assert not fused_backed("Every call of the three functions (4 call sites) binds", r, None)


@pytest.fixture(scope="module")
def fused_exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("fused-dist")
    rows = [fused_row(v) for v in fused_track.versions()]
    matrix_json = out / "matrix.json"
    matrix_json.write_text(json.dumps({"releases": [], "fused": {"releases": rows}}))
    consumers = out / "consumers.toml"
    consumers.write_text("".join(f'[release."{v}"]\nlive_prefix_safe = true\nsummary = "{CONSUMERS_SENTENCE}"\n'
                                 for v in NO_CONTRACT))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fx, "CONSUMERS", consumers)
        names = ex.export(fused_track.versions(), out / "dist", matrix=matrix_json)
    return out, names, {r["version"]: r for r in rows}


def _tree_of_release(version: str, root):
    """A git repository holding the release's files the series touches and its callers, from its wheel."""
    repo = git.Repo.init(root)
    repo.git.update_environment(**GIT_ENV)
    files = dict(upstream_fused.srt_sources(version))
    files[fused_track.release(version)["module"]] = fused_track.upstream_source(version)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    repo.git.add("-A")
    repo.git.commit("-q", "-m", f"sglang {version}")
    return repo


@pytest.mark.network
@pytest.mark.parametrize("version", [v if v in FUSED_RELEASES else pytest.param(v, marks=pytest.mark.slow)
                                     for v in fused_track.versions()])
def test_fused_export_form_and_git_am_onto_the_release(fused_exported, version, tmp_path):
    out, names, rows = fused_exported
    folder = out / "dist" / f"sglang-{version}"
    cover = (folder / ex.COVER).read_text()
    body = cover.split("\n\n", 1)[1]
    assert max(map(len, body.splitlines())) <= ex.WIDTH, max(body.splitlines(), key=len)
    assert f"base-commit: v{version}\n" in cover and "1 file changed" in cover
    assert f"nsa-verify-patches ({len(names[version])}):" in cover
    assert not FUSED_FORBIDDEN.search(cover), FUSED_FORBIDDEN.search(cover)
    record = fx.run_of_record()
    for sentence in letter_claims(cover):
        assert fused_backed(sentence, rows[version], record[1] if record else None), sentence
    assert (CONSUMERS_SENTENCE in " ".join(cover.split())) == (version in NO_CONTRACT)
    assert "#38858" in cover and "top-k plan" in cover
    module = fused_track.release(version)["module"]
    arg = fused_track.page_size_arg(version)
    for name in names[version]:
        mail = (folder / name).read_text()
        header = mail.split("\n---\n", 1)[0]
        assert not FUSED_FORBIDDEN.search(header), (name, FUSED_FORBIDDEN.search(header))
        assert "\nTested: sglang " + version in header and "12/12 cases" in " ".join(header.split())
        assert f"+++ b/{module}" in mail and arg in mail.split("\n---\n", 1)[1]
    repo = _tree_of_release(version, tmp_path)
    repo.git.am(*[str(folder / n) for n in names[version]])
    assert_applied_whole(repo, folder, names[version])
    assert (tmp_path / module).read_text() == upstream_fused.derived_sources(version)[-1]


@pytest.mark.network
def test_fused_export_quilt_push(fused_exported, tmp_path):
    out, names, _ = fused_exported
    _tree_of_release("0.5.23", tmp_path)
    import shutil

    shutil.copytree(out / "dist" / "sglang-0.5.23", tmp_path / "patches")
    proc = subprocess.run(["quilt", "push", "-a"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    module = fused_track.release("0.5.23")["module"]
    assert (tmp_path / module).read_text() == upstream_fused.derived_sources("0.5.23")[-1]


@pytest.mark.network
def test_fused_letter_table_is_read_from_the_run_of_record(tmp_path, monkeypatch):
    path, data = fx.run_of_record()
    data = json.loads(json.dumps(data))
    data["card"] = "NVIDIA H200"
    for row in data["benchmark"]["rows"]:
        row["ours/graph_us"] = 1234.5
    (tmp_path / "h200").mkdir()
    (tmp_path / "h200" / "fused.json").write_text(json.dumps(data))
    monkeypatch.setattr(fx, "REPORTS", tmp_path)
    text = fx.table(fx.run_of_record())
    assert "On an NVIDIA H200 (torch" in text and "1234.5" in text
    assert all(len(line) <= ex.WIDTH for line in text.splitlines())


@pytest.mark.network
@pytest.mark.parametrize("version, says", [("0.5.15", "has no verdict on its consumers"),
                                           ("0.5.16", "may read past the live prefix")])
def test_fused_export_refuses_releases_without_the_contract(consumers_toml, version, says, tmp_path):
    if version == "0.5.15":
        consumers_toml.write_text("")
    with pytest.raises(SeriesError) as e:
        ex.export([version, "0.5.23"], tmp_path / "dist")
    assert says in str(e.value) and "\n" not in str(e.value)
    assert not any((tmp_path / "dist").glob("sglang-*"))


HEADER_ROW = re.compile(r"^ {3}(decode|target verify|draft extend), (\d+), (.+?)\s{2,}([\d.]+)\s+([\d.]+)$")
HEADER_PROFILES = {"<= 4k": "all_le_4k", "all 64k": "all_64k", "uniform 1-160k": "uniform_1_160k",
                   "one 160k, rest 1-4k": "one_160k_rest_1_4k"}


def test_fused_header_numbers_are_the_run_of_record_s():
    # Each number in 0001's table is the graph-replayed median of the run of record (the letter's
    # source too), so the header cannot drift from the data it cites.
    path, data = fx.run_of_record()
    rows = {(r["mode"], r["bs"], r["profile"]): r for r in data["benchmark"]["rows"] if r["width"] == 163840}
    header = fused_track.series()[0].read_text().split("\n---\n", 1)[0]
    assert f"On an {data['card']} (torch {data['torch'].split('+')[0].rsplit('.', 1)[0]}, triton " \
           f"{data['triton'].rsplit('.', 1)[0]})" in header.replace("\n ", " ")
    found = [m.groups() for m in map(HEADER_ROW.match, header.splitlines()) if m]
    assert len(found) >= 3, header
    for mode, bs, profile, shipped, patched in found:
        row = rows[(mode.replace(" ", "_"), int(bs), HEADER_PROFILES[profile])]
        assert (float(shipped), float(patched)) == (round(row["upstream_as_shipped/graph_us"], 1),
                                                    round(row["ours/graph_us"], 1)), (mode, bs, profile)
    assert not fx.stale(data), f"{path} measured another kernel than the series'"


def test_letter_numbers_follow_what_each_runner_does_on_the_release(tmp_path, monkeypatch):
    # harness.step_numbers: each runner's number is recorded where the release's row says it records,
    # eager where it does not, absent where the row does not say; data of another series gives none.
    from bench import machine
    from harness import step_numbers

    data = json.loads((step_numbers.REPO_ROOT / "notebook/h200/spec_step_run1_eager_graphs_recorded.json").read_text())
    recorded = step_numbers.block(row(spec_records=True), data)
    assert recorded.count(" recorded ") == 3 and "NVIDIA H200" in recorded
    tv = [x["pieces"]["recorded"]["target_verify"]["median"] for x in data["host"]]
    assert f" {min(tv):.0f}-{max(tv):.0f} recorded " in recorded
    declined = step_numbers.block(row(records=False, declines="why", spec_records=False), data)
    assert declined.count(" eager ") == 3 and " recorded " not in declined
    assert "draft runner" not in step_numbers.block(row(), data)  # a row older than the runners' column
    assert all(len(line) <= ex.WIDTH for line in recorded.splitlines())
    (tmp_path / "h200").mkdir()
    (tmp_path / "h200" / "spec_step.json").write_text(json.dumps(data))
    monkeypatch.setattr(machine, "series_hash", lambda: data["env"]["series_hash"])
    assert step_numbers.run_of_record(tmp_path) == data
    monkeypatch.setattr(machine, "series_hash", lambda: "0123456789ab")
    assert step_numbers.run_of_record(tmp_path) is None
