"""`make export VERSION=<fused release>`: dist/sglang-<version>/ for the fused track (0.5.15 - 0.5.23).

The release's series: each patch of fused/patches/series as the diff from the release's own module
(from its wheel) to the patched base under the release's names, at the release's module path
(harness.upstream_fused.derived_sources: the same texts upstream-check runs), mailed as `git
format-patch` writes it, so that `git am` and `quilt push -a` take the folder. Each mail keeps its
patch's DEP-3 header with a `Tested:` field generated from the release's row of
reports/upstream/matrix.json (its `fused` part); the cover letter (fused/cover-letter.txt) is an
upstream PR description whose one table is read from the track's GPU run of record,
reports/<machine>/fused.json, naming its card, torch and triton.

0.5.15 - 0.5.16 state no live-prefix contract: they are exported only where fused/consumers.toml
says that release's consumers read nothing past the live prefix, and their letter then states
its summary sentence; otherwise the export refuses them in one line.
"""

from __future__ import annotations

import json
import string
import textwrap
import tomllib
from pathlib import Path

from fused import track

from . import export as ex
from . import upstream_fused
from .series import REPO_ROOT, SeriesError

TEMPLATE = REPO_ROOT / "fused" / "cover-letter.txt"
CONSUMERS = REPO_ROOT / "fused" / "consumers.toml"
REPORTS = REPO_ROOT / "reports"
# The run of record: the first of these machines with a fused.json, else any machine's.
MACHINES = ("h200", "h100")
# The cover letter's one table: graph-replayed µs, width 163840, page 64, D=4 (mode, bs, lengths).
TABLE_ROWS = (
    ("decode", 128, "all_64k"),
    ("decode", 128, "all_le_4k"),
    ("target_verify", 32, "all_64k"),
    ("target_verify", 128, "all_64k"),
    ("target_verify", 128, "uniform_1_160k"),
    ("target_verify", 128, "one_160k_rest_1_4k"),
    ("target_verify", 128, "all_le_4k"),
    ("target_verify", 256, "all_le_4k"),
    ("draft_extend", 128, "all_64k"),
    ("draft_extend", 128, "all_le_4k"),
)
WIDTH_OF_RECORD = 163840
PROFILE_NAMES = {"all_64k": "64k", "uniform_1_160k": "1-160k", "one_160k_rest_1_4k": "1 160k, rest<4k",
                 "all_le_4k": "<=4k"}
MODE_SHORT = {"decode": "decode", "target_verify": "verify", "draft_extend": "draft ext."}


class ExportRefused(SeriesError):
    """One line: why this release is not exported, and what would change that."""


def consumers() -> dict:
    if not CONSUMERS.exists():
        return {}
    return tomllib.loads(CONSUMERS.read_text()).get("release", {})


def consumers_sentence(version: str) -> str | None:
    """For a release without the live-prefix contract: the consumers' summary sentence, if
    fused/consumers.toml says its consumers read nothing past the live prefix; else refuse."""
    if track.release(version)["live_prefix_contract"]:
        return None
    entry = consumers().get(version)
    first = next(r["version"] for r in track.table()["release"] if r["live_prefix_contract"])
    advice = f"`make export VERSION={first}` exports the first release whose docstring states it"
    if not entry:
        raise ExportRefused(
            f"sglang {version} states no live-prefix contract and fused/consumers.toml has no verdict on its "
            f"consumers: not exported ({advice})")
    if not entry.get("live_prefix_safe"):
        raise ExportRefused(
            f"sglang {version}'s consumers may read past the live prefix (fused/consumers.toml) and the patch "
            f"writes live prefixes only: not exported ({advice})")
    return " ".join(entry["summary"].split())


# -- the run of record --------------------------------------------------------------------------------


def run_of_record() -> tuple[Path, dict] | None:
    found = {p.parent.name: p for p in sorted(REPORTS.glob("*/fused.json"))}
    for machine in (*MACHINES, *sorted(found)):
        if machine in found:
            return found[machine], json.loads(found[machine].read_text())
    return None


def stale(data: dict) -> bool:
    """Whether the run of record measured another kernel than the series' (the patch changed since)."""
    return data.get("patched_sha256") != upstream_fused._sha(track.patched_source())


def table(record: tuple[Path, dict] | None) -> str:
    """The letter's one table, every number read from the run of record."""
    if record is None:
        return "No GPU run of record yet (reports/<machine>/fused.json): no numbers here."
    path, data = record
    rows = {(r["mode"], r["bs"], r["width"], r["profile"]): r for r in data["benchmark"]["rows"]}
    head = [
        f"On an {data['card']} (torch {data['torch']}, triton {data['triton']}),",
        f"each launch alone replayed from a CUDA graph, table {WIDTH_OF_RECORD} wide,",
        f"page {data['benchmark']['page_size']}, D={data['benchmark']['draft']}; us, median of interleaved rounds;",
        "floor: the live prefixes' bytes at the copy bandwidth of the same run.",
    ]
    if stale(data):
        head.append("Measured on an earlier revision of the patch: to be measured again.")
    lines = [f"{'mode':<11}{'bs':>4} {'lengths':<16}{'shipped':>8}{'host max':>9}{'patched':>8}{'floor':>7}"]
    for mode, bs, profile in TABLE_ROWS:
        r = rows.get((mode, bs, WIDTH_OF_RECORD, profile))
        if r is None:
            continue

        def us(impl):
            value = r.get(f"{impl}/graph_us")
            return "-" if value is None else f"{value:.1f}"

        lines.append(f"{MODE_SHORT[mode]:<11}{bs:>4} {PROFILE_NAMES[profile]:<16}{us('upstream_as_shipped'):>8}"
                     f"{us('upstream_host_max'):>9}{us('ours'):>8}{r['floor_us']:>7.1f}")
    head.append("shipped: upstream as it ships; host max: upstream given the batch's")
    head.append("max length, a host read it cannot make in a graph.")
    return "\n".join(head + [""] + [" " + line for line in lines])


# -- what the release's row backs ------------------------------------------------------------------------


def claims(version: str, row: dict | None, record: tuple[Path, dict] | None) -> list[str]:
    """The letter's sentences about `version`, each backed by its matrix row (or the run of record)."""
    if not row or row.get("error") or not row.get("cells"):
        return [f"No executed result for sglang {version} backs a claim here: regenerate it with "
                f"python -m harness.upstream --track fused --version {version} --write reports/upstream."]
    cells = row["cells"]
    out = []
    if all(c["applies"] and c["compiles"] for c in cells):
        out.append(f"Applied to {row['module']} as sglang {version} ships it, every patch compiles "
                   "and its kernels run under Triton's interpreter.")
    if row["lint"] and not row["lint"]["added"]:
        out.append("The series adds no black, isort or ruff finding.")
    if row["lint"] and row["lint"]["upstream"]:
        out.append("Left as is, upstream's own: " + "; ".join(map(ex.short_finding, row["lint"]["upstream"])) + ".")
    last = cells[-1]
    if last["cases"] and last["equal"] == last["cases"] and last["failure"] is None:
        out.append(f"CPU: sglang {version}'s own kernels and the patched ones agree on upstream's "
                   f"contract in {last['equal']}/{last['cases']} cases (all three modes, page 1 and 64, "
                   "bs 0, a width past 2^20), and the patched ones write nothing past a row's live prefix.")
    sites = row.get("callers") or []
    if sites and all(s["ok"] for s in sites):
        out.append(f"Every call of the three functions in sglang {version}'s attention code "
                   f"({len(sites)} call sites) binds to the patched signatures.")
    if record is not None and not stale(record[1]):  # a run of an earlier kernel backs nothing here
        data = record[1]
        mine, patched = data["equality"].get(version), data["equality"].get("patched")
        if mine and patched and not mine["failures"] and not patched["failures"]:
            out.append(f"GPU ({data['card']}): sglang {version}'s kernels and the patched ones, compiled, "
                       f"each equal the eager reference in {mine['cases']} cases.")
    if row.get("kpool"):
        k = row["kpool"]
        out.append(f"Not changed: with {k['when']}, calls go to upstream's KPool kernels in "
                   f"{k['module'].removeprefix('python/')}, which this series does not port.")
    return out


def tested(version: str, cell: dict | None) -> list[str]:
    """The `Tested:` field of one patch's header, from its cell of the release's row."""
    if not cell:
        return []
    text = f"sglang {version}, CPU (Triton interpreter): "
    text += "applies, compiles" if cell["applies"] and cell["compiles"] else "FAILED to apply or compile"
    text += "; lint clean" if not cell["lint"] else f"; {len(cell['lint'])} lint findings added"
    text += (f"; {cell['equal']}/{cell['cases']} cases equal to upstream's kernels on its contract, "
             f"whole buffers against the reference; {cell['callers']}/{cell['call_sites']} call sites bind")
    if cell["failure"]:
        text += f"; FAILED: {cell['failure']}"
    return ex._field("Tested", text + ".")


RISK = (
    "Each page-table row is written over its live prefix only; past it a row keeps "
    "stale values across replays, which every consumer must bound by cache_seqlens.",
    "Recording these launches into DSA's CUDA graph is not part of this series: the "
    "replay reads the kernel's outputs after it (the paged-MQA schedule and the top-k plan), "
    "so a recorded design would have to record those readers after the launch too, or "
    "compute them on the device from the same buffers. Earlier attempts upstream: #38852, "
    "#38858, #32010.",
    "On SM100, DeepGEMM's paged-MQA logits and the CuteDSL indexer load real_page_table "
    "entries in pairs, one pair per 128 tokens, so a row with an odd number of live pages "
    "loads one entry past them. It feeds only logits at positions past the row's length, "
    "which no top-k selects. sglang's kernel writes that entry; this one leaves what it "
    "held (a page id of an earlier replay, 0, or, in the MTP draft-decode staging buffers, "
    "uninitialized memory), which the kernel uses as a TMA tile coordinate. Not run on "
    "SM100 here. Writing each real_page_table row to an even page count would close it at "
    "the cost of one write past the live prefix.",
)


def risk(version: str) -> list[str]:
    first = RISK[0]
    sentence = consumers_sentence(version)
    if sentence:  # no contract in this release's docstring: what its consumers were shown to do
        first = f"{first} sglang {version}'s docstring states no such contract. {sentence}"
    else:
        first = f"{first.rstrip('.')}, as the docstring's contract says."
    return [first, *RISK[1:]]


def _wrap(items: list[str]) -> str:
    return "\n".join(textwrap.fill(c, ex.WIDTH, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)
                     for c in items)


# -- the mails ----------------------------------------------------------------------------------------


def _header(patch: Path) -> tuple[str, str, str]:
    """A fused patch's DEP-3 header -> (subject: the Description's synopsis, Last-Update, the header
    as the mail's body, its Description refolded at a mail's width)."""
    header = patch.read_text().split("\n---\n", 1)[0].strip("\n").splitlines()
    synopsis = header[0].removeprefix("Description:").strip()
    last_update = next((line.split(":", 1)[1].strip() for line in header if line.startswith("Last-Update:")), "")
    end = next(i for i, line in enumerate(header) if i and not line.startswith(" "))
    paragraphs = " ".join(line.strip() for line in header[1:end]).split(" . ")
    description = [f"Description: {synopsis}"]
    for i, paragraph in enumerate(paragraphs):
        description += [" ."] if i else []
        description += textwrap.wrap(paragraph.strip(), ex.WIDTH, initial_indent=" ", subsequent_indent=" ",
                                     break_on_hyphens=False, break_long_words=False)
    return synopsis or patch.stem, last_update, "\n".join(description + header[end:])


def export_release(version: str, folder: Path, row: dict | None) -> list[str]:
    """Write the release's mails into `folder`; returns the series (file names in order)."""
    import git

    consumers_sentence(version)  # refuses before anything is written
    path = upstream_fused.module_path(version)
    texts = upstream_fused.derived_sources(version)
    record = run_of_record()
    cells = {c["patch"]: c for c in (row or {}).get("cells", ())}
    names = []
    with git.Repo.init(folder.parent / f".repo-{version}") as repo:
        repo.git.update_environment(**ex.GIT_ENV)
        target = Path(repo.working_tree_dir) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(texts[0])
        repo.git.add(path)
        repo.git.commit("-q", "-m", f"sglang {version}")
        base = repo.head.commit.hexsha
        for patch, after in zip(track.series(), texts[1:]):
            subject, last_update, body = _header(patch)
            body = ex.with_tested(body, tested(version, cells.get(patch.name)))
            date = f"{last_update}T12:00:00+00:00" if last_update else ex.GIT_ENV["GIT_AUTHOR_DATE"]
            target.write_text(after)
            repo.git.add(path)
            with repo.git.custom_environment(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date):
                repo.git.commit("-q", "-m", f"{subject}\n\n{body}\n")
            names.append(patch.name)
        written = repo.git.format_patch("--numbered", "--zero-commit", "--no-signature", "--stat",
                                        "-o", str(folder), f"{base}..HEAD").splitlines()
        for written_path, name in zip(written, names):
            Path(written_path).rename(folder / name)
        stat = repo.git.diff("--stat=72", f"{base}..HEAD")
        shortlog = [f"{ex.AUTHOR.split(' <')[0]} ({len(names)}):"] + [f"  {_header(p)[0]}" for p in track.series()]
    subject_line, _, text = TEMPLATE.read_text().partition("\n\n")
    body = string.Template(text).substitute(
        version=version,
        table=table(record),
        claims=_wrap(claims(version, row, record)),
        risk=_wrap(risk(version)),
        shortlog="\n".join(shortlog),
        diffstat=stat.strip("\n"),
        base_commit=f"v{version}",
        harness=ex.HARNESS,
    ).strip("\n")
    subject = subject_line.removeprefix("Subject:").strip()
    (folder / ex.COVER).write_text(
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        f"From: {ex.AUTHOR}\nDate: Wed, 02 Dec 2026 12:00:00 +0000\n"
        f"Subject: [PATCH {ex.numbered(0, len(names))}] {subject}\n\n{body}\n"
    )
    (folder / "series").write_text("".join(f"{n}\n" for n in names))
    return names


def load_rows(matrix: Path) -> dict[str, dict]:
    if not matrix.exists():
        return {}
    return {r["version"]: r for r in json.loads(matrix.read_text()).get("fused", {}).get("releases", ())}
