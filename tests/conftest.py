import pytest

from harness.env import triton_device

# Without a GPU the Triton stages run on CPU tensors through the interpreter; it must be set
# before triton is imported.
triton_device()

_WORKTREE_WARNING = pytest.StashKey[str]()


def _worktree_warning() -> str:
    """The suite checks the committed series: say so when vendor_stub/ holds something else."""
    from harness import stages

    if stages.use_build():  # a GPU machine without git: the prepared build is what is tested
        return ""
    from harness.series import Series, SeriesError

    try:
        note = Series().worktree_note()
    except SeriesError as e:
        return f"WARNING: {e}"
    return f"WARNING: {note}" if note else ""


def pytest_configure(config):
    config.stash[_WORKTREE_WARNING] = _worktree_warning()


def pytest_report_header(config):  # not shown under -q: the summary below is
    warning = config.stash[_WORKTREE_WARNING]
    return [warning] if warning else []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    warning = config.stash.get(_WORKTREE_WARNING, "")
    if warning:  # repeated at the end, where the outcome is read
        terminalreporter.write_sep("!", "vendor_stub/ is not a stage of the series", red=True)
        terminalreporter.write_line(warning, red=True)
