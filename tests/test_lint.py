"""Upstream's lint (black 88, isort --profile black, ruff pyflakes) on every file the series touches."""

import pytest

from harness.lint import Finding, new_findings
from harness.series import Series
from harness.tracks import TRACKS


def _lint_params():
    """Each track's stages; its final stage in the fast tier (what ships), every other in the slow one."""
    for track in TRACKS.values():
        patched = track.stages()[1:]
        for stage in patched:
            marks = () if stage == patched[-1] else pytest.mark.slow
            yield pytest.param(track, stage, marks=marks, id=f"{track.name}-{stage}")


# Both tracks: vendor_stub/'s files against baseline (mapped to every release by upstream-check), the
# fused track's sglang file against 0.5.23's own.
@pytest.mark.parametrize("track, stage", _lint_params())
def test_stage_adds_no_lint_finding(track, stage):
    series = Series(track=track)
    assert new_findings(series.materialize(track.baseline), series.materialize(stage)) == []


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
