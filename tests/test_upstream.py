"""The series on every release's REAL nsa_backend.py (wheels fetched to the cache), and its errors.

CI cost: every release of patches/releases.toml runs over CI_SCENARIOS (4 of the 20: target verify
at page size 1 and 64, int32 and int64 seq_lens, clamping and non-clamping topk, decode, draft
extend); the reference release 0.5.6 runs every scenario captured at bs <= 8 (the bs 160/256 ones
cost minutes through the interpreter). `python -m harness.upstream` runs everything on every
release (reports/upstream/MATRIX.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest

from harness.releases import GIT_ENV, Derivation, ReleaseError, Table
from harness.scenarios import matrix
from harness.series import REPO_ROOT, STUB_DIR, Series, SeriesError, write_tree
from harness.upstream import run_matrix

CI_SCENARIOS = ("tv-D3-ps64-ctx320", "tv-D4-ps1-ctx256", "dec-D3-ps64", "dx-D3-ps1")


def scenarios_named(prefixes):
    chosen = [s for s in matrix() if s.name.startswith(prefixes)]
    assert len(chosen) == len(prefixes), "a CI scenario left the matrix: update CI_SCENARIOS"
    return chosen


def assert_all_exact(report: dict) -> None:
    assert report["ok"], "; ".join(report["problems"])
    for release in report["releases"]:
        assert [c["patch"] for c in release["cells"]] == report["patches"]
        for cell in release["cells"]:
            assert cell["compiles"] and cell["exact"] == cell["scenarios"] == len(report["scenarios"]), (
                release["version"], cell)


@pytest.mark.slow
@pytest.mark.network
def test_every_release_subset_bit_exact():
    report = run_matrix(scenarios=scenarios_named(CI_SCENARIOS))
    assert [r["version"] for r in report["releases"]] == Table.load().versions
    assert_all_exact(report)


@pytest.mark.slow
@pytest.mark.network
def test_reference_release_matrix_and_stub_reproduces_it():
    scenarios = [s for s in matrix() if max(s.capture_bs) <= 8]
    report = run_matrix(["0.5.6"], scenarios)
    assert_all_exact(report)
    stub = report["releases"][0]["stub"]
    assert stub["failure"] is None and stub["exact"] == len(scenarios), stub


def test_unknown_version_is_one_line():
    with pytest.raises(ReleaseError, match=r"sglang 0\.4\.9 is not in patches/releases\.toml: choose one of 0\.5\.5, "):
        Table.load().release("0.4.9")


@pytest.mark.parametrize(
    "version, since, by",
    [("0.5.23", "0.5.15", r"fused kernels \(fused_dsa_")],
)
def test_replaced_version_says_by_what(version, since, by):
    with pytest.raises(ReleaseError, match=rf"sglang {version} .*replaced it in {since} with .*{by}"):
        Table.load().release(version)


def test_cli_unknown_version_exits_with_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "harness.upstream", "--version", "0.4.9"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "sglang 0.4.9 is not a release this series knows" in proc.stderr, proc.stderr


def test_offline_missing_wheel_names_the_cache_folder(tmp_path):
    env = dict(
        os.environ,
        NSA_UPSTREAM_CACHE=str(tmp_path / "cache"),
        PIP_INDEX_URL="http://127.0.0.1:9/",  # nothing listens on the discard port: offline
        PIP_EXTRA_INDEX_URL="",
        PIP_FIND_LINKS="",
        PIP_RETRIES="0",
        PIP_TIMEOUT="2",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "harness.upstream", "--version", "0.5.9"],
        cwd=REPO_ROOT, capture_output=True, text=True, env=env,
    )
    folder = tmp_path / "cache" / "sglang-0.5.6"  # the reference's wheel is needed first
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"no wheel of sglang==0.5.6 in {folder}" in proc.stderr, proc.stderr
    assert list((tmp_path / "cache").iterdir()) == [], "a failed download left files in the cache"


def synthetic_series(tmp_path: Path, edit) -> Series:
    """A repository holding the real stub and one patch made by `edit(stub text) -> new text`."""
    root = tmp_path / "repo"
    write_tree(root, Series().baseline)  # the committed stub: the working tree may sit at any stage
    (root / "patches").mkdir()
    shutil.copy(REPO_ROOT / "patches" / "releases.toml", root / "patches")
    repo = git.Repo.init(root)
    repo.git.update_environment(**GIT_ENV)
    repo.git.add("-A")
    repo.git.commit("-q", "-m", "stub")
    series = Series(root)
    stub = f"{STUB_DIR}/nsa_backend.py"
    after = dict(series.baseline, **{stub: edit(series.baseline[stub].decode()).encode()})
    (root / "patches" / "0001-synthetic.patch").write_text(series.diff(series.baseline, after))
    (root / "patches" / "series").write_text("0001-synthetic.patch\n")
    return series


@pytest.mark.network
def test_conflict_without_resolution_names_release_patch_and_hunk(tmp_path):
    # Edits the line 0.5.7 changed (the replay's draft-extend condition): a true conflict there.
    def edit(text: str) -> str:
        head, sep, tail = text.rpartition("        elif forward_mode.is_draft_extend():\n")
        assert sep, "the stub's replay lost its draft-extend branch"
        return head + "        elif forward_mode.is_draft_extend():  # synthetic\n" + tail

    with Derivation(synthetic_series(tmp_path, edit)) as derivation:
        assert [a.how for a in derivation.derive("0.5.6.post1")] == ["clean"]
        with pytest.raises(ReleaseError) as e:
            derivation.derive("0.5.9")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("sglang 0.5.9: patches/0001-synthetic.patch conflicts in "
                              "python/sglang/srt/layers/attention/nsa_backend.py at lines ")
    assert "in init_forward_metadata_replay_cuda_graph: no resolution for it in patches/releases/0001-synthetic.toml" in message


# -- export: dist/sglang-<version>/ as upstream takes it -------------------------------------------

from harness.export import COVER, export, numbered  # noqa: E402
from harness.releases import release_tree as release_files_at_their_paths  # noqa: E402
from harness.releases import upstream_roots  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`exported(version)`: that release's folder under one module-wide dist/, exported on first use
    (a release at a time, so the fast tier pays only for the releases it runs), and its series."""
    out, series = tmp_path_factory.mktemp("dist"), {}

    def folder(version: str) -> tuple[Path, list[str]]:
        if version not in series:
            series.update(export([version], out=out))
        return out / f"sglang-{version}", series[version]
    return folder


# The fast tier takes one release per layout (nsa_backend.py at 0.5.6, dsa/ at 0.5.13); every
# release is exported, applied by git am and pushed by quilt in the slow tier.
QUILT_FAST = ("0.5.6", "0.5.13")


def release_tree(root: Path, version: str) -> None:
    """The files the series touches as they sit in sglang's repository (every pinned upstream file,
    where the release keeps it)."""
    for rel, data in release_files_at_their_paths(version).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def python_files(root: Path) -> list[Path]:
    """Every .py file under the upstream paths the series touches that this release's tree has (a
    moved file's other path is absent: 0.5.14's decode runner is not in 0.5.6's tree, nor the reverse)."""
    return [p for top in upstream_roots() for p in ([root / top] if top.endswith(".py") else (root / top).rglob("*.py"))
            if p.is_file()]


@pytest.mark.network
@pytest.mark.parametrize("version", [v if v in QUILT_FAST else pytest.param(v, marks=pytest.mark.slow)
                                     for v in Table.load().versions])
def test_export_git_am_and_quilt_push(exported, version, tmp_path):
    folder, series = exported(version)
    names = (folder / "series").read_text().split()
    assert names == series and COVER not in names
    assert f"Subject: [PATCH {numbered(0, len(names))}]" in (folder / COVER).read_text()
    for i, name in enumerate(names, 1):
        mail = (folder / name).read_text()
        assert mail.splitlines()[1] == "From: nsa-verify-patches <nsa-verify-patches@users.noreply.github.com>"
        assert f"Subject: [PATCH {numbered(i, len(names))}] " in mail and "\nDate: " in mail
        assert "\nAuthor: " in mail and "\nForwarded: " in mail, "DEP-3 fields left the message"

    am = tmp_path / "am"
    release_tree(am, version)
    repo = git.Repo.init(am)
    repo.git.update_environment(**GIT_ENV)
    repo.git.add("-A")
    repo.git.commit("-q", "-m", f"sglang {version}")
    repo.git.am(*[str(folder / n) for n in names])
    assert len(list(repo.iter_commits())) == 1 + len(names)

    quilt = tmp_path / "quilt"  # `quilt push -a`: patch -p1 of each file in series order
    release_tree(quilt, version)
    for name in names:
        subprocess.run(["patch", "-p1", "--batch", "--forward", "-s", "-i", str(folder / name)], cwd=quilt, check=True)
    for path in python_files(am):
        assert (quilt / path.relative_to(am)).read_bytes() == path.read_bytes(), path

    if shutil.which("quilt"):
        real = tmp_path / "real-quilt"
        release_tree(real, version)
        shutil.copytree(folder, real / "patches")
        subprocess.run(["quilt", "push", "-a", "-q"], cwd=real, check=True, env=dict(os.environ, QUILT_PATCHES="patches"))
        for path in python_files(am):
            assert (real / path.relative_to(am)).read_bytes() == path.read_bytes(), path


def test_export_of_unknown_version_writes_nothing(tmp_path):
    with pytest.raises(SeriesError, match="0.4.9 is not a release this series knows"):
        export(["0.5.6", "0.4.9"], out=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == []


# -- fuzz: the real files, hypothesis-drawn scenarios --------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from strategies import target_verify_scenarios  # noqa: E402

from conftest import REAL_RELEASES  # noqa: E402
from harness.verify import compare_lockstep  # noqa: E402

# The oldest release, the reference and the newest: the three shapes of the replay the series meets.
FUZZED_RELEASES = REAL_RELEASES


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("version", FUZZED_RELEASES)
@settings(max_examples=8, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(scenario=target_verify_scenarios(replays=4))
def test_release_series_bit_exact_fuzz(real_releases, version, scenario):
    (_, unpatched), (_, patched) = real_releases[version]
    verdict = compare_lockstep(unpatched, {"series": patched}, scenario)["series"]
    assert verdict.exact, f"sglang {version}, {scenario}: {verdict.describe()}"
