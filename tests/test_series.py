"""The series machinery on a scratch repository with a series built here."""

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import git
import pytest

from harness.__main__ import verify_plan
from harness import fingerprint
from harness.series import Series, SeriesError, Status
from harness.tracks import TRACKS
from cli import read_only_cli

STUB = "vendor_stub/mod.py"
V0 = "x = 0\ny = 0\n"
V1 = "x = 1\ny = 0\n"
V2 = "x = 1\ny = 2\n"


def _patch(repo_dir: Path, before: dict, after: dict, header: str) -> str:
    s = Series(repo_dir)
    return header + "\n" + s.diff(before, after)


def make_repo(tmp_path: Path) -> Path:
    r = git.Repo.init(tmp_path)
    (tmp_path / "vendor_stub").mkdir()
    (tmp_path / STUB).write_text(V0)
    (tmp_path / "patches").mkdir()
    r.index.add([STUB])
    r.index.commit("stub", author=git.Actor("t", "t@t"), committer=git.Actor("t", "t@t"))
    p1 = _patch(tmp_path, {STUB: V0.encode()}, {STUB: V1.encode()}, "Subject: one")
    p2 = _patch(
        tmp_path,
        {STUB: V1.encode()},
        {STUB: V2.encode(), "vendor_stub/new.py": b"z = 3\n"},
        "Subject: two",
    )
    (tmp_path / "patches" / "0001-one.patch").write_text(p1)
    (tmp_path / "patches" / "0002-two.patch").write_text(p2)
    (tmp_path / "patches" / "series").write_text("# order\n0001-one.patch\n0002-two.patch\n")
    return tmp_path


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path)


def test_names_follow_series_order(repo):
    assert Series(repo).names() == ["baseline", "one", "two"]


def test_stacked_apply_and_unapply(repo):
    s = Series(repo)
    assert s.status().stage == "baseline"
    assert s.apply("two").stage == "two"
    assert (repo / STUB).read_text() == V2
    assert (repo / "vendor_stub/new.py").read_text() == "z = 3\n"
    assert s.apply("one").stage == "one"  # pops two: its new file goes away
    assert (repo / STUB).read_text() == V1
    assert not (repo / "vendor_stub/new.py").exists()
    assert s.unapply().stage == "baseline"
    assert (repo / STUB).read_text() == V0


def test_baseline_read_byte_exact_from_head(repo):
    # repo.git.show would strip the final newline; the blob read must not.
    assert Series(repo).baseline[STUB] == V0.encode()


def test_unknown_stage_is_refused(repo):
    with pytest.raises(SeriesError, match="unknown stage 'nope'.*baseline, one, two"):
        Series(repo).apply("nope")


@pytest.mark.parametrize("target", ["baseline", "one", "two"])
def test_local_edit_survives_every_move(repo, target):
    s = Series(repo)
    s.apply("one")
    (repo / STUB).write_text("x = 1\ny = 0\n# mine\n")
    with pytest.raises(
        SeriesError, match=r"local edits on top of stage 'one': modified vendor_stub/mod.py.*make refresh.*git stash"
    ):
        s.apply(target)
    assert (repo / STUB).read_text() == "x = 1\ny = 0\n# mine\n"


def test_untracked_new_file_counts_as_edit(repo):
    s = Series(repo)
    (repo / "vendor_stub/extra.py").write_text("pass\n")
    with pytest.raises(SeriesError, match="vendor_stub/extra.py"):
        s.apply("one")
    assert (repo / "vendor_stub/extra.py").exists()


def test_broken_patch_changes_nothing(repo):
    s = Series(repo)
    s.apply("one")
    broken = (repo / "patches/0002-two.patch").read_text().replace("-y = 0", "-y = 9")
    (repo / "patches/0002-two.patch").write_text(broken)
    s = Series(repo)
    with pytest.raises(SeriesError, match="0002-two.patch does not apply"):
        s.apply("two")
    assert (repo / STUB).read_text() == V1
    assert not (repo / "vendor_stub/new.py").exists()


def test_refresh_round_trip_keeps_header(repo):
    s = Series(repo)
    s.apply("two")
    (repo / STUB).write_text("x = 1\ny = 22\n")
    assert "refreshed" in s.refresh()
    text = (repo / "patches/0002-two.patch").read_text()
    assert text.startswith("Subject: two\n")
    assert "+y = 22" in text
    s = Series(repo)
    assert s.status().stage == "two" and s.status().clean
    s.unapply()
    assert s.apply("two").clean
    assert (repo / STUB).read_text() == "x = 1\ny = 22\n"


def test_refresh_of_a_clean_stage_rewrites_positions_an_earlier_patch_moved(tmp_path):
    """A line patch one adds shifts patch two's hunk (and its index line) without touching its
    content: `refresh` at stage two, clean, writes what refresh writes; then it is up to date."""
    lines = [f"v{i} = {i}\n" for i in range(12)]
    v0, v1 = "".join(lines), "".join(["v0 = 100\n", *lines[1:]])
    v2 = v1.replace("v11 = 11", "v11 = 111")
    repo = make_repo(tmp_path)
    (repo / STUB).write_text(v0)
    git.Repo(repo).index.add([STUB])
    git.Repo(repo).index.commit("stub", author=git.Actor("t", "t@t"), committer=git.Actor("t", "t@t"))
    (repo / "patches/0001-one.patch").write_text(_patch(repo, {STUB: v0.encode()}, {STUB: v1.encode()}, "Subject: one"))
    (repo / "patches/0002-two.patch").write_text(_patch(repo, {STUB: v1.encode()}, {STUB: v2.encode()}, "Subject: two"))
    s = Series(repo)
    s.apply("one")
    (repo / STUB).write_text("new = 0\n" + v1)  # patch one now also adds a line at the top
    s.refresh()
    s.apply("two")
    before = (repo / "patches/0002-two.patch").read_bytes()
    s = Series(repo)
    assert s.status().stage == "two" and s.status().clean
    assert "refreshed" in s.refresh()
    after = (repo / "patches/0002-two.patch").read_bytes()
    assert after != before and fingerprint.changes(after) == fingerprint.changes(before)
    assert "already up to date" in Series(repo).refresh()


def test_refresh_refuses_to_break_a_later_patch(repo):
    s = Series(repo)
    s.apply("one")
    (repo / STUB).write_text("x = 1\ny = 5\n")  # patch two expects y = 0
    before = (repo / "patches/0001-one.patch").read_text()
    with pytest.raises(SeriesError, match="would break patches/0002-two.patch; restored it") as refusal:
        s.refresh()
    assert (repo / "patches/0001-one.patch").read_text() == before
    assert (repo / STUB).read_text() == "x = 1\ny = 5\n"
    for prefix in ("git stash push -u", "make apply-two"):
        run_advice(repo, advice(str(refusal.value), prefix))
    assert Series(repo).status() == Status("two")


def test_refresh_at_baseline_is_refused_and_its_advice_leads_to_a_new_patch(repo):
    (repo / STUB).write_text("x = 7\n")
    with pytest.raises(SeriesError, match="a new patch sits on top of the series") as refusal:
        Series(repo).refresh()
    run_advice(repo, advice(str(refusal.value), "git stash push -u"))
    (repo / "patches/0003-three.patch").write_text("Subject: three\n")  # "name the patch in patches/series"
    with open(repo / "patches/series", "a") as f:
        f.write("0003-three.patch\n")
    assert run_advice(repo, advice(str(refusal.value), "make apply-<it>").replace("<it>", "three")).clean
    (repo / STUB).write_text("x = 7\ny = 2\n")  # "make them there"
    assert run_advice(repo, "make refresh") == "refreshed patches/0003-three.patch"
    assert Series(repo).status() == Status("three")


def test_new_patch_is_authored_by_refresh(repo):
    s = Series(repo)
    s.apply("two")
    (repo / "patches/0003-three.patch").write_text("Subject: three\n")
    with open(repo / "patches/series", "a") as f:
        f.write("0003-three.patch\n")
    s = Series(repo)
    assert s.apply("three").stage == "three"
    (repo / STUB).write_text("x = 3\ny = 2\n")
    s.refresh()
    s = Series(repo)
    s.unapply()
    assert s.apply("three").clean and (repo / STUB).read_text() == "x = 3\ny = 2\n"


def test_missing_patch_file_is_named(repo):
    with open(repo / "patches/series", "a") as f:
        f.write("0009-ghost.patch\n")
    with pytest.raises(SeriesError, match="0009-ghost.patch, which does not exist"):
        Series(repo).materialize("ghost")


def test_cli_status_and_refusal(tmp_path):
    # The real repository's CLI: status names a stage, unknown stage exits 2 with a one-line error.
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "harness", "apply", "nope"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: unknown stage 'nope'")
    out = subprocess.run(
        [sys.executable, "-m", "harness", "apply", "baseline", "--reauthor"], cwd=root, capture_output=True, text=True
    )
    assert (out.returncode, out.stderr) == (
        2,
        "error: 'baseline' is not a stage whose patch fails to apply: move to it with `make apply-baseline`\n",
    )


@pytest.mark.parametrize(
    "stage",
    ["baseline", "quickwin", "list-elim", "triton", "repeat-audit", "graph", "fused-baseline",
     "dsa-metadata-width-free-grid", "nope"],
)
def test_make_apply_runs_the_harness(stage):
    # `make -n` prints what it would run: every stage (and an unknown name, for its error) reaches the
    # harness. (A .PHONY target served by a pattern rule would print "Nothing to be done".)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["make", "-n", f"apply-{stage}"], cwd=root, capture_output=True, text=True)
    assert f"-m harness apply {stage}" in out.stdout, out.stdout + out.stderr


# -- every state a user can reach, and advice that works as printed --------------------------------
# Commands in messages are run, not read: git ones through git itself, harness ones through the same
# Series call the Makefile target makes (the CLI always works on this repository, not a scratch one).

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def advice(message: str, prefix: str) -> str:
    """The backticked command in `message` that starts with `prefix` (the test fails without one)."""
    commands = [c for c in re.findall(r"`([^`]+)`", message) if c.startswith(prefix)]
    assert commands, f"no `{prefix}...` in: {message}"
    return commands[0]


def run_advice(repo: Path, command: str):
    words = shlex.split(command)
    if words[0] == "git":
        subprocess.run(words, cwd=repo, env=GIT_ENV, check=True, capture_output=True)
    elif words[0] == "make" and words[1].startswith("apply-"):
        return Series(repo).apply(words[1].removeprefix("apply-"))
    elif words == ["make", "refresh"]:
        return Series(repo).refresh()
    elif words == ["make", "unapply"]:
        return Series(repo).unapply()
    elif words[:4] == ["python", "-m", "harness", "apply"] and words[5:] == ["--reauthor"]:
        return Series(repo).apply(words[4], reauthor=True)
    else:
        raise AssertionError(f"the test does not know how to run `{command}`")


def add_patch_three(repo: Path) -> None:
    """A third patch on top of two, so that a lower patch (two) adds a file."""
    s = Series(repo)
    two = s.materialize("two")
    three = {**two, STUB: b"x = 1\ny = 2\nw = 4\n"}
    (repo / "patches/0003-three.patch").write_text(_patch(repo, two, three, "Subject: three\n---"))
    with open(repo / "patches/series", "a") as f:
        f.write("0003-three.patch\n")


def test_plain_git_stash_at_top_stage_is_a_lower_stage_plus_leftovers(repo):
    # The first case: the old advice (stash without -u) leaves the file patch two adds.
    s = Series(repo)
    s.apply("two")
    (repo / STUB).write_text("x = 1\ny = 2\n# mine\n")
    subprocess.run(["git", "stash", "push", "--", "vendor_stub"], cwd=repo, env=GIT_ENV, check=True)
    status = Series(repo).status()
    assert (status.stage, status.kind, status.leftover) == ("baseline", "leftover", ("vendor_stub/new.py",))
    assert "git stash without -u leaves untracked files behind" in status.describe()
    before = (repo / "patches/0002-two.patch").read_text()
    with pytest.raises(SeriesError, match="refusing to refresh: .*plus files the series adds") as refusal:
        Series(repo).refresh()
    assert "name a new patch" not in str(refusal.value)  # one fix, not two that contradict
    assert (repo / "patches/0002-two.patch").read_text() == before
    run_advice(repo, advice(str(refusal.value), "make apply-"))
    assert Series(repo).status() == Status("baseline")
    assert Series(repo).apply("two").clean


def test_leftover_with_edits_is_kept_and_advice_sets_it_aside(repo):
    s = Series(repo)
    s.apply("two")
    subprocess.run(["git", "stash", "push", "--", "vendor_stub"], cwd=repo, env=GIT_ENV, check=True)
    (repo / "vendor_stub/new.py").write_text("z = 33\n")
    status = Series(repo).status()
    assert (status.kind, status.leftover_edited) == ("leftover", ("vendor_stub/new.py",))
    with pytest.raises(SeriesError, match=r"new.py \(edited\)") as refusal:
        Series(repo).apply("one")
    assert (repo / "vendor_stub/new.py").read_text() == "z = 33\n"
    run_advice(repo, advice(str(refusal.value), "git stash push -u"))
    assert Series(repo).apply("one").clean


def test_edits_to_a_patch_that_only_adds_a_file_refresh_into_it(repo):
    # A patch adding one file and nothing else (e.g. a test): editing that file at its stage is the
    # stage plus edits, not a lower stage plus a leftover, so `make refresh` keeps the edit.
    s = Series(repo)
    s.apply("two")
    added = _patch(repo, s.materialize("two"), {**s.materialize("two"), "vendor_stub/test_new.py": b"t = 1\n"},
                   "Subject: three")
    (repo / "patches/0003-three.patch").write_text(added)
    with open(repo / "patches/series", "a") as f:
        f.write("0003-three.patch\n")
    Series(repo).apply("three")
    (repo / "vendor_stub/test_new.py").write_text("t = 2\n")
    status = Series(repo).status()
    assert (status.stage, status.kind, status.modified) == ("three", "edits", ("vendor_stub/test_new.py",))
    Series(repo).refresh()
    assert Series(repo).status() == Status("three")
    assert Series(repo).materialize("three")["vendor_stub/test_new.py"] == b"t = 2\n"


def test_refresh_refuses_edits_that_revert_a_lower_patch(repo):
    # After a plain stash at 'two', the tree is baseline's mod.py: refreshing it into patch two would
    # silently revert patch one. The refusal says which patch, and its advice restores the stage.
    s = Series(repo)
    s.apply("two")
    (repo / STUB).write_text("x = 0\ny = 0\n# mine\n")
    before = (repo / "patches/0002-two.patch").read_text()
    with pytest.raises(
        SeriesError, match="would revert patches/0001-one.patch's change to vendor_stub/mod.py"
    ) as refusal:
        Series(repo).refresh()
    assert (repo / "patches/0002-two.patch").read_text() == before
    for prefix in ("git stash push -u", "make apply-two"):
        run_advice(repo, advice(str(refusal.value), prefix))
    assert Series(repo).status() == Status("two")


def test_refresh_refuses_to_delete_a_file_a_lower_patch_adds(repo):
    add_patch_three(repo)
    s = Series(repo)
    s.apply("three")
    (repo / "vendor_stub/new.py").unlink()
    (repo / STUB).write_text("x = 1\ny = 2\nw = 44\n")
    status = s.status()
    assert (status.stage, status.modified, status.missing) == ("three", (STUB,), ("vendor_stub/new.py",))
    assert status.describe().endswith("modified vendor_stub/mod.py; deleted vendor_stub/new.py")
    with pytest.raises(SeriesError, match="would delete vendor_stub/new.py, which patches/0002-two.patch adds"):
        s.refresh()


def test_refresh_allows_rewriting_lines_a_lower_patch_added(repo):
    s = Series(repo)
    s.apply("two")
    (repo / STUB).write_text("x = 1\ny = 22\n")  # y = 2 came from patch two itself; x = 1 stays
    assert "refreshed" in s.refresh()


def test_the_real_series_undoes_no_lower_patch():
    # The rule must not refuse the committed patches themselves, and must catch each one's revert.
    s = Series()
    names = s.names()
    for index in range(1, len(names)):
        assert s._undoes_lower_patch(index, s.materialize(names[index])) == "", names[index]
    checked = 0
    for index in range(2, len(names)):
        lower, below = s.materialize(names[index - 2]), s.materialize(names[index - 1])
        if all(lower.get(path, data) == data for path, data in below.items()):
            continue  # the patch below only adds files (e.g. a test): no line of it to revert
        reverted = {**below, **lower}
        assert "would revert" in s._undoes_lower_patch(index, reverted), names[index]
        checked += 1
    assert checked >= len(names) - 3  # every patch but the purely additive ones


def test_stage_minus_files_is_named_and_restored_by_its_advice(repo):
    s = Series(repo)
    s.apply("two")
    (repo / "vendor_stub/new.py").unlink()
    status = s.status()
    assert (status.stage, status.kind, status.missing) == ("two", "minus", ("vendor_stub/new.py",))
    with pytest.raises(SeriesError, match="refusing to refresh: .*less files it holds"):
        s.refresh()
    run_advice(repo, advice(status.describe(), "make apply-"))
    assert Series(repo).status() == Status("two")


def test_missing_files_alone_do_not_block_a_move(repo):
    s = Series(repo)
    s.apply("two")
    (repo / "vendor_stub/new.py").unlink()  # nothing is lost by moving: the series holds it
    assert s.apply("one").clean


@pytest.mark.parametrize("choice", ["git stash push -u", "make refresh"])
def test_edit_refusal_advice_works_as_printed(repo, choice):
    s = Series(repo)
    s.apply("two")
    (repo / STUB).write_text("x = 1\ny = 2\n# mine\n")
    (repo / "vendor_stub/new.py").write_text("z = 4\n")  # untracked: plain `git stash` would leave it
    with pytest.raises(SeriesError, match="refusing to move to 'one'") as refusal:
        s.apply("one")
    run_advice(repo, advice(str(refusal.value), choice))
    assert Series(repo).apply("one").clean


def test_stash_round_trip_works_as_printed(repo):
    # The refusal's own route: set the edits aside, move, come back, and the edits are "stage two plus
    # edits" again (not "baseline plus edits"), so `make refresh` folds them into patch two.
    s = Series(repo)
    s.apply("two")
    edited = "x = 1\ny = 2\n# mine\n"
    (repo / STUB).write_text(edited)
    with pytest.raises(SeriesError, match="refusing to move to 'one'") as refusal:
        s.apply("one")
    message = str(refusal.value)
    run_advice(repo, advice(message, "git stash push -u"))
    assert run_advice(repo, "make apply-one").clean  # "and retry"
    run_advice(repo, advice(message, "make unapply"))
    run_advice(repo, advice(message, "git stash pop"))
    status = Series(repo).status()
    assert (status.stage, status.kind, status.modified, status.left_at) == ("two", "edits", (STUB,), None)
    assert status.describe() == "vendor_stub/ holds local edits on top of stage 'two': modified vendor_stub/mod.py"
    assert run_advice(repo, advice(message, "make refresh")) == "refreshed patches/0002-two.patch"
    assert Series(repo).status() == Status("two")
    assert Series(repo).apply("one").clean and Series(repo).apply("two").clean
    assert (repo / STUB).read_text() == edited


def test_edits_typed_at_a_stage_stay_on_that_stage(repo):
    # Touching the same file as a higher patch does not move the edits there: they are nearer home.
    s = Series(repo)
    s.apply("one")
    (repo / STUB).write_text("x = 1\ny = 0\n# mine\n")
    assert s.status().stage == "one"
    s = Series(repo)
    (repo / STUB).write_text(V1)
    s.unapply()
    (repo / STUB).write_text("x = 0\ny = 0\n# mine\n")
    assert Series(repo).status().stage == "baseline"


def break_patch_two(repo):
    """Make patches/0002-two.patch stop applying (its context no longer matches stage 'one')."""
    patch = repo / "patches/0002-two.patch"
    patch.write_text(patch.read_text().replace("-y = 0", "-y = 9"))


def test_broken_patch_blocks_only_the_stages_from_it_up(repo):
    add_patch_three(repo)
    s = Series(repo)
    s.apply("one")
    break_patch_two(repo)
    s = Series(repo)
    status = s.status()
    assert status == Status("one", broken=status.broken)
    assert "patches/0002-two.patch does not apply on top of stage 'one'" in status.describe()
    for stage in ("two", "three"):
        with pytest.raises(SeriesError, match="0002-two.patch does not apply.*--reauthor"):
            s.apply(stage)
    assert s.unapply().stage == "baseline"
    assert s.apply("one").stage == "one"


def test_broken_patch_is_reauthored_by_its_advice(repo):
    add_patch_three(repo)
    s = Series(repo)
    break_patch_two(repo)
    with pytest.raises(SeriesError) as refusal:
        s.apply("two")
    status = run_advice(repo, advice(str(refusal.value), "python -m harness apply two --reauthor"))
    assert (status.stage, status.reauthoring) == ("one", "two")
    assert status.describe() == "vendor_stub/ is at stage 'one' (re-authoring 'two': `make refresh` writes its patch)"
    with pytest.raises(SeriesError, match="redo the change of 0002-two.patch"):
        Series(repo).refresh()
    (repo / STUB).write_text(V2)  # the change redone
    (repo / "vendor_stub/new.py").write_text("z = 3\n")
    assert run_advice(repo, advice(str(refusal.value), "make refresh")) == "refreshed patches/0002-two.patch"
    assert (repo / "patches/0002-two.patch").read_text().startswith("Subject: two\n---\ndiff --git ")
    s = Series(repo)
    assert s.status() == Status("two")
    assert s.apply("three").clean and s.unapply().clean and s.apply("two").clean


def test_modes_are_kept_and_new_files_get_gits_mode(repo):
    old_umask = os.umask(0o022)
    try:
        (repo / STUB).chmod(0o755)  # an unusual mode, to see it kept rather than reset
        s = Series(repo)
        s.apply("two")
        assert stat.S_IMODE((repo / STUB).stat().st_mode) == 0o755
        assert stat.S_IMODE((repo / "vendor_stub/new.py").stat().st_mode) == 0o644
        (repo / STUB).chmod(0o644)
        s.unapply()
        assert stat.S_IMODE((repo / STUB).stat().st_mode) == 0o644
    finally:
        os.umask(old_umask)


HOSTILE_GITCONFIG = """\
[diff]
\tnoprefix = true
\tmnemonicPrefix = true
\trenames = copies
\tcontext = 9
\texternal = false
[core]
\tabbrev = 12
[color]
\tui = always
\tdiff = always
[apply]
\twhitespace = error
"""


def _refreshed_patch(repo: Path) -> str:
    s = Series(repo)
    s.apply("two")
    (repo / STUB).write_text("x = 1\ny = 22\n")
    s.refresh()
    return (repo / "patches/0002-two.patch").read_text()


def test_refresh_ignores_the_users_git_config(tmp_path, monkeypatch):
    plain = _refreshed_patch(make_repo(tmp_path / "plain"))
    hostile_repo = make_repo(tmp_path / "hostile")
    (tmp_path / "gitconfig").write_text(HOSTILE_GITCONFIG)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    hostile = _refreshed_patch(hostile_repo)
    assert hostile == plain
    assert "\x1b" not in hostile and "--- a/vendor_stub/mod.py\n+++ b/vendor_stub/mod.py\n" in hostile
    assert re.search(r"^index [0-9a-f]{7}\.\.[0-9a-f]{7} 100644$", hostile, re.M)


def test_refresh_adds_no_blank_line_after_the_header(repo):
    patch = repo / "patches/0002-two.patch"
    patch.write_text(patch.read_text().replace("Subject: two\n", "Subject: two\n---\n", 1))
    s = Series(repo)
    s.apply("two")
    for y in ("22", "23"):  # refreshing twice leaves the header as it was
        (repo / STUB).write_text(f"x = 1\ny = {y}\n")
        s.refresh()
        assert patch.read_text().startswith("Subject: two\n---\ndiff --git a/vendor_stub/mod.py")


# -- what verify and the test suite cover --------------------------------------------------------


def test_verify_covers_unrefreshed_edits(repo):
    s = Series(repo)
    s.apply("two")
    assert verify_plan(s, []) == (["one", "two"], [], False)
    (repo / STUB).write_text("x = 1\ny = 2\n# a bug typed here\n")
    names, warnings, _ = verify_plan(s, [])
    assert names == ["one", "two", "worktree"]
    assert "also verifying stage 'worktree'" in warnings[0] and "modified vendor_stub/mod.py" in warnings[0]
    names, warnings, _ = verify_plan(s, ["two"])  # asked for the committed stage only: said loudly
    assert names == ["two"] and "`python -m harness verify worktree`" in warnings[0]
    assert verify_plan(s, ["worktree"]) == (["worktree"], [], False)


def test_verify_fails_on_a_patch_that_does_not_apply(repo):
    break_patch_two(repo)
    names, warnings, broken = verify_plan(Series(repo), [])
    assert names == ["one"] and broken and "0002-two.patch does not apply" in warnings[0]


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory):
    """This project's harness, conftest and pyproject over the committed stub and series, in a repo."""
    root = Path(__file__).resolve().parents[1]
    copy = tmp_path_factory.mktemp("project")
    archive = subprocess.run(
        ["git", "archive", "HEAD", "vendor_stub", "patches"], cwd=root, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(copy)], input=archive.stdout, check=True)
    for rel in ("harness", "tests/conftest.py", "pyproject.toml"):
        src, dst = root / rel, copy / rel
        dst.parent.mkdir(exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    (copy / "tests/test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    subprocess.run(["git", "init", "-q"], cwd=copy, env=GIT_ENV, check=True)
    subprocess.run(["git", "add", "-A"], cwd=copy, env=GIT_ENV, check=True)
    subprocess.run(["git", "commit", "-qm", "copy"], cwd=copy, env=GIT_ENV, check=True)
    return copy


def test_pytest_collects_from_tests_dir_and_warns_about_edits(project_copy):
    tests = project_copy / "tests"
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_one.py"]
    clean = subprocess.run(pytest_cmd, cwd=tests, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "WARNING" not in clean.stdout
    edited = project_copy / "vendor_stub/sglang_standins.py"
    original = edited.read_bytes()
    edited.write_bytes(original + b"# a bug typed here\n")
    try:
        out = subprocess.run(pytest_cmd, cwd=tests, capture_output=True, text=True)
    finally:
        edited.write_bytes(original)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING: vendor_stub/ holds local edits on top of stage 'baseline'" in out.stdout
    assert "`python -m harness verify worktree`" in out.stdout


def test_harness_runs_from_a_subdirectory(project_copy):
    # `make setup` installs the project editable; PYTHONPATH stands in for that install here. What
    # is checked is that the harness finds the repository from its own location, not the cwd.
    env = {**os.environ, "PYTHONPATH": str(project_copy)}
    out = subprocess.run(
        [sys.executable, "-m", "harness", "status"],
        cwd=project_copy / "vendor_stub",
        env=env,
        capture_output=True,
        text=True,
    )
    assert (out.returncode, out.stdout) == (0, "vendor_stub/ is at stage 'baseline'\n"), out.stderr


def test_edits_on_a_stage_above_a_broken_patch_are_not_refreshed_into_a_lower_one(repo):
    # At 'three', patch two stops applying: the tree is nearest to 'one' but holds the work of
    # patches two and three; refreshing it into any patch would fold the others in.
    add_patch_three(repo)
    s = Series(repo)
    s.apply("three")
    break_patch_two(repo)
    s = Series(repo)
    status = s.status()
    assert (status.stage, status.left_at) == ("one", "three")
    assert "nearest to stage 'one' (the last apply left 'three')" in status.describe()
    before = {p.name: p.read_bytes() for p in (repo / "patches").iterdir()}
    with pytest.raises(SeriesError, match="refusing to refresh: .*nearest to stage 'one'") as refusal:
        s.refresh()
    assert {p.name: p.read_bytes() for p in (repo / "patches").iterdir()} == before
    for prefix in ("git stash push -u", "make apply-one"):
        run_advice(repo, advice(str(refusal.value), prefix))
    assert Series(repo).status() == Status("one", broken=status.broken)


@pytest.mark.parametrize("track", TRACKS.values(), ids=TRACKS.keys())
def test_refresh_would_rewrite_each_committed_patch_byte_for_byte(tmp_path, monkeypatch, track):
    # Patches are authored by `make refresh`: under a hostile git config it must still produce them,
    # paths included (the fused track's name sglang's own, relative to fused/base/).
    (tmp_path / "gitconfig").write_text(HOSTILE_GITCONFIG)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    s = Series(track=track)
    names = s.names()
    for below, stage in zip(names, names[1:]):
        text = s.patch_text(stage)
        assert Series._header(text) + s.diff(s.materialize(below), s.materialize(stage)).encode() == text, stage


# -- the CLI's one-line answers: refusals, a read-only checkout, Ctrl-C ------------------------------


def _harness(project: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=project, env=env, capture_output=True,
                          text=True, **kwargs)


READ_ONLY = read_only_cli("vendor_stub")


def test_read_only_checkout_gets_one_line_and_keeps_the_stage(project_copy):
    env = {**os.environ, "PYTHONPATH": str(project_copy)}
    out = subprocess.run([sys.executable, "-c", READ_ONLY, "apply", "quickwin"], cwd=project_copy, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert re.match(r"error: cannot write vendor_stub/\S+: Permission denied; .*make it writable", out.stderr)
    chmod = advice(out.stderr, "chmod -R u+w")
    assert chmod == f"chmod -R u+w {project_copy}"  # the checkout the harness runs from
    assert _harness(project_copy, "status").stdout == "vendor_stub/ is at stage 'baseline'\n"
    subprocess.run(shlex.split(chmod), check=True)  # typed as printed; then the command goes through
    assert _harness(project_copy, "apply", "quickwin").stdout == "vendor_stub/ is at stage 'quickwin'\n"
    assert _harness(project_copy, "apply", "baseline").returncode == 0


def test_every_cli_refusal_is_one_line(project_copy):
    for args in (["apply", "nope"], ["apply", "baseline", "--reauthor"], ["refresh"]):
        out = _harness(project_copy, *args)
        assert out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr


@pytest.mark.parametrize("delay", [0.5, pytest.param(3.0, marks=pytest.mark.slow)])
def test_ctrl_c_is_one_line_and_leaves_a_stage(project_copy, delay):
    # Wherever the interrupt lands (imports, materializing, writing), one line, and vendor_stub/ is
    # exactly one stage afterwards: the one it was at or the one asked for.
    import signal
    import time

    final = Series(project_copy).names()[-1]
    env = {**os.environ, "PYTHONPATH": str(project_copy)}
    # SIGINT as a terminal delivers it: a test run in the background inherits it ignored, and Python then
    # installs no KeyboardInterrupt handler at all.
    proc = subprocess.Popen([sys.executable, "-m", "harness", "apply", final], cwd=project_copy, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    try:
        if proc.returncode == 0:
            pytest.skip(f"apply finished within {delay} s: nothing to interrupt")
        assert proc.returncode == -signal.SIGINT, (proc.returncode, stderr)
        from harness.__main__ import INTERRUPTED

        assert stderr == INTERRUPTED + "\n"
        status = _harness(project_copy, "status").stdout
        assert status in (f"vendor_stub/ is at stage '{s}'\n" for s in ("baseline", final)), status
    finally:
        assert _harness(project_copy, "apply", "baseline").returncode == 0
