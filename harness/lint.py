"""Upstream's lint on what the series touches: black (88), isort (--profile black), ruff's pyflakes.

sglang's pre-commit runs these three on every file of a pull request; the versions are pinned in
requirements.txt to the ones its .pre-commit-config.yaml names. A patched file must add no finding
to what its unpatched file already has: 0.5.5's nsa_backend.py, for one, ships with two of ruff's
F841 findings, which are upstream's to fix, not this series'.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .series import write_tree

Files = dict[str, bytes]

BLACK = [sys.executable, "-m", "black", "--check", "--quiet", "--line-length", "88"]
# sglang is first party in its own repository: its imports form their own section.
ISORT = [sys.executable, "-m", "isort", "--check-only", "--quiet", "--profile", "black", "-p", "sglang"]
RUFF = [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", "--select", "F", "--output-format", "json"]


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    tool: str
    message: str  # no line number: a finding is the same before and after a patch moves it

    def __str__(self) -> str:
        return f"{self.path}: {self.tool}: {self.message}"


def findings(files: Files) -> set[Finding]:
    """Every finding of the three tools on the Python files among `files` (repo-relative paths)."""
    paths = sorted(p for p in files if p.endswith(".py"))
    if not paths:
        return set()
    out: set[Finding] = set()
    with tempfile.TemporaryDirectory(prefix="nsa-lint-") as tmp:
        root = Path(tmp)
        write_tree(root, {p: files[p] for p in paths})
        for path in paths:
            for tool, cmd, message in (
                ("black", BLACK, "would reformat"),
                ("isort", ISORT, "imports are incorrectly sorted"),
            ):
                if subprocess.run([*cmd, path], cwd=root, capture_output=True).returncode:
                    out.add(Finding(path, tool, message))
        ruff = subprocess.run([*RUFF, *paths], cwd=root, capture_output=True, text=True)
        for item in json.loads(ruff.stdout or "[]"):
            rel = str(Path(item["filename"]).resolve().relative_to(root.resolve()))
            out.add(Finding(rel, "ruff", f"{item['code']} {item['message']}"))
    return out


def new_findings(before: Files, after: Files) -> list[Finding]:
    """Findings in the files `after` changes or adds that `before` did not already have."""
    touched = {p: data for p, data in after.items() if before.get(p) != data}
    return sorted(findings(touched) - findings({p: before[p] for p in touched if p in before}))
