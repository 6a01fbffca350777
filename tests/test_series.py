"""The series machinery on a scratch repository with a series built here."""

import subprocess
import sys
from pathlib import Path

import git
import pytest

from harness.series import Series, SeriesError

STUB = "vendor_stub/mod.py"
V0 = "x = 0\ny = 0\n"
V1 = "x = 1\ny = 0\n"
V2 = "x = 1\ny = 2\n"


def _patch(repo_dir: Path, before: dict, after: dict, header: str) -> str:
    s = Series(repo_dir)
    return header + "\n" + s.diff(before, after)


@pytest.fixture
def repo(tmp_path):
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
    with pytest.raises(SeriesError, match=r"local edits on top of stage 'one': modified vendor_stub/mod.py.*make refresh.*git stash"):
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


def test_refresh_refuses_to_break_a_later_patch(repo):
    s = Series(repo)
    s.apply("one")
    (repo / STUB).write_text("x = 1\ny = 5\n")  # patch two expects y = 0
    before = (repo / "patches/0001-one.patch").read_text()
    with pytest.raises(SeriesError, match="restored it"):
        s.refresh()
    assert (repo / "patches/0001-one.patch").read_text() == before
    assert (repo / STUB).read_text() == "x = 1\ny = 5\n"


def test_refresh_at_baseline_is_refused(repo):
    (repo / STUB).write_text("x = 7\n")
    with pytest.raises(SeriesError, match="no patch is applied|name a new patch"):
        Series(repo).refresh()


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


@pytest.mark.parametrize("stage", ["baseline", "quickwin", "list-elim", "triton", "repeat-audit", "graph", "nope"])
def test_make_apply_runs_the_harness(stage):
    # `make -n` prints what it would run: every stage (and an unknown name, for its error) reaches the
    # harness. (A .PHONY target served by a pattern rule would print "Nothing to be done".)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["make", "-n", f"apply-{stage}"], cwd=root, capture_output=True, text=True)
    assert f"-m harness apply {stage}" in out.stdout, out.stdout + out.stderr
