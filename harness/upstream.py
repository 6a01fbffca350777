"""`make upstream-check`: the series on the REAL nsa_backend.py of every release in patches/releases.toml.

For the reference release (0.5.6) it first checks that the stub's pinned regions are upstream's
bytes (vendor_stub/UPSTREAM_PIN.toml). Then, per release: the series is derived (harness.releases:
clean / 3-way / resolved), every prefix of it byte-compiles, and the release's real file runs its
CUDA-graph metadata methods (__init__, init_cuda_graph_state, capture, replay) over the harness
scenario matrix, unpatched and with each prefix applied (harness.upstream_exec), compared on whole
buffers after every replay exactly as the stub's stages are (harness.compare). The unpatched real
file is also compared against the stub's baseline: does the stub reproduce this release?
Each prefix's cuda_graph_runner.py runs around the same prefix's real backend (records, declines
and why); per mode, the whole series' replay is counted (fused or not); and harness/lint.py splits
the patched files' findings into upstream's own and the series' (none). harness.export writes each
release's cover letter and header claims from exactly these fields of matrix.json.

    python -m harness.upstream [--track 0.5.6|fused] [--version V ...] [--scenarios N] [--json] [--trace] [--write DIR]

A version picks its track (harness.tracks); the fused track's releases run in harness.upstream_fused.
write_report is the one writer of DIR/matrix.json and DIR/MATRIX.md: each run merges its own track.

Wheels are cached outside the repo (NSA_UPSTREAM_CACHE, default ~/.cache/nsa-verify-patches); no
upstream file enters the repo.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .lint import new_findings
from .series import PATCH_DIR, REPO_ROOT, STUB_DIR, Series, SeriesError
from .releases import Derivation, ReleaseError, wheel_file

if TYPE_CHECKING:  # counters imports torch: the CLI sets the interpreter up first
    from .counters import ReplayCounts

PIN = REPO_ROOT / STUB_DIR / "UPSTREAM_PIN.toml"
STUB_COLUMN = "stub"  # the column comparing the unpatched real file with the stub's baseline


def pin() -> dict:
    return tomllib.loads(PIN.read_text())


def pinned_regions(series: Series) -> tuple[list[str], list[str]]:
    """The stub's pinned regions against the reference wheel: (report lines, problems).

    Every pinned file: nsa_backend.py (the pin's top level) and each [[file]] (its own regions).
    """
    p = pin()
    out, problems = [], []
    files = [{"stub": "nsa_backend.py", "path": p["path"], "region": p["region"]}, *p.get("file", ())]
    for pinned in files:
        upstream = wheel_file(p["version"], pinned["path"])
        baseline_stub = series.baseline[f"{STUB_DIR}/{pinned['stub']}"]  # the committed stub is what is pinned
        lines = upstream.splitlines(keepends=True)
        out.append(f"pinned regions: {p['package']}=={p['version']} {pinned['path']} ({len(lines)} lines)")
        for region in pinned["region"]:
            start, end = region["lines"]
            text = b"".join(lines[start - 1 : end])
            ok = hashlib.sha256(text).hexdigest() == region["sha256"] and baseline_stub.count(text) == 1
            out.append(f"  {'identical' if ok else 'DIFFERS':>9}  lines {start}-{end}  {region['name']}")
            if not ok:
                problems.append(
                    f"pinned region {region['name']} (lines {start}-{end} of {pinned['path']}) differs from {p['version']}"
                )
    return out, problems


@dataclass
class Cell:
    """One release x patch (or x the stub): how the patch got there and what running it gave."""

    patch: str
    how: str = ""  # clean / 3-way / resolved ("" for the stub column)
    compiles: bool = True
    lint: list[str] = field(default_factory=list)  # findings the series adds (harness/lint.py)
    exact: int = 0  # scenarios bit-exact against the release's unpatched real file
    scenarios: int = 0
    failure: str | None = None  # the first: "scenario replay r: buffer[index]: expected, got", or an error
    records: bool = False  # the release's graph runner records its own backend's metadata (RECORDING)
    declines: str | None = None  # the runner offers the capture, the backend's recorder declines: why
    fused: list[str] = field(default_factory=list)  # modes whose replay is one Triton launch at this prefix

    @property
    def ok(self) -> bool:
        return self.compiles and not self.lint and self.failure is None and self.exact == self.scenarios

    def describe(self) -> str:
        parts = [self.how] if self.how else []
        if not self.compiles:
            return " / ".join(parts + ["does not compile"])
        if self.how:
            parts.append("compiles")
            parts.append(f"lint: {len(self.lint)} new" if self.lint else "lint clean")
        if self.records:
            parts.append("records")
        elif self.declines:
            parts.append("declines to record")
        return " / ".join(parts + [f"{self.exact}/{self.scenarios}"])


@dataclass
class ReleaseResult:
    version: str
    cells: list[Cell] = field(default_factory=list)
    # The unpatched real file against the stub's baseline: informational (does the stub still
    # reproduce this release?), not a verdict on the series.
    stub: Cell = field(default_factory=lambda: Cell(STUB_COLUMN))
    error: str | None = None  # derivation or loading failed: nothing ran
    code_path: dict[str, list[str]] = field(default_factory=dict)  # mode -> functions run (--trace)
    # Per mode, what the whole series does on this release's real files (runner_report): what the
    # cover letter and the headers of its export may claim, and nothing else.
    runner: dict[str, dict] = field(default_factory=dict)
    # harness/lint.py on the files the series touches, unpatched and patched (lint_report).
    lint: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.cells)


def _compiles(files: dict[str, bytes]) -> str | None:
    for path, data in sorted(files.items()):
        if path.endswith(".py"):
            try:
                compile(data, path, "exec", dont_inherit=True)
            except SyntaxError as e:
                return f"{path}:{e.lineno}: {e.msg}"
    return None


# What the patched graph runner does for one captured bs, executed from the release's real file
# (harness.upstream_exec.run_graph_runner): the backend's metadata capture, then the recorder before
# forward in each of the two warm-up runs and in the captured run; replay_prepare then does not call
# the backend's replay ("replay call" is absent) and launches nothing.
RECORDING = [
    "capture",
    "record", "forward",
    "record", "forward",
    "captured record", "captured forward",
    "replay: 0 launches",
]


def _declined_because(backend, bs: int, forward_mode) -> str:
    """Why the backend's recorder left a captured bs to the replay call, read off what it captured.

    The recorder's own conditions (patch 0005's record_forward_metadata_cuda_graph), in its order:
    a mode without a fused launch, flashmla_kv's host-computed metadata, a DeepGEMM schedule."""
    launches = getattr(backend, "_fused_launches", None)
    if launches is not None and launches(forward_mode).get(bs) is None:
        return "this release's replay of the mode is not fused"
    metadata = backend.decode_cuda_graph_metadata[bs]
    if getattr(metadata, "flashmla_metadata", None) is not None:
        return "flashmla_kv computes its metadata on the host in the replay call"
    if hasattr(metadata, "paged_mqa_schedule_metadata"):
        return "on CUDA its replay call refreshes DeepGEMM's paged-MQA schedule from the lengths"
    return "unknown"


def runner_verdict(tree: dict[str, bytes], module, scenario) -> dict:
    """The release's patched cuda_graph_runner.py in `tree` run around `module`, the same tree's
    real backend: {"records", "declines" (why, or None), "problem", "events"}.

    records: RECORDING exactly. declines: the runner calls the recorder in all three runs, the
    recorder records nothing, and replay_prepare then makes the replay call as before (the backend
    keeps launching eagerly). Anything else where the recorder ran is a problem."""
    from .cuda_graph import recorder
    from .releases import REPO_PREFIX, UPSTREAM_FILES
    from .upstream_exec import run_graph_runner

    path = module.names.path(REPO_PREFIX + UPSTREAM_FILES[f"{STUB_DIR}/cuda_graph_runner.py"])
    runner = scenario.runner(module)
    runner.prepare(next(iter(scenario.batches())))  # static inputs a replay call accepts (a declined recorder's)
    backend = runner.backend
    bs = runner.capture_bs[-1]

    def record(bs, forward_mode, capturing):
        recorder(backend, capturing)(bs, forward_mode)

    events = run_graph_runner(tree[path].decode(), path, runner, bs, record)
    out = {"records": events == RECORDING, "declines": None, "problem": None, "events": events}
    offered = [e for e in events if e.endswith("record")]
    if out["records"] or not offered:
        return out
    recorded = getattr(backend, "recorded_forward_metadata_cuda_graph", set())
    if len(offered) == 3 and "replay call" in events and (bs, runner.forward_mode) not in recorded:
        out["declines"] = _declined_because(backend, bs, runner.forward_mode)
    else:
        out["problem"] = f"graph runner: records, but runs {', '.join(events)}"
    return out


def graph_runner_verdict(tree: dict[str, bytes], module, scenario) -> tuple[bool, str | None]:
    """(records, problem): runner_verdict in short; a declining recorder is no problem."""
    verdict = runner_verdict(tree, module, scenario)
    return verdict["records"], verdict["problem"]


def mode_counts(module, scenarios) -> dict[str, "ReplayCounts"]:
    """Per mode (its first scenario, captured at its smallest bs only: what a replay launches does
    not depend on bs, and one capture is cheap), the counts of one steady-state replay."""
    from dataclasses import replace

    from .counters import count_replay

    out = {}
    for scenario in scenarios:
        if scenario.mode in out:
            continue
        scenario = replace(scenario, capture_bs=scenario.capture_bs[:1])
        runner = scenario.runner(module)
        batch = next(iter(scenario.batches()))
        runner.replay(batch)  # warm-up: JIT and caches stay out of the count
        runner.prepare(batch)
        with count_replay([runner.seq_lens_cpu]) as counts:
            runner.replay_metadata(runner.capture_bs[-1])
        out[scenario.mode] = counts
    return out


def is_fused(counts) -> bool:
    """One Triton launch and no aten kernel on the device: the series' fused replay."""
    return counts.device_kernels == 0 and counts.triton_launches == 1


def runner_report(tree: dict[str, bytes], module, scenarios) -> dict[str, dict]:
    """Per mode (its first scenario), the whole series on the release's real files: the eager
    replay's counts (fused: no aten kernel on the device, one Triton launch) and what the patched
    runner does around the real backend (records, or declines and why)."""
    out: dict[str, dict] = {}
    for mode, counts in mode_counts(module, scenarios).items():
        scenario = next(s for s in scenarios if s.mode == mode)
        verdict = runner_verdict(tree, module, scenario)
        out[mode] = {
            "fused": is_fused(counts),
            "device_kernels": counts.device_kernels,
            "triton_launches": counts.triton_launches,
            "host_ops": counts.host_ops,
            "records": verdict["records"],
            "declines": verdict["declines"],
            "problem": verdict["problem"],
        }
    return out


def lint_report(before: dict[str, bytes], after: dict[str, bytes]) -> dict[str, list[str]]:
    """harness/lint.py on the files the series touches: every finding of the patched files, those
    the unpatched files already have (upstream's own), and those the series adds (none is the rule)."""
    from .lint import findings

    touched = {p: data for p, data in after.items() if before.get(p) != data}
    patched = findings(touched)
    upstream = findings({p: before[p] for p in touched if p in before})
    return {
        "files": sorted(p for p in touched if p.endswith(".py")),
        "patched": sorted(map(str, patched)),
        "upstream": sorted(map(str, patched & upstream)),
        "added": sorted(map(str, patched - upstream)),
    }


def run_release(derivation: Derivation, version: str, scenarios, stub, trace: bool = False, step=None) -> ReleaseResult:
    """Derive, compile, load and replay one release; every scenario on every prefix in lockstep.

    step(version, what): called as each part starts (a line of progress: a release takes minutes)."""
    step = step or (lambda version, what: None)
    from .upstream_exec import StandinError, load_release
    from .verify import compare_lockstep

    result = ReleaseResult(version)
    step(version, "deriving the series")
    try:
        release = derivation.table.release(version)
        applied = derivation.derive(version)
    except ReleaseError as e:
        result.error = str(e)
        return result
    result.cells = [Cell(a.patch, a.how) for a in applied]
    compared = result.cells + [result.stub]
    trees = [derivation.files(derivation.base_commit(version))] + [derivation.files(a.commit) for a in applied]
    step(version, f"lint, compile and import {len(trees)} files (unpatched and each prefix)")
    for cell, tree in zip(result.cells, trees[1:]):
        cell.lint = [str(f) for f in new_findings(trees[0], tree)]
    modules = []
    for label, tree, cell in zip(["unpatched"] + [a.patch for a in applied], trees, [None] + compared):
        problem = _compiles(tree)
        if problem:
            if cell is None:
                result.error = f"sglang {version}'s unpatched file does not compile: {problem}"
                return result
            cell.compiles, cell.failure = False, problem
            modules.append(None)
            continue
        try:
            modules.append(load_release(version, tree, stub, release.model_runner, label.split("-")[0]))
        except (StandinError, ImportError) as e:
            if cell is None:
                result.error = f"sglang {version}: importing the real file failed: {e}"
                return result
            cell.failure = f"import: {e}"
            modules.append(None)
    reference, peers = modules[0], modules[1:] + [stub]

    for i, scenario in enumerate(scenarios, 1):
        step(version, f"scenario {i}/{len(scenarios)} {scenario.name}")
        live = {cell.patch: module for cell, module in zip(compared, peers) if module is not None and not cell.failure}
        try:
            verdicts = compare_lockstep(reference, live, scenario)
        except Exception as e:  # the unpatched real file itself: nothing to compare against
            result.error = f"sglang {version} unpatched, {scenario.name}: {type(e).__name__}: {e}"
            return result
        for cell in compared:
            if cell.patch in verdicts:
                cell.scenarios += 1
                verdict = verdicts[cell.patch]
                if verdict.exact:
                    cell.exact += 1
                else:
                    cell.failure = f"{scenario.name} {verdict.describe()}"
    # After the scenarios: a runner that cannot record does not hide the cell's bit-exactness. Each
    # prefix's runner file runs around the same prefix's REAL backend, as sglang would run them.
    for cell, tree, module in zip(result.cells, trees[1:], modules[1:]):
        if module is not None and not cell.failure:
            try:
                cell.fused = [mode for mode, counts in mode_counts(module, scenarios).items() if is_fused(counts)]
                verdict = runner_verdict(tree, module, scenarios[0])
                cell.records, cell.declines, cell.failure = verdict["records"], verdict["declines"], verdict["problem"]
            except Exception as e:  # the runner's code could not be cut out or run: say so in the cell
                cell.failure = f"graph runner: {type(e).__name__}: {e}"
    if result.cells and modules[-1] is not None and not result.cells[-1].failure:
        try:
            result.runner = runner_report(trees[-1], modules[-1], scenarios)
            problems = [f"{mode}: {m['problem']}" for mode, m in result.runner.items() if m["problem"]]
            result.cells[-1].failure = "; ".join(problems) or None
        except Exception as e:
            result.cells[-1].failure = f"graph runner: {type(e).__name__}: {e}"
    if result.runner:  # the speculative step's draft-extend and draft runners too (harness.spec_runners)
        from .spec_runners import record_in_row

        problem = record_in_row(result.runner, (trees[0], modules[0]), (trees[-1], modules[-1]))
        result.cells[-1].failure = result.cells[-1].failure or problem
    result.lint = lint_report(trees[0], trees[-1])
    if trace:
        result.code_path = trace_code_path(reference, scenarios)
    return result


def trace_code_path(module, scenarios) -> dict[str, list[str]]:
    """Per mode, the functions of the real file and of the wheel's own code that one scenario runs."""
    from .upstream_exec import BUILD

    roots = (str(BUILD), ".whl!")
    out: dict[str, list[str]] = {}
    for scenario in scenarios:
        if scenario.mode in out:
            continue
        seen: dict[str, None] = {}

        def profile(frame, event, arg):
            if event == "call" and any(r in frame.f_code.co_filename for r in roots):
                where = frame.f_code.co_filename.split(".whl!")[-1].split("/build/upstream/")[-1]
                seen.setdefault(f"{Path(where).name}:{frame.f_code.co_qualname}", None)

        sys.setprofile(profile)
        try:
            runner = scenario.runner(module)
            for batch in scenario.batches():
                runner.replay(batch)
        finally:
            sys.setprofile(None)
        out[scenario.mode] = list(seen)
    return out


def run_matrix(versions=None, scenarios=None, trace: bool = False, progress=None, step=None) -> dict:
    """The whole check: pinned regions, then every release x patch. JSON-ready.

    progress(result) after each release, step(version, what) as each part of one starts."""
    from . import stages
    from .scenarios import matrix

    series = Series()
    lines, problems = pinned_regions(series)
    scenarios = matrix() if scenarios is None else scenarios
    stub = stages.load("baseline", series)
    results = []
    with Derivation(series) as derivation:
        for version in versions or ():
            derivation.table.release(version)  # an unknown or replaced version stops here, with why
        for version in versions or derivation.table.versions:
            result = run_release(derivation, version, scenarios, stub, trace, step)
            results.append(result)
            if progress:
                progress(result)
    releases = [asdict(r) for r in results]
    problems += release_problems(releases)
    return {
        "ok": not problems,
        "problems": problems,
        "pinned_regions": lines,
        "patches": series.patch_files,
        "series_digest": series_digest(series),
        "scenarios": [s.name for s in scenarios],
        "releases": releases,
        "tools": tool_versions(),
    }


def series_digest(series: Series) -> str:
    """Which series a row ran: its patches' changes, hashed (harness.fingerprint: prose and git's
    positions change no verdict)."""
    from .fingerprint import series_hash

    return series_hash(series.root / PATCH_DIR, series.patch_files)


def release_problems(rows: list[dict]) -> list[str]:
    """The problems of the 0.5.6 track's release rows (matrix.json's form): errors, failures, lint."""
    problems = [r["error"] for r in rows if r["error"]]
    problems += [f"sglang {r['version']} {c['patch']}: {c['failure']}" for r in rows for c in r["cells"] if c["failure"]]
    return problems + [f"sglang {r['version']} {c['patch']}: lint: {f}" for r in rows for c in r["cells"] for f in c["lint"]]


def tool_versions() -> dict:
    import git
    import torch
    import triton

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "triton": triton.__version__,
        "git": ".".join(map(str, git.Git().version_info)),
        "gitpython": git.__version__,
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
    }


def table(report: dict) -> list[str]:
    """release x patch: applies (clean / 3-way / resolved), compiles, bit-exact n/m scenarios."""
    patches = [p.split("-")[0] for p in report["patches"]]
    head = ["release", *patches, "stub baseline = real (unpatched)"]
    rows = [head, ["---"] * len(head)]
    for r in report["releases"]:
        if r["error"]:
            rows.append([r["version"], f"ERROR: {r['error']}"] + [""] * (len(head) - 2))
            continue
        cells = [Cell(**c) for c in r["cells"]]
        stub = Cell(**r["stub"])
        rows.append(
            [r["version"]]
            + [c.describe() + ("" if c.ok else " FAIL") for c in cells]
            + [stub.describe() if stub.ok else f"no: {stub.failure}"]
        )
    return ["| " + " | ".join(row) + " |" for row in rows]


def upstream_check(versions=None, scenarios=None) -> dict:
    """What `python -m harness upstream-check` prints for the 0.5.6 track: the report with its lines."""
    report = run_matrix(versions, scenarios)
    report["lines"] = report["pinned_regions"] + table(report) + (
        ["upstream-check: OK"] if report["ok"] else ["upstream-check: FAILED: " + "; ".join(report["problems"])]
    )
    return report


def merged(folder: Path, stub_part: dict | None = None, fused_part: dict | None = None) -> dict:
    """DIR/matrix.json with one track's rows replaced release by release (a run of some releases
    keeps the others' rows, so either track's run can be redone one release at a time): the 0.5.6
    track's keys at the top level, as harness.export reads them, its ok/problems recomputed over
    every row it now holds; the fused track's under "fused"."""
    from . import upstream_fused

    path = folder / "matrix.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    if stub_part is not None:  # release by release: a run of some releases keeps the others' rows
        report = {**merged_stub(report, stub_part), **({"fused": report["fused"]} if "fused" in report else {})}
    if fused_part is not None:
        old = {r["version"]: r for r in report.get("fused", {}).get("releases", ())}
        old.update({r["version"]: r for r in fused_part["releases"]})
        order = {v: i for i, v in enumerate(all_releases())}
        rows = sorted(old.values(), key=lambda r: order.get(r["version"], len(order)))
        report["fused"] = {**fused_part, "releases": rows, **upstream_fused.verdict(rows)}
    # Every release since 0.5.5 and the track serving it: the one table's first columns.
    report["tracks"] = {version: track_of(version) for version in all_releases()}
    return report


def merged_stub(old: dict, new: dict) -> dict:
    """The 0.5.6 track's part after a run of some of its releases: their rows replace the old ones,
    and the old rows of the other releases stay where they measured the same series on the same
    scenarios (else they are dropped: a row of another series is not a verdict on this one)."""
    same = all(old.get(k) == new[k] for k in ("patches", "series_digest", "scenarios"))
    rows = {r["version"]: r for r in (old.get("releases", ()) if same else ())}
    rows.update({r["version"]: r for r in new["releases"]})
    order = {v: i for i, v in enumerate(all_releases())}
    releases = sorted(rows.values(), key=lambda r: order.get(r["version"], len(order)))
    own = release_problems(new["releases"])
    problems = [p for p in new["problems"] if p not in own] + release_problems(releases)  # pinned regions', rows
    return {**new, "releases": releases, "problems": problems, "ok": not problems}


def all_releases() -> tuple[str, ...]:
    from .tracks import all_releases as releases

    return releases()


def track_of(version: str) -> str:
    """The name of the track serving `version`."""
    from .tracks import track_for_version

    return track_for_version(version).name


def _stub_rows(report: dict) -> list[list[str]]:
    """The 0.5.6 track's cells, a row per release x patch."""
    rows = []
    for r in report.get("releases", ()):
        if r["error"]:
            rows.append([r["version"], "0.5.6", "-", "ERROR", "", "", r["error"]])
            continue
        for c in r["cells"]:
            cell = Cell(**c)
            verdict = f"{cell.exact}/{cell.scenarios} scenarios bit-exact"
            if cell.records:
                verdict += ", records"
            elif cell.declines:
                verdict += ", declines to record"
            if not cell.ok:
                verdict += f" FAIL: {cell.failure or 'lint'}"
            rows.append([r["version"], "0.5.6", cell.patch.split("-")[0], cell.how,
                         "yes" if cell.compiles else "no", f"{len(cell.lint)} new" if cell.lint else "clean", verdict])
    return rows


def _fused_rows(part: dict) -> list[list[str]]:
    from . import upstream_fused

    rows = []
    for r in part.get("releases", ()):
        if r["error"]:
            rows.append([r["version"], "fused", "-", "ERROR", "", "", r["error"]])
            continue
        for c in r["cells"]:
            verdict = (f"{c['equal']}/{c['cases']} cases equal on upstream's contract; "
                       f"callers {c['callers']}/{c['call_sites']} bind")
            if r.get("kpool"):
                calls = r["kpool"].get("calls")
                verdict += (f"; KPool fusion on: {len(calls)}/{len(r['callers'])} calls reach upstream's KPool kernels "
                            "(not ported)" if calls is not None else "; KPool kernels not ported")
            if not upstream_fused.cell_ok(c):
                verdict += f" FAIL: {c['failure'] or 'lint'}"
            rows.append([r["version"], "fused", c["patch"].split("-")[0], "yes" if c["applies"] else "no",
                         "yes" if c["compiles"] else "no", f"{len(c['lint'])} new" if c["lint"] else "clean", verdict])
    return rows


def all_releases_table(report: dict) -> list[str]:
    """ONE table of every release since 0.5.5: the track serving it, then per patch applies /
    compiles / lint / verdict (a release not yet run says so)."""
    head = ["release", "track", "patch", "applies", "compiles", "lint", "verdict"]
    by_version: dict[str, list[list[str]]] = {}
    for row in _stub_rows(report) + _fused_rows(report.get("fused", {})):
        by_version.setdefault(row[0], []).append(row)
    rows = [head, ["---"] * len(head)]
    for version in all_releases():
        name = track_of(version)
        rows += by_version.get(version) or [[version, name, "-", "-", "-", "-", "not run: " + rerun_command(name, version)]]
    return ["| " + " | ".join(row) + " |" for row in rows]


def rerun_command(track_name: str, version: str) -> str:
    flag = "--track fused " if track_name == "fused" else "--trace "
    return f"`python -m harness.upstream {flag}--version {version} --write reports/upstream`"


def fused_section(part: dict) -> list[str]:
    from . import upstream_fused

    if not part:
        return ["", "## The fused track", "", "Not run yet: `python -m harness.upstream --track fused --write reports/upstream`."]
    tools = part.get("tools", {})
    md = [
        "", "## The fused track (sglang 0.5.15 - 0.5.23)", "",
        "Generated by `python -m harness.upstream --track fused --write reports/upstream` (harness/upstream_fused.py).",
        f"Tools: python {tools.get('python')}, torch {tools.get('torch')}, triton {tools.get('triton')} "
        f"(TRITON_INTERPRET={tools.get('triton_interpret') or 'unset'}), git {tools.get('git')}.",
        "",
        "applies: the patch as exported for the release (the diff from its own module to the patched base under",
        "its names, at its module path) passes `git apply --check` on a tree holding the release's real module from",
        "its wheel. compiles: `py_compile`, import, and the kernels run through Triton's interpreter. lint: black 88,",
        "isort --profile black, ruff on the derived file, split into upstream's own and added (below). equal:",
        "upstream's kernels from the wheel and the derived module, run on the same inputs: upstream equal to the",
        "eager reference on its contract, the derived module equal to it on every buffer whole, and the two equal",
        "on the contract (fused/cases.py). callers: every call of the three functions in the release's own",
        "sglang/srt/layers/attention code binds to the derived signatures (executed: `inspect.Signature.bind`).",
        "",
        f"{len(part.get('cases', ()))} cases: " + ", ".join(f"`{c}`" for c in part.get("cases", ())) + ".",
        "",
        "fused upstream-check: " + ("OK" if part.get("ok") else "FAILED: " + "; ".join(part.get("problems", ()))),
        "",
        "| release | module | call sites (bound / all) | KPool |",
        "| --- | --- | --- | --- |",
    ]
    for r in part.get("releases", ()):
        if r["error"]:
            md.append(f"| {r['version']} | ERROR: {r['error']} | | |")
            continue
        sites = r["callers"]
        where = ", ".join(sorted({s["where"].rsplit("/", 1)[-1].split(":")[0] for s in sites}))
        md.append(f"| {r['version']} | `{r['module']}` | {sum(s['ok'] for s in sites)}/{len(sites)} ({where}) "
                  f"| {upstream_fused.kpool_line(r)} |")
    md += ["", "Lint on the derived files:", ""]
    for r in part.get("releases", ()):
        lint = r.get("lint") or {}
        if lint:
            md.append(f"- {r['version']}: added by the series: {'; '.join(lint['added']) or 'none'}; "
                      f"upstream's own: {'; '.join(lint['upstream']) or 'none'}")
    return md


def write_report(report: dict, folder: Path) -> None:
    """matrix.json and MATRIX.md: the one table of every release, then each track in detail."""
    from .releases import RESOLUTIONS, Table

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "matrix.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        "# The series on every sglang release's real files",
        "",
        "Generated by `make upstream-report` (do not edit): the 0.5.6 track by `python -m harness.upstream",
        "--track 0.5.6 --trace --write reports/upstream`, the fused track by `python -m harness.upstream",
        "--track fused --write reports/upstream`; each run replaces its own track's rows of matrix.json.",
        "",
        f"Every release from {all_releases()[0]} on, the track that serves it (harness/tracks.py) and, per patch:",
        "how it applies, that it compiles, what it adds to sglang's lint, and what running it showed. Each",
        "track's section below says how each cell is executed.",
        "",
        *all_releases_table(report),
    ]
    md += stub_section(report, RESOLUTIONS, Table) if report.get("releases") is not None else []
    md += fused_section(report.get("fused", {}))
    (folder / "MATRIX.md").write_text("\n".join(md) + "\n")


def stub_section(report: dict, RESOLUTIONS, Table) -> list[str]:
    """The 0.5.6 track in detail: its own table, pinned regions, releases, resolutions, modes, lint."""
    from .tracks import STUB

    table_data = Table.load()
    tools = report["tools"]
    md = [
        "",
        f"## The 0.5.6 track (sglang {STUB.span()})",
        "",
        f"Tools: python {tools['python']}, torch {tools['torch']}, triton {tools['triton']} "
        f"(TRITON_INTERPRET={tools['triton_interpret'] or 'unset'}), git {tools['git']}, GitPython {tools['gitpython']}.",
        "",
        "Cell: how the canonical patch reached the release (clean = `git apply` as is; 3-way = cherry-pick;",
        "resolved = cherry-pick plus a reviewed hand resolution from patches/releases/), that every file",
        "byte-compiles, that the series adds no finding of sglang's pre-commit lint (black 88, isort",
        "--profile black, ruff pyflakes; harness/lint.py) to what the release's own file has, and the scenarios whose whole buffers stayed bit-exact against the release's",
        f"unpatched real file after capture and every replay ({len(report['scenarios'])} scenarios:",
        "harness.scenarios.matrix()). records: the release's real cuda_graph_runner.py, its capture and replay",
        "code run against stand-ins around the same tree's REAL nsa_backend.py, calls the backend's recorder before",
        "forward in the two warm-up runs and the captured run, and replay_prepare then skips the backend's replay",
        "call and launches nothing (harness.upstream.RECORDING). declines to record: the runner calls the recorder,",
        "the backend records nothing and replay_prepare makes its replay call as before (why: below).",
        "Last column: the stub's baseline against the unpatched real file.",
        "",
        *table(report),
        "",
        "upstream-check: " + ("OK" if report["ok"] else "FAILED: " + "; ".join(report["problems"])),
        "",
        "### Pinned regions (0.5.6)",
        "",
        "```",
        *report["pinned_regions"],
        "```",
        "",
        "### Releases",
        "",
        "| release | what | status |",
        "| --- | --- | --- |",
        *[f"| {r.version} | {r.what} | {r.status} |" for r in table_data.releases],
        "",
        "### Hand resolutions",
        "",
    ]
    kinds = {"drop": "dropped", "resolution": "", "fixup": "fixup, "}  # patches/releases/<patch>.toml
    for path in sorted(RESOLUTIONS.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        for key, label in kinds.items():
            for r in data.get(key, ()):
                where = "" if key == "drop" else r["function"]
                md.append(f"- `{path.name[:-5]}` on {', '.join(r['releases'])} ({label}{where}): {' '.join(r['why'].split())}")
    md += ["", "### The whole series per mode (what each release's cover letter may claim)", "",
           "Backend in the graph: the release's real backend asked to record the mode's launch at capture. Graph",
           "runners: the release's real runners around it, recorded replays compared with baseline's on whole",
           "buffers: cuda_graph_runner.py (patch 0008; target verify, and plain decode), the speculative step's",
           "draft runner (0010; its decode steps) and draft-extend runner (0011); harness.spec_runners.",
           "",
           "| release | mode | fused (aten kernels / Triton launches per replay) | backend in the graph | graph runners |",
           "| --- | --- | --- | --- | --- |"]
    for r in report["releases"]:
        for mode, m in r.get("runner", {}).items():
            graph = "records" if m["records"] else f"declines: {m['declines']}" if m["declines"] else m["problem"] or "-"
            runners = [f"cuda_graph_runner: {graph}"] if mode in ("target_verify", "decode") else []
            runners += [f"{name}: {line}" for name, line in m.get("runners recording", {}).items()]
            runner = "; ".join(runners)
            md.append(f"| {r['version']} | {mode} | {'yes' if m['fused'] else 'no'} ({m['device_kernels']} / "
                      f"{m['triton_launches']}) | {graph} | {runner} |")
    md += ["", "### Lint on the patched files (harness/lint.py)", ""]
    for r in report["releases"]:
        lint = r.get("lint") or {}
        if lint:
            own = "; ".join(lint["upstream"]) or "none"
            md.append(f"- {r['version']}: added by the series: {'; '.join(lint['added']) or 'none'}; upstream's own: {own}")
    traced = [r for r in report["releases"] if r["code_path"]]
    if traced:
        md += ["", "### What runs (unpatched real file, one scenario per mode)", ""]
        for r in traced:
            md.append(f"- **{r['version']}**")
            for mode, functions in r["code_path"].items():
                md.append(f"  - {mode}: " + ", ".join(f"`{f}`" for f in functions))
    return md


def main(argv=None) -> int:
    # Triton reads this at import: without a GPU the series' kernels run through its interpreter.
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from .scenarios import matrix
    from .tracks import TRACKS, TrackError, track_for_version

    p = argparse.ArgumentParser(prog="python -m harness.upstream", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="append", help="one release of either track (repeatable): its track runs it")
    p.add_argument("--track", choices=list(TRACKS), help="every release of one track (default: both)")
    p.add_argument("--scenarios", type=int, help="only every N-th scenario of the 0.5.6 matrix (quick runs)")
    p.add_argument("--trace", action="store_true", help="record which functions each mode runs (0.5.6 track)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--write", type=Path, metavar="DIR",
                   help="merge the run into DIR/matrix.json and rewrite DIR/MATRIX.md (the fused track after each release)")
    args = p.parse_args(argv)
    scenarios = matrix()[:: args.scenarios] if args.scenarios else None

    try:  # which track runs which version: a version no track serves is one line, before any work
        wanted: dict[str, list[str]] = {}
        for version in args.version or ():
            name = track_for_version(version).name
            if args.track and name != args.track:
                raise TrackError(f"sglang {version} is served by track {name}, not {args.track}: drop --track")
            wanted.setdefault(name, []).append(version)
    except TrackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = list(wanted) if wanted else [args.track] if args.track else list(TRACKS)

    def step(version: str, what: str) -> None:
        if not args.json:
            print(f"  {version:>12}  {what}", file=sys.stderr, flush=True)

    out, ok = {}, True
    try:
        if "0.5.6" in names:
            def progress(result: ReleaseResult) -> None:
                if not args.json:
                    state = result.error or ", ".join(f"{c.patch.split('-')[0]} {c.describe()}" for c in result.cells)
                    print(f"  {result.version:>12}: {state}", file=sys.stderr, flush=True)

            report = run_matrix(wanted.get("0.5.6"), scenarios, args.trace, progress, step)
            if args.write:
                write_report(merged(args.write, stub_part=report), args.write)
            out["0.5.6"], ok = report, ok and report["ok"]
            if not args.json:
                print("\n".join(report["pinned_regions"] + table(report)))
                print("upstream-check: OK" if report["ok"] else "upstream-check: FAILED: " + "; ".join(report["problems"]))
        if "fused" in names:
            part = run_fused(wanted.get("fused"), args, step)
            out["fused"], ok = part, ok and part["ok"]
    except (SeriesError, TrackError) as e:  # ReleaseError included: one line, what is wrong and how to fix it
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out if len(out) > 1 else next(iter(out.values())), indent=2))
    return 0 if ok else 1


def run_fused(versions, args, step) -> dict:
    """The fused track: each release's row printed, and merged into DIR/matrix.json, as it ends."""
    from fused.track import TrackError as FusedTrackError

    from . import upstream_fused

    def progress(row: dict) -> None:
        if args.write:
            part = {**upstream_fused.header(), "releases": [row]}
            write_report(merged(args.write, fused_part=part), args.write)
        if not args.json:
            state = row["error"] or ", ".join(f"{c['patch'].split('-')[0]} {upstream_fused.describe(c)}" for c in row["cells"])
            print(f"  {row['version']:>12}: {state}", file=sys.stderr, flush=True)

    try:
        part = {**upstream_fused.header(), **upstream_fused.run_matrix(versions, progress, step)}
    except FusedTrackError as e:
        raise SeriesError(str(e)) from None
    if not args.json:
        for row in part["releases"]:
            cells = row["error"] or "; ".join(f"{c['patch']}: {upstream_fused.describe(c)}" for c in row["cells"])
            print(f"{row['version']:>12}  fused  {cells}  | {upstream_fused.kpool_line(row)}")
        print("fused upstream-check: OK" if part["ok"] else "fused upstream-check: FAILED: " + "; ".join(part["problems"]))
    return part


if __name__ == "__main__":
    sys.exit(main())
