"""reports/<machine>/FUSED.md from reports/<machine>/fused.json (written by fused.gpu_check run).

    python -m fused.report reports/<machine>        (make fused-report MACHINE=<machine>)

The report holds the run's header, whether it measured the current patched kernel, the equality per
release, the benchmark tables (graph-replayed times first, bare launches second) and each target of
fused/targets.toml stated MET or MISSED with its worst ratio and the input where it occurs. Every
number in it is a number of the JSON or a ratio of two of them; the thresholds come from the targets
file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fused import cases, gpu_check, track

TARGETS_FILE = Path(__file__).with_name("targets.toml")
# Implementations as gpu_check names them, and their column headers.
IMPLEMENTATIONS = {
    "ours": "ours",
    "upstream_as_shipped": "upstream as shipped",
    "upstream_host_max": "upstream, host max",
    "empty_kernel": "empty kernel",
}
GPU_COMMAND = (
    "`.venv/bin/python -m fused.gpu_check prepare` here, then "
    "`python -m fused.gpu_check run --out reports/{machine}/fused.json` on the GPU host with build/ carried, "
    "then `make fused-report MACHINE={machine}`"
)


class ReportError(Exception):
    """A one-line refusal: what is wrong and what to type."""


@dataclass
class Verdict:
    target: dict
    status: str  # MET, MISSED, or NOT MEASURED (no row selected, or a selected row lacks a time)
    worst: str  # the worst ratio and where, in words


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _where(row: dict) -> str:
    return f"{row['mode']}, bs {row['bs']}, width {row['width']}, {row['profile']}"


def _selected(rows: list[dict], where: dict) -> list[dict]:
    def keep(row: dict) -> bool:
        listed = all(row[key] in where[key] for key in ("mode", "width", "profile") if key in where)
        return listed and row["bs"] >= where.get("bs_min", 0)

    return [row for row in rows if keep(row)]


def judge(target: dict, rows: list[dict], metric: str) -> Verdict:
    """One target over the benchmark rows: MET only if every selected row is measured and passes."""
    selected = _selected(rows, target.get("where", {}))
    ours_key = f"ours/{metric}"
    against_key = f"{target.get('against')}/{metric}"
    needed = [ours_key] + ([against_key] if "against" in target else [])
    unmeasured = [row for row in selected if any(key not in row for key in needed)]
    measured = [row for row in selected if row not in unmeasured]
    if not measured:
        return Verdict(target, "NOT MEASURED", "no benchmark row measured for this target")

    kind = target["kind"]
    if kind == "floor_bound":

        def bound(row):
            return max(target["factor"] * row["floor_us"], row["floor_us"] + target["slack_us"])

        row = max(measured, key=lambda r: r[ours_key] / bound(r))
        ratio = row[ours_key] / bound(row)
        failing = sum(r[ours_key] > bound(r) for r in measured)
        worst = (
            f"worst ours / bound = {ratio:.2f} at {_where(row)}: ours {_us(row[ours_key])} µs, "
            f"floor {_us(row['floor_us'])} µs, bound {_us(bound(row))} µs"
        )
    elif kind == "speedup":
        row = min(measured, key=lambda r: r[against_key] / r[ours_key])
        ratio = row[against_key] / row[ours_key]
        failing = sum(r[against_key] / r[ours_key] < target["min_speedup"] for r in measured)
        worst = (
            f"worst speedup = {ratio:.2f}x at {_where(row)}: {IMPLEMENTATIONS[target['against']]} "
            f"{_us(row[against_key])} µs, ours {_us(row[ours_key])} µs"
        )
    elif kind == "slower_by":
        row = max(measured, key=lambda r: r[ours_key] - r[against_key])
        excess = row[ours_key] - row[against_key]
        failing = sum(r[ours_key] - r[against_key] > target["max_us"] for r in measured)
        worst = (
            f"worst ours - {IMPLEMENTATIONS[target['against']]} = {excess:+.2f} µs "
            f"(ratio {row[ours_key] / row[against_key]:.2f}) at {_where(row)}: ours {_us(row[ours_key])} µs, "
            f"{IMPLEMENTATIONS[target['against']]} {_us(row[against_key])} µs"
        )
    else:
        raise ReportError(
            f"{TARGETS_FILE}: target {target['id']} has unknown kind {kind!r}; use floor_bound, speedup or slower_by"
        )
    passed = failing == 0
    worst += f"; missed on {failing} of {len(measured)} inputs"
    worst += _walled(target, measured, metric)
    if unmeasured:
        worst += f"; {len(unmeasured)} of {len(selected)} selected inputs not measured"
        return Verdict(target, "MISSED" if not passed else "NOT MEASURED", worst)
    return Verdict(target, "MET" if passed else "MISSED", worst)


def _allowed(target: dict, row: dict, metric: str) -> float:
    """The most time the target allows ours on `row`."""
    if target["kind"] == "floor_bound":
        return max(target["factor"] * row["floor_us"], row["floor_us"] + target["slack_us"])
    against = row[f"{target['against']}/{metric}"]
    if target["kind"] == "speedup":
        return against / target["min_speedup"]
    return against + target["max_us"]


def _walled(target: dict, measured: list[dict], metric: str) -> str:
    """The missed inputs where the empty kernel (our arguments, our grid), measured the same way,
    already takes longer than the target allows: no kernel on that launch meets it there."""
    empty_key = f"empty_kernel/{metric}"
    walled = [
        row
        for row in measured
        if empty_key in row
        and row[f"ours/{metric}"] > _allowed(target, row, metric)
        and row[empty_key] > _allowed(target, row, metric)
    ]
    if not walled:
        return ""
    row = max(walled, key=lambda r: r[empty_key] / _allowed(target, r, metric))
    return (
        f"; on {len(walled)} of them the empty kernel alone takes longer than the target allows "
        f"(e.g. {_where(row)}: empty kernel {_us(row[empty_key])} µs, allowed {_us(_allowed(target, row, metric))} µs)"
    )


def load_targets(path: Path = TARGETS_FILE) -> dict:
    return tomllib.loads(path.read_text())


def current_patched_sha256() -> str:
    """The sha256 of the base with fused/patches/series applied (what gpu_check would measure now)."""
    return track._sha256(track.patched_source())


def _header(data: dict, machine: str, current_sha: str | None) -> list[str]:
    measured = data.get("patched_sha256")
    lines = [
        f"# Fused-era track (sglang 0.5.15 - 0.5.23) on {data.get('card', 'an unnamed card')}",
        "",
        f"Generated by `python -m fused.report reports/{machine}` from `reports/{machine}/fused.json` "
        "(written by `fused.gpu_check run`). Do not edit by hand.",
        "",
        f"- card: {data.get('card', 'not recorded')}",
        f"- torch {data.get('torch', 'not recorded')}, triton {data.get('triton', 'not recorded')}, "
        f"python {data.get('python', 'not recorded')}",
        f"- date: {data.get('date', 'not recorded in fused.json')}",
        f"- patched kernel measured: sha256 `{measured}`",
    ]
    if current_sha is None:
        lines.append(
            "- the current patched kernel could not be built here, so whether it is the one measured is unknown"
        )
    elif measured == current_sha:
        lines.append("- it is the current patched kernel (fused/base/ with fused/patches/series applied)")
    else:
        lines += [
            f"- **it is not the current patched kernel** (sha256 `{current_sha}`): this data measured another "
            "kernel. Refresh: " + GPU_COMMAND.format(machine=machine) + ".",
        ]
    return lines


def _equality(data: dict) -> list[str]:
    equality = data.get("equality", {})
    lines = [
        "## Equality, compiled on the GPU",
        "",
        "Each release's upstream kernels (as shipped) and the patched kernels against the eager reference "
        "on upstream's contract, whole buffers.",
        "",
        "| implementation | cases | failures |",
        "|---|---:|---:|",
    ]
    for name, result in equality.items():
        lines.append(f"| {name} | {result['cases']} | {len(result['failures'])} |")
    failing = {name: result["failures"] for name, result in equality.items() if result["failures"]}
    lines += ["", "Every implementation equal to the reference on every case." if equality and not failing else ""]
    for name, failures in failing.items():
        lines.append(f"- {name}: " + "; ".join(str(failure) for failure in failures[:5]))
    if "equality_s" in data:
        lines += ["", f"Equality took {data['equality_s']:.1f} s."]
    return lines


def _order(rows: list[dict]) -> list[dict]:
    """Rows by bs, then profile in gpu_check's order (profiles it does not name last, by name)."""
    profiles = list(gpu_check.PROFILES)

    def key(row):
        known = row["profile"] in profiles
        return (row["bs"], 0 if known else 1, profiles.index(row["profile"]) if known else 0, row["profile"])

    return sorted(rows, key=key)


def _table(rows: list[dict], kind: str) -> list[str]:
    names = list(IMPLEMENTATIONS)
    lines = [
        "| bs | profile | floor | " + " | ".join(IMPLEMENTATIONS[name] for name in names) + " |",
        "|---:|---|---:|" + "---:|" * len(names),
    ]
    for row in _order(rows):
        cells = [_us(row.get(f"{name}/{kind}")) for name in names]
        lines.append(f"| {row['bs']} | {row['profile']} | {_us(row['floor_us'])} | " + " | ".join(cells) + " |")
    return lines


def _benchmark(data: dict, targets: dict) -> list[str]:
    bench = data.get("benchmark")
    if not bench:
        return ["## Benchmark", "", "Not in fused.json (run without `--skip-bench`)."]
    rows = bench["rows"]
    rounds = sorted({row[key] for row in rows for key in row if key.endswith("_rounds")})
    lines = [
        "## Benchmark",
        "",
        f"Page size {bench.get('page_size')}, draft tokens {bench.get('draft')} (target verify, draft extend); "
        f"{len(rows)} inputs; rounds per time: {', '.join(map(str, rounds))}. "
        "All times are µs, medians of the interleaved rounds' `triton.testing.do_bench` medians. "
        f"The floor is each input's live-prefix bytes over the copy bandwidth measured in the same run "
        f"({bench['copy_bandwidth_Bps'] / 1e12:.2f} TB/s, read plus write). Profiles as "
        "`fused.gpu_check.profile_lengths` draws them.",
    ]
    modes = sorted({row["mode"] for row in rows}, key=lambda m: (cases.MODES + (m,)).index(m))
    widths = sorted({row["width"] for row in rows}, reverse=True)
    for mode in modes:
        for width in widths:
            selected = [row for row in rows if row["mode"] == mode and row["width"] == width]
            if not selected:
                continue
            lines += [
                "",
                f"### {mode}, width {width}",
                "",
                f"Replayed from a CUDA graph holding only the launch ({targets['metric']}, what the targets judge):",
                "",
                *_table(selected, "graph_us"),
                "",
                "Bare launch (bare_us):",
                "",
                *_table(selected, "bare_us"),
            ]
    return lines


def _targets(data: dict, targets: dict) -> list[str]:
    metric = targets["metric"]
    lines = [
        "## Targets",
        "",
        f"Judged on the graph-replayed time (`{metric}`) of every input the target selects; thresholds "
        "from fused/targets.toml.",
        "",
    ]
    rows = data.get("benchmark", {}).get("rows", [])
    for target in targets["target"]:
        verdict = judge(target, rows, metric)
        lines.append(f"- ({target['id']}) {target['title']}: **{verdict.status}**; {verdict.worst}.")
    return lines


def render(data: dict, targets: dict, machine: str, current_sha: str | None) -> str:
    sections = [
        _header(data, machine, current_sha),
        _targets(data, targets),
        _equality(data),
        _benchmark(data, targets),
    ]
    text = "\n\n".join("\n".join(section) for section in sections)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="reports/<machine>, holding fused.json")
    args = parser.parse_args(argv)
    source = args.dir / "fused.json"
    try:
        if not source.is_file():
            raise ReportError(f"no {source}: run {GPU_COMMAND.format(machine=args.dir.name)}".replace("`", ""))
        try:
            data = json.loads(source.read_text())
        except json.JSONDecodeError as error:
            raise ReportError(f"{source} is not JSON ({error}): write it again with fused.gpu_check run")
        try:
            current_sha = current_patched_sha256()
        except (track.TrackError, ImportError) as error:
            print(f"fused.report: cannot build the patched kernel ({error}); the report says so", file=sys.stderr)
            current_sha = None
        text = render(data, load_targets(), args.dir.name, current_sha)
    except ReportError as error:
        print(f"fused.report: {error}", file=sys.stderr)
        return 2
    out = args.dir / "FUSED.md"
    # Written whole or not at all: a refusal above leaves the previous report in place.
    partial = out.with_suffix(".md.tmp")
    partial.write_text(text)
    partial.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
