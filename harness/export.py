"""`make export`: dist/sglang-<version>/ for every release, in the form upstream takes patches.

Each folder holds the release's derived series (harness.releases) with paths relative to sglang's
repository root, as `git format-patch` mails that `git am` applies ([PATCH n/N] subjects, From the
project, the DEP-3 fields kept in each message body), a `series` file in quilt order, and
0000-cover-letter.patch ([PATCH 0/N], numbered as git format-patch does). dist/ is generated: everything is built in a scratch folder
first and renamed into place, so an error writes nothing.

What a release's mails claim about that release comes from its own row of
reports/upstream/matrix.json (`python -m harness.upstream --trace --write reports/upstream`): the
cover letter (patches/0000-cover-letter.patch is its template) and a `Tested:` field added to each
patch header say which modes are fused, which are recorded into the CUDA graph and why the others
are not, how many scenarios stayed bit-exact, and which lint findings are upstream's own. A release
without a row, or with a row older than these fields, gets no such claim, only the advice to
regenerate the matrix.

    python -m harness.export [--version V ...] [--out dist]
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import re
import string
import sys
import tempfile
import textwrap
from pathlib import Path

from . import step_numbers
from .releases import GIT_ENV, Applied, Derivation
from .series import PATCH_DIR, REPO_ROOT, Series, SeriesError

AUTHOR = f"{GIT_ENV['GIT_AUTHOR_NAME']} <{GIT_ENV['GIT_AUTHOR_EMAIL']}>"
COVER = "0000-cover-letter.patch"
MATRIX = REPO_ROOT / "reports" / "upstream" / "matrix.json"
WIDTH = 72  # a mail's columns
HARNESS = "nsa-verify-patches"  # the harness: named once, where "how to reproduce" points
MODE_NAMES = {"target_verify": "target verify", "draft_extend": "draft extend", "decode": "decode"}
# The results table's row for a recorded step (H100, the reference's code): only where the
# release's own runner records target verify.
# The letter's numbers come from the step run of record of this very series (harness.step_numbers).
NO_NUMBERS = "No GPU run of this series' speculative step yet: no numbers here.\n"
LINT_TOOLS = ("black", "isort", "ruff")  # what harness/lint.py runs, as sglang's pre-commit does


# -- what a release's own execution showed (its matrix row) -> what its mails may claim -------------


def load_matrix(path: Path = MATRIX) -> dict[str, dict]:
    """version -> that release's row of matrix.json ({} without the file)."""
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    return {r["version"]: r for r in report["releases"]}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def claims(version: str, row: dict | None, reference: str) -> list[str]:
    """The sentences the release's cover letter states about the release, each backed by `row`.

    A row without the per-mode `runner` and `lint` fields (a matrix older than them) backs no
    claim about fusing, recording or lint: the letter then says to regenerate the matrix."""
    numbers = [f"The numbers below were taken on sglang {reference}'s code."] if version != reference else []
    if not row or row.get("error") or not row.get("runner") or not row.get("lint"):
        return [f"No executed result for sglang {version} backs a claim here: regenerate "
                "reports/upstream/matrix.json (python -m harness.upstream --trace --write reports/upstream)."] + numbers
    out = []
    cells = row["cells"]
    exact = [c for c in cells if c["compiles"] and c["failure"] is None and c["exact"] == c["scenarios"]]
    if cells and len(exact) == len(cells):
        out.append(f"Every patch applied to sglang {version}'s own files keeps every buffer bit-exact "
                   f"against its unpatched replay in {cells[0]['scenarios']}/{cells[0]['scenarios']} scenarios.")
    runner = row["runner"]
    fused = [MODE_NAMES[m] for m, r in runner.items() if r["fused"]]
    unfused = [MODE_NAMES[m] for m, r in runner.items() if not r["fused"]]
    if fused:
        out.append(f"Fused into one Triton launch: {_join(fused)}.")
    if unfused:
        out.append(f"Left as sglang {version} replays it: {_join(unfused)}.")
    # cuda_graph_runner replays target verify and decode; draft extend and the draft steps' decode
    # are the speculative runners' (their lines in the row: harness.spec_runners).
    recorded = [MODE_NAMES[m] for m in ("target_verify", "decode") if m in runner and runner[m]["records"]]
    if recorded:
        out.append(f"The patched cuda_graph_runner records {_join(recorded)} into its CUDA graphs.")
    spec = {name: line for r in runner.values() for name, line in (r.get("runners recording") or {}).items()}
    if spec_recording := [name for name, line in spec.items() if line.startswith("records")]:
        out.append(f"The speculative step's {_join(spec_recording)} record{'s' * (len(spec_recording) == 1)} too.")
    verdicts = {name: line.rsplit(" (", 1)[0] for name, line in spec.items() if not line.startswith("records")}
    declined = dict.fromkeys(r["declines"] for r in runner.values() if r["declines"])
    for why in declined:  # the runners that decline for the same reason go in the same sentence
        modes = [MODE_NAMES[m] for m, r in runner.items() if r["declines"] == why]
        alike = [name for name, v in verdicts.items() if v == f"declines: {why}"]
        also = f"; the speculative step's {_join(alike)} alike" if alike else ""
        out.append(f"Not recorded ({_join(modes)}{also}): {why}.")
    for verdict in dict.fromkeys(verdicts.values()):  # one sentence per other verdict, the counts left out
        verb, _, why = verdict.partition(": ")
        if verb == "declines" and why in declined:
            continue
        names = [name for name, v in verdicts.items() if v == verdict]
        verb = verb if len(names) == 1 else {"declines": "decline", "does not offer the recorder":
                                             "do not offer the recorder"}.get(verb, verb)
        out.append(f"The speculative step's {_join(names)} {verb}{': ' + why if why else ''}.")
    lint = row["lint"]
    if not lint["added"]:
        out.append(f"The series adds no {', '.join(LINT_TOOLS[:-1])} or {LINT_TOOLS[-1]} finding.")
    if lint["upstream"]:
        out.append("Left as is, upstream's own: " + "; ".join(map(short_finding, lint["upstream"])) + ".")
    return out + numbers


def short_finding(finding: str) -> str:
    """'python/sglang/.../x.py: ruff: F541 f-string ...' -> 'x.py F541 f-string ...' (a mail's width)."""
    path, tool, message = finding.split(": ", 2)
    return f"{Path(path).name} {message}" if tool == "ruff" else f"{Path(path).name} {tool}: {message}"


def tested(patch: str, version: str, row: dict | None, reference: str) -> list[str]:
    """The `Tested:` field of one patch's header on `version`, from its cell of the release's row."""
    cell = next((c for c in (row or {}).get("cells", ()) if c["patch"] == patch), None)
    if cell is None or row.get("error") or "fused" not in cell:  # no row, or one older than these fields
        return []
    text = f"sglang {version}, {cell['exact']}/{cell['scenarios']} scenarios bit-exact, whole buffers (CPU)"
    if cell["failure"]:
        text += f"; FAILED: {cell['failure']}"
    modes = list(row.get("runner") or MODE_NAMES)
    fused = [MODE_NAMES[m] for m in modes if m in cell["fused"]]
    unfused = [MODE_NAMES[m] for m in modes if m not in cell["fused"]]
    text += f". One launch: {_join(fused) if fused else 'no mode'}"
    if unfused:
        text += f"; not: {_join(unfused)}"
    if cell["records"]:
        text += ". The graph runner records it"
    elif cell["declines"]:
        text += f". Not recorded: {cell['declines']}"
    if version != reference:
        text += f". Numbers: sglang {reference}'s code"
    return _field("Tested", text + ".")


def _field(name: str, text: str) -> list[str]:
    """A DEP-3 field folded at a mail's width (continuation lines start with a space)."""
    return textwrap.wrap(f"{name}: {text}", WIDTH, subsequent_indent=" ", break_on_hyphens=False)


def with_tested(body: str, lines: list[str]) -> str:
    """The header body with the release's `Tested:` field before its Forwarded: field."""
    if not lines:
        return body
    out = body.splitlines()
    at = next((i for i, line in enumerate(out) if line.startswith("Forwarded:")), len(out))
    return "\n".join(out[:at] + lines + out[at:])


def numbered(i: int, total: int) -> str:
    """`i/total` as `git format-patch --numbered` writes it: i zero-padded to total's digits."""
    return f"{i:0{len(str(total))}}/{total}"


def _header_fields(header: str) -> tuple[str, str, str]:
    """A canonical patch header -> (subject without [PATCH n/N], Date value or "", message body).
    A Subject folded over several lines (RFC 2822: each continuation starts with white space) is
    unfolded into one."""
    subject, date, body = "", "", []
    in_subject = False
    for line in header.splitlines():
        if in_subject and line[:1] in (" ", "\t"):
            subject += " " + line.strip()
            continue
        in_subject = line.startswith("Subject:")
        if in_subject:
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


def export_release(derivation: Derivation, version: str, folder: Path, row: dict | None = None) -> list[str]:
    """Write the release's mails into `folder`; returns the series (file names in order)."""
    reference = derivation.table.reference
    applied = [a for a in derivation.derive(version) if a.patch != COVER]
    repo = derivation.repo
    parent = derivation.base_commit(version)
    shipped: list[Applied] = []
    for a in applied:
        commit = repo.commit(a.commit)
        if commit.tree == repo.commit(commit.parents[0]).tree:
            continue  # a header with no diff yet: nothing to mail
        a = Applied(a.patch, a.how, a.commit, release_header(derivation, a.patch, version, a.message))
        subject, date, body = _header_fields(a.message)
        body = with_tested(body, tested(a.patch, version, row, reference))
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
    stat = repo.git.diff("--stat=72", f"{derivation.base_commit(version)}..{tip}") if shipped else ""
    host_work = derivation.table.release(version).host_work
    letter = cover_letter(derivation.series, version, shipped, stat, row, reference, host_work,
                          named=lambda text: in_release_names(derivation, version, text))
    (folder / COVER).write_text(in_release_names(derivation, version, letter))
    (folder / "series").write_text("".join(f"{n}\n" for n in names))
    return names


def in_release_names(derivation: Derivation, version: str, text: str) -> str:
    """Mail text under the release's names for the series' (the reference's: as it is). The harness
    keeps its name: nsa-verify-patches is not an identifier."""
    if version == derivation.table.reference:
        return text
    names = derivation.table.release(version).names
    return names.name(text.replace(HARNESS, "\0")).replace("\0", HARNESS)


def release_header(derivation: Derivation, patch: str, version: str, header: str) -> str:
    """A canonical patch's header as mailed to `version`: under the release's names (0.5.12's
    num_accept_tokens, 0.5.13's dsa_*), with the release's [[header]] edits from
    patches/releases/<patch stem>.toml where a sentence is the release's own (each `before` found
    exactly once in the Description, unfolded, else one line); the Description then refolded at
    the mail width."""
    renamed = in_release_names(derivation, version, header)
    edits = derivation._release_data(patch, "header", version)
    if renamed == header and not edits:
        return header
    lines = renamed.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Description:"))
    end = next((i for i in range(first + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    text = " ".join(line.strip() for line in [lines[first].removeprefix("Description:"), *lines[first + 1 : end]])
    for edit in edits:
        if text.count(edit["before"]) != 1:
            raise SeriesError(
                f"sglang {version}: patches/{patch}'s header edit finds its text {text.count(edit['before'])} "
                f"times in the Description, not once: update it in patches/releases/{Path(patch).stem}.toml"
            )
        text = text.replace(edit["before"], edit["after"])
    folded = textwrap.fill(text, WIDTH, initial_indent="Description: ", subsequent_indent=" ",
                           break_on_hyphens=False, break_long_words=False)
    return "\n".join(lines[:first] + folded.splitlines() + lines[end:])


def cover_letter(series: Series, version: str, shipped: list[Applied], diffstat: str,
                 row: dict | None, reference: str, host_work: str, named=lambda text: text) -> str:
    """[PATCH 0/N]: patches/0000-cover-letter.patch filled in with this release's own facts.

    The template's $claims, $numbers (harness.step_numbers), $shortlog, $diffstat and $base_commit are
    generated: claims() from the release's matrix row, the rest from the mails themselves; $host_work
    (what the unpatched replay does on the host) is the release's, from patches/releases.toml.
    `named` puts text under the release's names: the paragraphs refilled here are renamed first, so
    a longer release name (0.5.14's DecodeCudaGraphRunner) stays within the width."""
    total = len(shipped)
    head, _, text = (series.root / PATCH_DIR / COVER).read_text().partition("\n\n")
    subject, date, _ = _header_fields(head)
    date = date or "Thu, 01 Jan 2026 00:00:00 +0000"
    shortlog = [f"{AUTHOR.split(' <')[0]} ({total}):"] + [
        f"  {_header_fields(a.message)[0] or a.patch}" for a in shipped]
    text = string.Template(text).safe_substitute(host_work=host_work)
    intro, _, rest = text.partition("$claims")  # the opening paragraph, refilled around host_work
    paragraphs = intro.split("\n\n")
    paragraphs[-1] = textwrap.fill(" ".join(named(paragraphs[-1]).split()), WIDTH, break_on_hyphens=False) + "\n"
    text = "\n\n".join(paragraphs) + "$claims" + rest
    body = string.Template(text).substitute(
        claims="\n".join(textwrap.fill(named(c), WIDTH, initial_indent="- ", subsequent_indent="  ",
                                        break_on_hyphens=False) for c in claims(version, row, reference)),
        numbers=step_numbers.block(row) or NO_NUMBERS,
        shortlog="\n".join(shortlog),
        diffstat=diffstat.strip("\n"),
        base_commit=f"v{version}",
        version=version,
        reference=reference,
        harness=HARNESS,
    ).strip("\n")
    return (  # the mbox separator line format-patch writes, so mail tools split it alike
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        f"From: {AUTHOR}\nDate: {date}\nSubject: [PATCH {numbered(0, total)}] {subject}\n\n{body}\n"
    )


def export(versions=None, out: Path = REPO_ROOT / "dist", matrix: Path = MATRIX,
           refused: list[str] | None = None) -> dict[str, list[str]]:
    """Every release's folder under `out` (both tracks; `versions` picks some), all built before any
    is moved into place. Without `versions`, a fused release the export refuses (no live-prefix
    contract, no consumers' verdict) is skipped and its one line appended to `refused`; named, it
    stops the export before anything is written."""
    from fused.track import TrackError as FusedTrackError

    from . import export_fused
    from .tracks import FUSED, STUB, TrackError, track_for_version

    try:
        chosen = {name: [] for name in (STUB.name, FUSED.name)}
        for version in versions or ():
            chosen[track_for_version(version).name].append(version)
    except TrackError as e:
        raise SeriesError(str(e)) from None
    if not versions:
        chosen = {STUB.name: STUB.versions(), FUSED.name: []}
        for version in FUSED.versions():
            try:
                export_fused.consumers_sentence(version)
                chosen[FUSED.name].append(version)
            except export_fused.ExportRefused as e:
                (refused if refused is not None else []).append(str(e))
    for version in chosen[FUSED.name]:
        export_fused.consumers_sentence(version)  # a named release the export refuses: before any work
    rows, fused_rows = load_matrix(matrix), export_fused.load_rows(matrix)
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as staging:
        if chosen[STUB.name]:
            with Derivation() as derivation:
                for version in chosen[STUB.name]:
                    derivation.table.release(version)
                    folder = Path(staging) / f"sglang-{version}"
                    folder.mkdir()
                    done[version] = export_release(derivation, version, folder, rows.get(version))
        for version in chosen[FUSED.name]:
            folder = Path(staging) / f"sglang-{version}"
            folder.mkdir()
            try:
                done[version] = export_fused.export_release(version, folder, fused_rows.get(version))
            except FusedTrackError as e:
                raise SeriesError(str(e)) from None
        for version in done:
            target = out / f"sglang-{version}"
            old = Path(staging) / f"old-{version}"
            if target.exists():
                target.rename(old)  # swapped out, removed with the staging folder
            (Path(staging) / f"sglang-{version}").rename(target)
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="append", help="one release of either track (repeatable)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "dist")
    args = p.parse_args(argv)
    refused: list[str] = []
    try:
        done = export(args.version, args.out, refused=refused)
    except SeriesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for version, names in done.items():
        print(f"{args.out / f'sglang-{version}'}: {len(names)} patches + {COVER}")
    for line in refused:
        print(f"skipped: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
