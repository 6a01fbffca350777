"""Every Makefile target is a valid first command in a fresh clone (no .venv yet).

`make -n` prints what a target would run without running it: in a checkout without the
virtualenv, every target must start by creating it. (.ci/run runs the README's usage line,
`make apply-quickwin && make test`, for real on CI's fresh clone.)
"""

import os
import re
import shutil
import subprocess

import pytest

from harness.loader import REPO_ROOT
from harness.tracks import TRACKS

EVERY_STAGE = [stage for track in TRACKS.values() for stage in track.stages()]


def _targets() -> list[str]:
    rules = re.findall(r"^([a-z][\w-]*):", (REPO_ROOT / "Makefile").read_text(), re.M)
    return sorted({*rules, *(f"apply-{stage}" for stage in EVERY_STAGE)})


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh")
    for rel in ("Makefile", "requirements.txt", "pyproject.toml", "patches/series", "fused/patches/series"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / rel, root / rel)
    return root


def _dry_run(*args, cwd) -> subprocess.CompletedProcess:
    """`make -n`, as a user's shell runs it: not as a sub-make of `make test` (which would print
    "Entering directory" and pass its own flags down)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(["make", "-n", *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("target", _targets())
def test_target_brings_up_the_venv_first(fresh_clone, target):
    out = _dry_run(target, cwd=fresh_clone)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "python3 -m venv .venv", out.stdout


@pytest.mark.parametrize("stage", EVERY_STAGE)
def test_apply_reaches_the_harness_for_every_stage(fresh_clone, stage):
    # Every stage of both tracks has its own rule (the harness finds the track from the stage's name).
    out = _dry_run(f"apply-{stage}", cwd=fresh_clone)
    assert f".venv/bin/python -m harness apply {stage}" in out.stdout.splitlines()


@pytest.mark.parametrize("target", ["status", "unapply", "refresh", "verify"])
def test_track_is_passed_through(fresh_clone, target):
    out = _dry_run(target, "TRACK=fused", cwd=fresh_clone)
    assert any(line.startswith(f".venv/bin/python -m harness {target} --track fused") for line in out.stdout.splitlines())
    out = _dry_run(target, cwd=fresh_clone)  # without TRACK: the harness's default (status: every track)
    assert any(line.split() == [".venv/bin/python", "-m", "harness", target] for line in out.stdout.splitlines())


def test_upstream_check_and_export_take_one_version(fresh_clone):
    for target in ("upstream-check", "export"):
        out = _dry_run(target, "VERSION=0.5.7", cwd=fresh_clone)
        assert f".venv/bin/python -m harness {target} --version 0.5.7" in out.stdout.splitlines()
