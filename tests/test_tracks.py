"""The fused track in the workflow: `make apply-<stage>`, status, unapply, refresh, verify, as the 0.5.6 one.

The series machinery itself is tested on the 0.5.6 track (test_series.py); here, on scratch clones
of the fused track (its committed base, series and release table): the moves, the refusals and the
advice they print (run as printed), the patches' sglang paths, the CLI's one-line answers and
`verify --track fused` against the eager reference.
"""

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest

import harness.__main__ as cli
from fused import track as fused_track
from fused import verify as fused_verify
from fused.cases import Case
from harness.loader import REPO_ROOT
from harness.series import Series, SeriesError, Status
from harness.tracks import DEFAULT, FUSED, STUB, TRACKS, TrackError, track_for_stage
from cli import read_only_cli

BASE_FILE = fused_track.table()["track"]["base_file"]  # fused/base/python/sglang/...
FINAL = FUSED.stages()[-1]
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}
CODE = ("harness", "fused/__init__.py", "fused/track.py", "fused/cases.py", "fused/reference.py",
        "fused/gpu_check.py", "fused/verify.py", "tests/conftest.py", "pyproject.toml")


def _clone(root: Path, committed: tuple[str, ...], code: tuple[str, ...] = ()) -> Path:
    """A repository holding `committed` as HEAD has it (data: bases, series, tables) and this
    checkout's `code` (what is under test), all committed."""
    archive = subprocess.run(["git", "archive", "HEAD", *committed], cwd=REPO_ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    for rel in code:
        src, dst = REPO_ROOT / rel, root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copy(src, dst)
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(command, cwd=root, env=GIT_ENV, check=True)
    return root


@pytest.fixture
def repo(tmp_path):
    """The fused track's committed data alone: what harness.series moves."""
    return _clone(tmp_path, ("fused/RELEASES.toml", "fused/base", "fused/patches"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Both tracks' data and this checkout's harness and fused code: what the CLI runs on."""
    return _clone(tmp_path_factory.mktemp("project"), ("vendor_stub", "patches", "fused/RELEASES.toml",
                                                        "fused/base", "fused/patches"), CODE)


def _harness(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=project, env=env, capture_output=True,
                          text=True)


def advice(message: str, prefix: str) -> str:
    """The backticked command in `message` that starts with `prefix` (the test fails without one)."""
    commands = [c for c in re.findall(r"`([^`]+)`", message) if c.startswith(prefix)]
    assert commands, f"no `{prefix}...` in: {message}"
    return commands[0]


def run_advice(repo: Path, command: str):
    """Run a printed command: git through git, make targets through the Series call the Makefile's
    target makes on the track TRACK= names (apply-<stage> finds it from the stage)."""
    words = shlex.split(command)
    if words[0] == "git":
        return subprocess.run(words, cwd=repo, env=GIT_ENV, check=True, capture_output=True)
    assert words[0] == "make", command
    variables = dict(w.split("=", 1) for w in words[2:])
    on_track = TRACKS[variables.pop("TRACK", DEFAULT.name)]
    assert not variables, command
    if words[1].startswith("apply-"):
        stage = words[1].removeprefix("apply-")
        return Series(repo, track_for_stage(stage, repo)).apply(stage)
    return getattr(Series(repo, on_track), {"refresh": "refresh", "unapply": "unapply"}[words[1]])()


def base_text(repo: Path) -> str:
    return (repo / BASE_FILE).read_text()


# -- which track -----------------------------------------------------------------------------------


def test_stage_names_are_unique_and_find_their_track():
    names = [stage for t in TRACKS.values() for stage in t.stages()]
    assert len(names) == len(set(names))
    assert FUSED.stages()[0] == "fused-baseline" and STUB.stages()[0] == "baseline"
    for t in TRACKS.values():
        assert all(track_for_stage(stage) == t for stage in t.stages())


def test_an_unknown_stage_or_track_is_one_line_naming_the_choices():
    with pytest.raises(TrackError) as stage:
        track_for_stage("nope")
    assert "\n" not in str(stage.value)
    assert all(s in str(stage.value) for s in ("track 0.5.6: baseline", f"track fused: fused-baseline, {FINAL}"))
    with pytest.raises(TrackError, match="^no track 'nope': choose one of 0.5.6, fused$"):
        cli.track("nope")


# -- moving the fused base -------------------------------------------------------------------------


def test_apply_and_unapply_round_trip(repo):
    s = Series(repo, FUSED)
    assert s.status() == Status("fused-baseline", track=FUSED)
    pristine = base_text(repo)
    assert s.apply(FINAL) == Status(FINAL, track=FUSED)
    assert base_text(repo) == fused_track.patched_source() != pristine  # the real checkout's series
    assert s.unapply() == Status("fused-baseline", track=FUSED)
    assert base_text(repo) == pristine
    assert git.Repo(repo).git.status("--porcelain") == ""  # the record lives in .git, nothing else moved


def test_the_fused_record_is_its_own(repo):
    # Each track remembers what its last apply left: moving one never changes what the other says.
    s = Series(repo, FUSED)
    s.apply(FINAL)
    assert (Path(s.repo.git_dir) / "nsa-verify-applied-stage-fused").read_text() == f"{FINAL}\n"
    assert not (Path(s.repo.git_dir) / "nsa-verify-applied-stage").exists()


def test_refresh_round_trip_keeps_header_and_sglang_paths(repo):
    s = Series(repo, FUSED)
    s.apply(FINAL)
    patch = repo / "fused/patches" / FUSED.patch_files(repo)[-1]
    before = patch.read_text()
    edited = base_text(repo) + "\n\n# a comment typed at the final stage\n"
    (repo / BASE_FILE).write_text(edited)
    assert s.status().kind == "edits"
    assert s.refresh() == f"refreshed fused/patches/{patch.name}"
    after = patch.read_text()
    assert after.split("\ndiff --git ")[0] == before.split("\ndiff --git ")[0]  # the DEP-3 header kept
    upstream_path = BASE_FILE.removeprefix("fused/base/")
    assert f"diff --git a/{upstream_path} b/{upstream_path}\n" in after
    assert "fused/base" not in after.split("\n---\n", 1)[1]
    assert "+# a comment typed at the final stage\n" in after
    assert Series(repo, FUSED).status() == Status(FINAL, track=FUSED)
    # As it stands, the patch applies to a sglang checkout's file (what `git am` on 0.5.23 does).
    sglang = repo.parent / "sglang"
    (sglang / upstream_path).parent.mkdir(parents=True)
    (sglang / upstream_path).write_text(fused_track.base_source())
    git.Repo.init(sglang).git.apply(str(patch))
    assert (sglang / upstream_path).read_text() == edited


def test_a_file_the_patch_adds_keeps_sglangs_path(repo):
    # A new module next to the base (a backend file a later patch might touch, say) is refreshed
    # under sglang's path and comes back with the stage.
    s = Series(repo, FUSED)
    s.apply(FINAL)
    added = Path(BASE_FILE).parent / "helper.py"
    (repo / added).write_text("HELPER = 1\n")
    s.refresh()
    patch = (repo / "fused/patches" / FUSED.patch_files(repo)[-1]).read_text()
    upstream_path = str(added).removeprefix("fused/base/")
    assert f"diff --git a/{upstream_path} b/{upstream_path}\nnew file mode 100644\n" in patch
    s.unapply()
    assert not (repo / added).exists()
    assert Series(repo, FUSED).apply(FINAL) == Status(FINAL, track=FUSED)
    assert (repo / added).read_text() == "HELPER = 1\n"


def test_the_committed_patches_apply_to_a_sglang_checkout_as_they_stand(tmp_path):
    # Paths from sglang's root: `git apply` in the sglang repository, no --directory, gives the stage.
    upstream_path = BASE_FILE.removeprefix("fused/base/")
    (tmp_path / upstream_path).parent.mkdir(parents=True)
    (tmp_path / upstream_path).write_text(fused_track.base_source())
    sglang = git.Repo.init(tmp_path)
    for patch in FUSED.patch_files():
        sglang.git.apply(str(REPO_ROOT / FUSED.patch_dir / patch))
    assert (tmp_path / upstream_path).read_text() == fused_track.patched_source()


def test_an_edit_is_never_overwritten_and_the_advice_works_as_printed(repo):
    s = Series(repo, FUSED)
    s.apply(FINAL)
    edited = base_text(repo) + "# an edit\n"
    (repo / BASE_FILE).write_text(edited)
    with pytest.raises(SeriesError) as refusal:
        s.unapply()
    message = str(refusal.value)
    assert "\n" not in message and base_text(repo) == edited
    assert "`make refresh TRACK=fused`" in message and "`git stash push -u -- fused/base`" in message
    # The stash route, typed as printed: set aside (the base is back at HEAD), unapply, pop.
    run_advice(repo, advice(message, "git stash push"))
    assert Series(repo, FUSED).status().stage == "fused-baseline"
    run_advice(repo, advice(message, "make unapply"))
    run_advice(repo, "git stash pop")
    status = Series(repo, FUSED).status()
    assert (status.stage, status.kind, status.modified) == (FINAL, "edits", (BASE_FILE,))
    assert base_text(repo) == edited
    # ... and `make refresh TRACK=fused` folds the edit into the patch.
    assert run_advice(repo, advice(message, "make refresh")).startswith("refreshed fused/patches/")
    assert Series(repo, FUSED).status() == Status(FINAL, track=FUSED)


def test_refresh_at_the_fused_baseline_says_where_a_new_patch_goes(repo):
    with pytest.raises(SeriesError, match=r"^no patch is applied: add the new patch's file name to fused/patches/"):
        Series(repo, FUSED).refresh()


def test_a_commit_of_a_fused_stage_is_refused(repo):
    # Commit fused/base/ only at baseline: HEAD's file must be 0.5.23's (its sha256 in RELEASES.toml).
    s = Series(repo, FUSED)
    s.apply(FINAL)
    subprocess.run(["git", "commit", "-qam", "a stage committed"], cwd=repo, env=GIT_ENV, check=True)
    with pytest.raises(SeriesError) as refusal:
        Series(repo, FUSED).status()
    assert "\n" not in str(refusal.value)
    assert f"HEAD's {BASE_FILE} is not sglang 0.5.23's file" in str(refusal.value)
    run_advice(repo, advice(str(refusal.value), "git checkout").replace("<last good commit>", "HEAD~1"))
    subprocess.run(["git", "commit", "-qm", "restored"], cwd=repo, env=GIT_ENV, check=True)
    assert Series(repo, FUSED).status() == Status("fused-baseline", track=FUSED)


def test_a_fused_stage_leaves_the_base_and_patched_views_of_fused_track_alone(project):
    # fused.track reads the base from HEAD and stages from the series: `make apply-<fused stage>`
    # changes neither (the fused tests compare upstream 0.5.23 with the base by sha256).
    assert _harness(project, "apply", FINAL).returncode == 0
    try:
        check = (
            "from fused import track; "
            "assert track._sha256(track.base_source()) == track.table()['track']['base_sha256']; "
            f"assert track.patched_source() == open({BASE_FILE!r}).read(); print('ok')"
        )
        out = subprocess.run([sys.executable, "-c", check], cwd=project, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(project)})
        assert out.stdout == "ok\n", out.stderr
    finally:
        assert _harness(project, "unapply", "--track", "fused").returncode == 0


# -- the CLI and make -----------------------------------------------------------------------------


def test_status_prints_a_line_per_track(project):
    out = _harness(project, "status")
    assert out.returncode == 0
    assert out.stdout == "vendor_stub/ is at stage 'baseline'\nfused/base/ is at stage 'fused-baseline'\n"
    assert _harness(project, "status", "--track", "fused").stdout == "fused/base/ is at stage 'fused-baseline'\n"


def test_apply_finds_the_track_from_the_stage(project):
    try:
        assert _harness(project, "apply", FINAL).stdout == f"fused/base/ is at stage '{FINAL}'\n"
        assert _harness(project, "status").stdout.splitlines() == [
            "vendor_stub/ is at stage 'baseline'", f"fused/base/ is at stage '{FINAL}'"
        ]
        assert _harness(project, "apply", "fused-baseline").stdout == "fused/base/ is at stage 'fused-baseline'\n"
    finally:
        _harness(project, "unapply", "--track", "fused")


@pytest.mark.parametrize(
    "args",
    [["status", "--track", "nope"], ["unapply", "--track", "nope"], ["refresh", "--track", "fused"],
     ["apply", "nope"], ["verify", "baseline", FINAL], ["stages", "--track", "nope"]],
    ids=lambda a: " ".join(a),
)
def test_every_cli_refusal_is_one_line(project, args):
    out = _harness(project, *args)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr


def test_refresh_without_track_names_the_track_that_has_edits(project):
    assert _harness(project, "apply", FINAL).returncode == 0
    try:
        out = _harness(project, "refresh")
        assert out.returncode == 2 and out.stderr.count("\n") == 1
        assert "fused/base/ is off its baseline: `make refresh TRACK=fused` works there" in out.stderr
    finally:
        _harness(project, "unapply", "--track", "fused")


@pytest.mark.skipif(not (REPO_ROOT / ".venv/bin/python").exists(), reason="needs this checkout's .venv")
def test_make_with_an_unknown_track_is_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    # -o setup: the .venv exists (the suite runs in it); make must not reinstall it for this.
    out = subprocess.run(["make", "-s", "-o", "setup", "status", "TRACK=nope"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True)
    harness_lines = [line for line in out.stderr.splitlines() if not line.startswith("make: ")]
    assert out.returncode != 0 and harness_lines == ["error: no track 'nope': choose one of 0.5.6, fused"], out.stderr


# -- verify --track fused ------------------------------------------------------------------------

FEW = [
    Case("decode", (193, 0, 1, 64, 129), 193),
    Case("target_verify", (5, 130, 189), 193, next_n=2, paged_mqa_ctx_lens=True),
    Case("draft_extend", (7, 65, 128), 193, next_n=3, extend_lens=(3, 0, 2)),
]
# A bug planted after the kernels, whatever their text: one page-table entry past a live prefix
# (the last row is shorter than the table) gets written. Only the whole-buffer check sees it.
PLANTED = """

def _plant(launch):
    def planted(*args, **kwargs):
        launch(*args, **kwargs)
        table = kwargs["page_table_1"]
        table[-1, -1] += 1

    return planted


fused_dsa_decode_metadata = _plant(fused_dsa_decode_metadata)
fused_dsa_target_verify_metadata = _plant(fused_dsa_target_verify_metadata)
fused_dsa_draft_extend_metadata = _plant(fused_dsa_draft_extend_metadata)
"""


def test_verify_catches_a_bug_planted_in_the_fused_base(repo, monkeypatch, capsys):
    s = Series(repo, FUSED)
    s.apply(FINAL)
    (repo / BASE_FILE).write_text(base_text(repo) + PLANTED)
    names, warnings, broken = cli.verify_plan(s, [])
    assert names == [FINAL, "worktree"] and not broken
    assert "`python -m harness verify --track fused worktree` checks fused/base/ as it stands" in warnings[0]
    # The CLI's verify on this clone, on a few cases.
    monkeypatch.setattr(cli, "Series", functools.partial(Series, repo))
    monkeypatch.setattr(fused_verify, "matrix", lambda: FEW)
    assert cli.main(["verify", "--track", "fused"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 * len(FEW) + 1
    assert all(line.split()[0] == FINAL and "bit-exact" in line for line in out[: len(FEW)])
    assert all(line.split()[0] == "worktree" and "DIFFERS" in line for line in out[len(FEW) : -1])
    first_bad = out[len(FEW)]
    assert "decode-bs5-w193-ps64" in first_bad and "page_table_1[4, 192] is -6, want -7" in first_bad
    summary = f"{len(FEW)} of {2 * len(FEW)} stage x case verdicts equal to the eager reference, every buffer whole"
    assert out[-1] == summary


def test_verify_holds_the_fused_baseline_to_upstreams_contract(repo):
    # Upstream writes to the end of each live 128-column block: past the live prefix, so it is held
    # to the contract (page tables on the live prefix), as the tests hold every release.
    verdicts = list(fused_verify.verdicts(Series(repo, FUSED), "fused-baseline", FEW))
    assert [v.exact for v in verdicts] == [True] * len(FEW), verdicts


def test_verify_reports_an_edit_that_does_not_parse(repo):
    s = Series(repo, FUSED)
    (repo / BASE_FILE).write_text(base_text(repo) + "def (:\n")
    [verdict] = fused_verify.verdicts(s, "worktree", FEW)
    assert not verdict.exact and verdict.detail.startswith("SyntaxError")


def test_verify_finds_the_track_from_its_stages():
    assert cli.verify_track(None, [FINAL]) == FUSED
    assert cli.verify_track(None, ["worktree"]) == STUB and cli.verify_track("fused", ["worktree"]) == FUSED
    with pytest.raises(TrackError, match="verify one track at a time"):
        cli.verify_track(None, ["quickwin", FINAL])


def test_verify_cases_are_named_apart():
    names = [fused_verify.case_name(c) for c in fused_verify.matrix()]
    assert len(names) == len(set(names)), names


# -- a read-only checkout and Ctrl-C on the fused track -------------------------------------------

READ_ONLY = read_only_cli("fused/base")


def test_read_only_checkout_gets_one_line_and_keeps_the_stage(project):
    env = {**os.environ, "PYTHONPATH": str(project)}
    out = subprocess.run([sys.executable, "-c", READ_ONLY, "apply", FINAL], cwd=project, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert re.match(r"error: cannot write fused/base/\S+: Permission denied; .*make it writable", out.stderr)
    assert _harness(project, "status", "--track", "fused").stdout == "fused/base/ is at stage 'fused-baseline'\n"


@pytest.mark.parametrize("delay", [0.5, 1.5])
def test_ctrl_c_is_one_line_and_leaves_a_stage(project, delay):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(project)}
    # SIGINT as a terminal delivers it (a test run in the background inherits it ignored).
    proc = subprocess.Popen([sys.executable, "-m", "harness", "apply", FINAL], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    try:
        if proc.returncode == 0:
            pytest.skip(f"apply finished within {delay} s: nothing to interrupt")
        assert (proc.returncode, stderr) == (-signal.SIGINT, cli.INTERRUPTED + "\n")
        status = _harness(project, "status", "--track", "fused").stdout
        assert status in (f"fused/base/ is at stage '{s}'\n" for s in ("fused-baseline", FINAL)), status
    finally:
        assert _harness(project, "unapply", "--track", "fused").returncode == 0


def test_pytest_warns_about_edits_in_the_fused_base(project):
    # The suite checks the committed series (fused.track reads HEAD and the patches): an edit in
    # fused/base/ is said, with the command that verifies it, as one in vendor_stub/ is.
    (project / "tests/test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    original = (project / BASE_FILE).read_bytes()
    (project / BASE_FILE).write_bytes(original + b"# an edit\n")
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_one.py"],
                             cwd=project / "tests", capture_output=True, text=True)
    finally:
        (project / BASE_FILE).write_bytes(original)
        (project / "tests/test_one.py").unlink()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING: fused/base/ holds local edits on top of stage 'fused-baseline'" in out.stdout
    assert "`python -m harness verify --track fused worktree` checks fused/base/ as it stands" in out.stdout
    assert "WARNING: vendor_stub/" not in out.stdout
