"""`make export`: dist/sglang-<version>/ for every release, in the form upstream takes patches.

Each folder holds the release's derived series (harness.releases) with paths relative to sglang's
repository root, as `git format-patch` mails that `git am` applies ([PATCH n/N] subjects, From the
project, the DEP-3 fields kept in each message body), a `series` file in quilt order, and
0000-cover-letter.patch ([PATCH 0/N]) from patches/0000-cover-letter.patch. dist/ is generated:
everything is built in a scratch folder first and renamed into place, so an error writes nothing.

    python -m harness.export [--version V ...] [--out dist]
"""

from __future__ import annotations

import argparse
import email.utils
import os
import re
import sys
import tempfile
from pathlib import Path

from .releases import GIT_ENV, Applied, Derivation
from .series import PATCH_DIR, REPO_ROOT, Series, SeriesError

AUTHOR = f"{GIT_ENV['GIT_AUTHOR_NAME']} <{GIT_ENV['GIT_AUTHOR_EMAIL']}>"
COVER = "0000-cover-letter.patch"


def _header_fields(header: str) -> tuple[str, str, str]:
    """A canonical patch header -> (subject without [PATCH n/N], Date value or "", message body)."""
    subject, date, body = "", "", []
    for line in header.splitlines():
        if line.startswith("Subject:"):
            subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", line.removeprefix("Subject:").strip())
        elif line.startswith("Date:"):
            date = line.removeprefix("Date:").strip()
        elif not line.startswith("From:") and line != "---":
            body.append(line)
    return subject, date, "\n".join(body).strip("\n")


def _git_date(date: str) -> str:
    """An RFC 2822 Date header as git's author date (the derivation's fixed date without one)."""
    if not date:
        return GIT_ENV["GIT_AUTHOR_DATE"]
    return email.utils.parsedate_to_datetime(date).isoformat()


def export_release(derivation: Derivation, version: str, folder: Path) -> list[str]:
    """Write the release's mails into `folder`; returns the series (file names in order)."""
    applied = [a for a in derivation.derive(version) if a.patch != COVER]
    repo = derivation.repo
    parent = derivation.base_commit(version)
    shipped: list[Applied] = []
    for a in applied:
        commit = repo.commit(a.commit)
        if commit.tree == repo.commit(commit.parents[0]).tree:
            continue  # a header with no diff yet: nothing to mail
        subject, date, body = _header_fields(a.message)
        message = Path(repo.git_dir) / "export-message"
        message.write_text(f"{subject or a.patch}\n\n{body}\n")
        env = dict(GIT_AUTHOR_DATE=_git_date(date), GIT_COMMITTER_DATE=_git_date(date))
        with repo.git.custom_environment(**env):
            parent = repo.git.commit_tree(commit.tree.hexsha, "-p", parent, "-F", str(message))
        shipped.append(a)
    tip = parent
    names = []
    if shipped:
        written = repo.git.format_patch(
            "--numbered", "--zero-commit", "--no-signature", "--stat",
            "-o", str(folder), f"{derivation.base_commit(version)}..{tip}",
        ).splitlines()
        for path, a in zip(written, shipped):
            os.replace(path, folder / a.patch)
            names.append(a.patch)
    (folder / COVER).write_text(cover_letter(derivation.series, version, len(names), shipped))
    (folder / "series").write_text("".join(f"{n}\n" for n in names))
    return names


def cover_letter(series: Series, version: str, total: int, shipped: list[Applied]) -> str:
    """[PATCH 0/N]: the canonical cover letter's text, or a minimal one naming the patches."""
    canonical = series.root / PATCH_DIR / COVER
    if canonical.exists():
        head, _, text = canonical.read_text().partition("\n\n")
        subject, date, _ = _header_fields(head)
        body = text.strip("\n")
    else:
        subject, date = "nsa: target-verify CUDA-graph metadata without host overhead", ""
        body = "\n".join(f"  {i}/{total} {_header_fields(a.message)[0] or a.patch}" for i, a in enumerate(shipped, 1))
    date = date or email.utils.format_datetime(email.utils.parsedate_to_datetime("Thu, 01 Jan 2026 00:00:00 +0000"))
    return (  # the mbox separator line format-patch writes, so mail tools split it alike
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        f"From: {AUTHOR}\nDate: {date}\nSubject: [PATCH 0/{total}] {subject}\n\n"
        f"{body}\n\nDerived for sglang {version} by nsa-verify-patches (python -m harness.export).\n"
    )


def export(versions=None, out: Path = REPO_ROOT / "dist") -> dict[str, list[str]]:
    """Every release's folder under `out`, all built before any is moved into place."""
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as staging, Derivation() as derivation:
        for version in versions or derivation.table.versions:
            derivation.table.release(version)
            folder = Path(staging) / f"sglang-{version}"
            folder.mkdir()
            done[version] = export_release(derivation, version, folder)
        for version in done:
            target = out / f"sglang-{version}"
            old = Path(staging) / f"old-{version}"
            if target.exists():
                target.rename(old)  # swapped out, removed with the staging folder
            (Path(staging) / f"sglang-{version}").rename(target)
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="append", help="one release of patches/releases.toml (repeatable)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "dist")
    args = p.parse_args(argv)
    try:
        done = export(args.version, args.out)
    except SeriesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for version, names in done.items():
        print(f"{args.out / f'sglang-{version}'}: {len(names)} patches + {COVER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
