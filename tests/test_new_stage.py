"""A stage appended to patches/series needs no edit anywhere else, and the suite covers it.

A scratch clone of this tree gets one more patch, which only adds a comment; the role-parametrized
tests then run there and must pick the new stage up on their own: bit-exact against baseline, its
op counts, the roles (it becomes final(), and touches no mode), and the shipped launch object.
"""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import git
import pytest

from harness.runner import MODES
from harness.series import STUB_DIR, Series

ROOT = Path(__file__).resolve().parents[1]
NEW_STAGE = "comment-only"
ROLE_TESTS = ["tests/test_roles.py", "tests/test_counters.py", "tests/test_kernel.py", "tests/test_bad_input.py",
              "tests/test_bit_exact.py"]


def clone_with_extra_stage(dest: Path) -> None:
    """This tree as git sees it (baseline stub committed), plus patches/9999-comment-only.patch."""
    listed = git.Repo(ROOT).git.ls_files("--cached", "--others", "--exclude-standard", "-z").split("\0")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file() and not rel.startswith(STUB_DIR + "/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((ROOT / rel).read_bytes())
    series = Series(ROOT)
    for rel, data in series.baseline.items():  # HEAD must hold the pristine stub, whatever stage this tree is at
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
def clone_results(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    dest = tmp_path_factory.mktemp("clone")
    clone_with_extra_stage(dest)
    junit = dest / "junit.xml"
    # The heavy matrix runs for the new stage only; every other role-parametrized test runs whole.
    select = f"{NEW_STAGE} or not test_stage_bit_exact"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", "-k", select,
         *ROLE_TESTS],
        cwd=dest, capture_output=True, text=True,
    )
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes[case.get("name")] = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
    return proc, outcomes


def test_suite_passes_with_the_new_stage(clone_results):
    proc, outcomes = clone_results
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "failed" not in outcomes.values()


def test_new_stage_is_covered_without_edits(clone_results):
    _, outcomes = clone_results
    covered = {name for name, outcome in outcomes.items() if NEW_STAGE in name and outcome == "passed"}
    for test in ("test_stage_bit_exact", "test_stage_bit_exact_fuzz", "test_ops_do_not_grow_with_bs",
                 "test_at_most_one_triton_launch"):
        assert any(name.startswith(test + "[") for name in covered), (test, sorted(covered))
    # a comment-only patch touches no mode: each mode's untouched-stage check runs for it
    for mode in MODES:
        assert f"test_untouched_modes_replay_the_same_ops[{NEW_STAGE}-{mode}]" in covered
    # and it is now what the series ships: the final-stage tests ran against it
    assert outcomes["test_final_stage_reads_no_host_lengths"] == "passed"
