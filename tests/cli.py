"""Running the harness CLI as a user would, in a subprocess, under conditions a test sets up."""


def read_only_cli(under: str) -> str:
    """`python -c` text that runs the CLI with every write under `under` failing as on a read-only
    checkout (the tests run as root, for whom permission bits do not stop a write)."""
    return f"""
import errno, os, runpy, sys
real_open = os.open
def read_only(path, *args, **kwargs):
    if {under!r} in str(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    return real_open(path, *args, **kwargs)
os.open = read_only
sys.argv = ["harness", *sys.argv[1:]]
runpy.run_module("harness", run_name="__main__")
"""
