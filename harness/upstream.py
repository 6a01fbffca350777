"""`make upstream-check`: the series on the REAL nsa_backend.py of every release in patches/releases.toml.

For the reference release (0.5.6) it first checks that the stub's pinned regions are upstream's
bytes (vendor_stub/UPSTREAM_PIN.toml). Then, per release: the series is derived (harness.releases:
clean / 3-way / resolved), every prefix of it byte-compiles, and the release's real file runs its
CUDA-graph metadata methods (__init__, init_cuda_graph_state, capture, replay) over the harness
scenario matrix, unpatched and with each prefix applied (harness.upstream_exec), compared on whole
buffers after every replay exactly as the stub's stages are (harness.compare). The unpatched real
file is also compared against the stub's baseline: does the stub reproduce this release?

    python -m harness.upstream [--version V ...] [--scenarios N] [--json] [--trace] [--write DIR]

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

from .lint import new_findings
from .series import REPO_ROOT, STUB_DIR, Series, SeriesError
from .releases import Derivation, ReleaseError, wheel_file

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
    records: bool = False  # the release's graph runner records the backend's metadata (RECORDING)

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


def graph_runner_verdict(tree: dict[str, bytes], module, scenario) -> tuple[bool, str | None]:
    """(records, problem) for the release's cuda_graph_runner.py in `tree`, run around the backend
    of `module`: upstream-check passes the final stage's stub backend (the runner file is what is
    judged); tests/test_graph_runner_upstream.py also runs it around the tree's real backend."""
    from .cuda_graph import recorder
    from .releases import REPO_PREFIX, UPSTREAM_FILES
    from .upstream_exec import run_graph_runner

    path = REPO_PREFIX + UPSTREAM_FILES[f"{STUB_DIR}/cuda_graph_runner.py"]
    runner = scenario.runner(module)
    backend = runner.backend

    def record(bs, forward_mode, capturing):
        recorder(backend, capturing)(bs, forward_mode)

    events = run_graph_runner(tree[path].decode(), path, runner, runner.capture_bs[-1], record)
    if events == RECORDING:
        return True, None
    if any("record" in e for e in events):
        return False, f"graph runner: records, but runs {', '.join(events)}"
    return False, None


def run_release(
    derivation: Derivation, version: str, scenarios, stub, final_stage, trace: bool = False, step=None
) -> ReleaseResult:
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
    # After the scenarios: a runner that cannot record does not hide the cell's bit-exactness.
    for cell, tree, module in zip(result.cells, trees[1:], modules[1:]):
        if module is not None and not cell.failure:
            try:
                cell.records, cell.failure = graph_runner_verdict(tree, final_stage, scenarios[0])
            except Exception as e:  # the runner's code could not be cut out or run: say so in the cell
                cell.failure = f"graph runner: {type(e).__name__}: {e}"
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
    final_stage = stages.load(stages.final(), series)
    results = []
    with Derivation(series) as derivation:
        for version in versions or ():
            derivation.table.release(version)  # an unknown or replaced version stops here, with why
        for version in versions or derivation.table.versions:
            result = run_release(derivation, version, scenarios, stub, final_stage, trace, step)
            results.append(result)
            if progress:
                progress(result)
    problems += [r.error for r in results if r.error]
    problems += [f"sglang {r.version} {c.patch}: {c.failure}" for r in results for c in r.cells if c.failure]
    problems += [f"sglang {r.version} {c.patch}: lint: {f}" for r in results for c in r.cells for f in c.lint]
    return {
        "ok": not problems,
        "problems": problems,
        "pinned_regions": lines,
        "patches": series.patch_files,
        "scenarios": [s.name for s in scenarios],
        "releases": [asdict(r) for r in results],
        "tools": tool_versions(),
    }


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


def write_report(report: dict, folder: Path) -> None:
    """matrix.json and MATRIX.md (the table, how each release got its series, what runs per mode)."""
    from .releases import RESOLUTIONS, Table

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "matrix.json").write_text(json.dumps(report, indent=2) + "\n")
    table_data = Table.load()
    tools = report["tools"]
    md = [
        "# The series on every release's real nsa_backend.py",
        "",
        "Generated by `python -m harness.upstream --trace --write reports/upstream` (do not edit).",
        f"Tools: python {tools['python']}, torch {tools['torch']}, triton {tools['triton']} "
        f"(TRITON_INTERPRET={tools['triton_interpret'] or 'unset'}), git {tools['git']}, GitPython {tools['gitpython']}.",
        "",
        "Cell: how the canonical patch reached the release (clean = `git apply` as is; 3-way = cherry-pick;",
        "resolved = cherry-pick plus a reviewed hand resolution from patches/releases/), that every file",
        "byte-compiles, that the series adds no finding of sglang's pre-commit lint (black 88, isort",
        "--profile black, ruff pyflakes; harness/lint.py) to what the release's own file has, and the scenarios whose whole buffers stayed bit-exact against the release's",
        f"unpatched real file after capture and every replay ({len(report['scenarios'])} scenarios:",
        "harness.scenarios.matrix()). records: the release's real cuda_graph_runner.py, its capture and replay",
        "code run against stand-ins around the final stage's stub backend, calls the backend's recorder before",
        "forward in the two warm-up runs and the captured run, and replay_prepare then skips the backend's replay",
        "call and launches nothing (harness.upstream.RECORDING).",
        "Last column: the stub's baseline against the unpatched real file.",
        "",
        *table(report),
        "",
        "upstream-check: " + ("OK" if report["ok"] else "FAILED: " + "; ".join(report["problems"])),
        "",
        "## Pinned regions (0.5.6)",
        "",
        "```",
        *report["pinned_regions"],
        "```",
        "",
        "## Releases",
        "",
        "| release | what | status |",
        "| --- | --- | --- |",
        *[f"| {r.version} | {r.what} | {r.status} |" for r in table_data.releases],
        "",
        "## Hand resolutions",
        "",
    ]
    for path in sorted(RESOLUTIONS.glob("*.toml")):
        for r in tomllib.loads(path.read_text())["resolution"]:
            md.append(f"- `{path.name[:-5]}` on {', '.join(r['releases'])} ({r['function']}): {' '.join(r['why'].split())}")
    traced = [r for r in report["releases"] if r["code_path"]]
    if traced:
        md += ["", "## What runs (unpatched real file, one scenario per mode)", ""]
        for r in traced:
            md.append(f"- **{r['version']}**")
            for mode, functions in r["code_path"].items():
                md.append(f"  - {mode}: " + ", ".join(f"`{f}`" for f in functions))
    (folder / "MATRIX.md").write_text("\n".join(md) + "\n")


def upstream_check(versions=None, scenarios=None) -> dict:
    """What `python -m harness upstream-check` prints: the report with its lines."""
    report = run_matrix(versions, scenarios)
    report["lines"] = report["pinned_regions"] + table(report) + (
        ["upstream-check: OK"] if report["ok"] else ["upstream-check: FAILED: " + "; ".join(report["problems"])]
    )
    return report


def main(argv=None) -> int:
    # Triton reads this at import: without a GPU the series' kernels run through its interpreter.
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from .scenarios import matrix

    p = argparse.ArgumentParser(prog="python -m harness.upstream", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="append", help="one release of patches/releases.toml (repeatable)")
    p.add_argument("--scenarios", type=int, help="only every N-th scenario of the matrix (quick runs)")
    p.add_argument("--trace", action="store_true", help="record which functions each mode runs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--write", type=Path, metavar="DIR", help="also write DIR/matrix.json and DIR/MATRIX.md")
    args = p.parse_args(argv)
    scenarios = matrix()[:: args.scenarios] if args.scenarios else None

    def progress(result: ReleaseResult) -> None:
        if not args.json:
            state = result.error or ", ".join(f"{c.patch.split('-')[0]} {c.describe()}" for c in result.cells)
            print(f"  {result.version:>12}: {state}", file=sys.stderr, flush=True)

    def step(version: str, what: str) -> None:
        if not args.json:
            print(f"  {version:>12}  {what}", file=sys.stderr, flush=True)

    try:
        report = run_matrix(args.version, scenarios, args.trace, progress, step)
    except SeriesError as e:  # ReleaseError included: one line, what is wrong and how to fix it
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.write:
        write_report(report, args.write)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(report["pinned_regions"] + table(report)))
        print("upstream-check: OK" if report["ok"] else "upstream-check: FAILED: " + "; ".join(report["problems"]))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
