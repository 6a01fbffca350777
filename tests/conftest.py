import pytest

from harness.env import triton_device

# Without a GPU the Triton stages run on CPU tensors through the interpreter; it must be set
# before triton is imported.
triton_device()

_WORKTREE_WARNING = pytest.StashKey[str]()


def _worktree_warning() -> str:
    """The suite checks the committed series: say so when a track's base (vendor_stub/, fused/base/)
    holds something else, a line per such track."""
    from harness import stages

    if stages.use_build():  # a GPU machine without git: the prepared build is what is tested
        return ""
    from harness.series import Series, SeriesError
    from harness.tracks import present

    warnings = []
    for track in present():
        try:
            note = Series(track=track).worktree_note()
        except SeriesError as e:
            note = str(e)
        if note:
            warnings.append(f"WARNING: {note}")
    return "\n".join(warnings)


def pytest_configure(config):
    config.stash[_WORKTREE_WARNING] = _worktree_warning()


def pytest_report_header(config):  # not shown under -q: the summary below is
    warning = config.stash[_WORKTREE_WARNING]
    return warning.splitlines()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    warning = config.stash.get(_WORKTREE_WARNING, "")
    if warning:  # repeated at the end, where the outcome is read
        terminalreporter.write_sep("!", "a track's base is not a stage of its series", red=True)
        for line in warning.splitlines():
            terminalreporter.write_line(line, red=True)


# Releases whose real files the tests execute directly: the oldest (no attn_backend local, static inputs
# on self), the reference and the newest.
REAL_RELEASES = ("0.5.5", "0.5.6", "0.5.9")


@pytest.fixture(scope="session")
def real_releases():
    """version -> ((tree, module) unpatched, (tree, module) after the whole series), derived once for the
    session: the release's real files and its nsa_backend module loaded around the stub's stand-ins."""
    from harness import stages
    from harness.releases import Derivation
    from harness.series import Series
    from harness.upstream_exec import load_release

    stub = stages.load(stages.BASELINE)
    out = {}
    with Derivation(Series()) as derivation:
        for version in REAL_RELEASES:
            release = derivation.table.release(version)
            commits = (derivation.base_commit(version), derivation.derive(version)[-1].commit)
            out[version] = tuple(
                (tree, load_release(version, tree, stub, release.model_runner, label))
                for tree, label in ((derivation.files(c), label) for c, label in zip(commits, ("unpatched", "series")))
            )
    return out


def pytest_collection_modifyitems(config, items):
    # The real files come from sglang's wheels (the cache, else PyPI): whoever uses them needs the network
    # on a fresh machine, and says so by the `network` marker (`-m "not network"` runs offline).
    for item in items:
        if "real_releases" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.network)
