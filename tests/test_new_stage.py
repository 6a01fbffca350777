"""A stage appended to patches/series needs no edit anywhere else, and the suite covers it.

A scratch clone of this tree gets one more patch, which only adds a comment. There the roles must
pick it up on their own (it becomes final(), previous() is the old final stage, it touches no mode),
the role-parametrized tests must select it in the fast tier (collected, not run: the suite is not
run twice), and its own fast bit-exact and untouched-mode cases must pass.
"""

import json
import subprocess
import sys
from pathlib import Path

import git
import pytest

from harness import stages
from harness.runner import MODES
from harness.series import STUB_DIR, Series
from harness.tracks import present

ROOT = Path(__file__).resolve().parents[1]
NEW_STAGE = "comment-only"
ROLE_TESTS = ["tests/test_roles.py", "tests/test_counters.py", "tests/test_bad_input.py", "tests/test_bit_exact.py",
              "tests/test_input_contract.py", "tests/test_lint.py"]
ROLES = """
import json
from harness import stages
from harness import stages
from harness.runner import MODES
new = stages.final()
print(json.dumps({"names": stages.names(), "final": new, "previous": stages.previous(new),
                  "touching": {mode: stages.touching(mode) for mode in MODES}}))
"""


def clone_with_extra_stage(dest: Path) -> None:
    """This tree as git sees it (baseline stub committed), plus patches/9999-comment-only.patch."""
    listed = git.Repo(ROOT).git.ls_files("--cached", "--others", "--exclude-standard", "-z").split("\0")
    bases = tuple(f"{track.base_dir}/" for track in present(ROOT))
    for rel in filter(None, listed):
        if (ROOT / rel).is_file() and not rel.startswith(bases):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((ROOT / rel).read_bytes())
    series = Series(ROOT)
    for track in present(ROOT):  # HEAD must hold each pristine base, whatever stage this tree is at
        for rel, data in Series(ROOT, track).baseline.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(data)
    repo = git.Repo.init(dest)
    repo.git.add("-A")
    repo.index.commit("scratch clone", author=git.Actor("t", "t@t"), committer=git.Actor("t", "t@t"))

    before = series.materialize(series.names()[-1])
    after = dict(before)
    backend = f"{STUB_DIR}/nsa_backend.py"
    after[backend] = before[backend] + b"# A comment: the replay runs the same lines.\n"
    patch = "9999-comment-only.patch"
    (dest / "patches" / patch).write_text(f"Subject: {NEW_STAGE}\n\n" + Series(dest).diff(before, after))
    with open(dest / "patches" / "series", "a") as f:
        f.write(patch + "\n")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("clone")
    clone_with_extra_stage(dest)
    return dest


def _run(clone: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=clone, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


def test_roles_select_the_new_stage(clone):
    roles = json.loads(_run(clone, "-c", ROLES).stdout)
    old_final = Series(ROOT).names()[-1]
    assert roles["names"] == Series(ROOT).names() + [NEW_STAGE]
    assert (roles["final"], roles["previous"]) == (NEW_STAGE, old_final)
    # a comment touches no mode: the trace sees the same lines as on the stage below
    here = {mode: stages.touching(mode) for mode in MODES}
    assert roles["touching"] == here


def test_fast_tier_selects_the_new_stage_without_edits(clone):
    collected = _run(clone, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "-m", "not slow",
                     *ROLE_TESTS).stdout.splitlines()
    ids = {line.split("::", 1)[1] for line in collected if "::" in line and NEW_STAGE in line}
    for test in ("test_stage_bit_exact", "test_ops_do_not_grow_with_bs", "test_at_most_one_triton_launch",
                 "test_stage_adds_no_lint_finding", "test_int32_overflowing_length_is_refused_before_any_write"):
        assert any(i.startswith(test + "[") for i in ids), (test, sorted(ids))
    fast_modes = {mode for mode in ("tv-", "dec-", "dx-") if any(f"[{NEW_STAGE}-{mode}" in i for i in ids)}
    assert fast_modes == {"tv-", "dec-", "dx-"}, sorted(ids)  # as the final stage, in every mode
    for mode in MODES:
        assert f"test_untouched_modes_replay_the_same_ops[{NEW_STAGE}-{mode}]" in ids


@pytest.mark.slow
def test_the_new_stages_own_fast_cases_pass(clone):
    # Its bit-exact cases and untouched-mode op counts, run: what the suite would check of it.
    out = _run(clone, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k",
               f"{NEW_STAGE} and (test_stage_bit_exact or test_untouched_modes)", "tests/test_bit_exact.py",
               "tests/test_roles.py").stdout
    assert " passed" in out and "failed" not in out and "error" not in out, out[-2000:]
