"""Upstream's lint (black 88, isort --profile black, ruff pyflakes) on every file the series touches."""

import pytest

from harness import stages
from harness.lint import Finding, new_findings
from harness.series import BASELINE, Series


# The final stage in the fast tier (what ships); every other stage in the slow one.
@pytest.mark.parametrize(
    "stage",
    [pytest.param(s, marks=() if s == stages.final() else pytest.mark.slow) for s in stages.names() if s != BASELINE],
)
def test_stage_adds_no_lint_finding(stage):
    series = Series()
    assert new_findings(series.materialize(BASELINE), series.materialize(stage)) == []


def test_lint_catches_what_upstream_pre_commit_would():
    before = {"pkg/mod.py": b"import os\n\nprint(os.sep)\n"}
    after = {
        "pkg/mod.py": b"import os\nimport sys\n\nprint(os.sep)\n",  # sys unused
        "pkg/new.py": b"import torch\nimport os\nx = [1,\n  2]\n",  # unsorted, unformatted
    }
    assert new_findings(before, after) == [
        Finding("pkg/mod.py", "ruff", "F401 `sys` imported but unused"),
        Finding("pkg/new.py", "black", "would reformat"),
        Finding("pkg/new.py", "isort", "imports are incorrectly sorted"),
        Finding("pkg/new.py", "ruff", "F401 `os` imported but unused"),
        Finding("pkg/new.py", "ruff", "F401 `torch` imported but unused"),
    ]


def test_findings_the_unpatched_file_already_has_are_not_the_series_fault():
    unused = b"def f():\n    kwargs = 1\n    return 0\n"
    assert new_findings({"m.py": unused}, {"m.py": unused + b"\n\ndef g():\n    return 1\n"}) == []
