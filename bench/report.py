"""reports/<machine>/REPORT.md (and GRAPH.md) and the plots: saved data -> tables -> text.

    python -m bench.report [MACHINE ...]      (default: every reports/<machine>/ holding a run)

Data, read here and never computed: the benchmark of record (reports/<machine>/record.json,
`python -m bench.record`: every comparison, target and per-stage number), the machine's latest
pytest-benchmark run (reports/<machine>/benchmarks/, `make bench`: counts, and sequential medians shown as
such), verdicts.json (`python -m bench.gpu_verdicts`), graph_demo.json (`python -m bench.graph_demo`),
modes.json (`python -m bench.modes`). Every saved run carries the hash of the series it measured
(bench.machine.series_hash); data of another series is reported as stale, with the command that refreshes
it, and on the machine this runs on it is measured again, never reused. Stages come from harness.stages.
Targets: bench/targets.toml, judged on the final stage. Text: bench/templates/*.md.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path
from string import Template

from bench import replay_operator as op
from bench.machine import machine_name, series_hash
from harness import stages

REPORTS = Path(__file__).resolve().parents[1] / "reports"
TEMPLATES = Path(__file__).resolve().parent / "templates"
TARGETS = Path(__file__).resolve().parent / "targets.toml"
FINAL = "final-launch"  # the final stage's launch object, called bare
# Sequential runs saved before the operator named each implementation once.
OLD_SUITE_NAMES = {"upstream-0.5.23": "upstream-hostmax", "empty-launch": "nop-1"}
NOT_COMPARABLE = "CPU, Triton interpreter: timings not comparable"
SAVED = ("record.json", "verdicts.json", "graph_demo.json", "modes.json")  # spec_step, release_replay: optional


# -- provenance: which series the saved data measured ---------------------------------------------------
def saved_hash(data: dict) -> str | None:
    """The series hash a saved run carries (pytest-benchmark: top level; our JSON: its environment)."""
    if "series_hash" in data:
        return data["series_hash"]
    return (data.get("environment") or data.get("env") or {}).get("series_hash")


def stale_runs(machine: str) -> list[str]:
    """The saved runs of `machine` that measured another series than patches/ holds (or carry no hash)."""
    runs = sorted((REPORTS / machine / "benchmarks").glob("*/*.json"), key=lambda p: p.name)
    saved = [(str(runs[-1].relative_to(REPORTS / machine)), json.loads(runs[-1].read_text()))] if runs else []
    saved += [(name, data) for name in SAVED if (data := read_json(machine, name)) is not None]
    return [f"`{name}` ({saved_hash(data) or 'no hash: saved before runs were keyed by the series'})"
            for name, data in saved if saved_hash(data) != series_hash()]


def refresh_advice(machine: str) -> str:
    if machine == "cpu":
        return "`make report` on a machine without a GPU measures them again"
    return (f"on a GPU, `bench/gpu_run.sh OUT` (after `make bench-prepare`; see README), copy OUT/* into"
            f" reports/{machine}/, then `make report MACHINE={machine}`")


def staleness_text(machine: str) -> str:
    stale = stale_runs(machine)
    if not stale:
        return ""
    return (f"\n**Data older than the series.** These saved runs measured another series than patches/ holds now"
            f" (series hash in brackets): {', '.join(stale)}. Their numbers describe that series, not this one."
            f" To refresh: {refresh_advice(machine)}.\n")


# -- data -------------------------------------------------------------------------------------------
def produce_missing(machine: str) -> None:
    """On the machine itself: run the benchmark suite, the verdicts and the record where their files are
    missing or measured another series (never reuse stale data here)."""
    folder = REPORTS / machine
    now = series_hash()
    for name in ("verdicts.json", "record.json", "modes.json"):
        data = read_json(machine, name)
        if data is not None and saved_hash(data) != now:
            print(f"reports/{machine}/{name} measured another series: measuring it again", flush=True)
            (folder / name).unlink()
    runs = sorted(folder.glob("benchmarks/*/*.json"), key=lambda p: p.name)
    if runs and saved_hash(json.loads(runs[-1].read_text())) != now:
        print(f"reports/{machine}/benchmarks: the latest run measured another series: benchmarking again", flush=True)
        runs = []
    if not runs:
        subprocess.run([sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", "--benchmark-enable",
                        "--benchmark-only", f"--benchmark-storage={folder / 'benchmarks'}",
                        f"--benchmark-save={machine}"], check=True)
    if not (folder / "verdicts.json").exists():
        subprocess.run([sys.executable, "-m", "bench.gpu_verdicts", str(folder / "verdicts.json")], check=True)
    if not (folder / "record.json").exists():  # on CPU: the two smoke inputs, host timings only
        subprocess.run([sys.executable, "-m", "bench.record", str(folder / "record.json")], check=True)
    if not (folder / "modes.json").exists():  # on CPU: one small input per mode, host timings only
        subprocess.run([sys.executable, "-m", "bench.modes", str(folder / "modes.json")], check=True)


def latest_run(machine: str) -> dict | None:
    """The latest sequential pytest-benchmark run saved for `machine`, or None."""
    runs = sorted((REPORTS / machine / "benchmarks").glob("*/*.json"), key=lambda p: p.name)
    if not runs:
        return None
    data = json.loads(runs[-1].read_text())
    data["_file"] = str(runs[-1].relative_to(REPORTS / machine))
    return data


def read_json(machine: str, name: str) -> dict | None:
    path = REPORTS / machine / name
    return json.loads(path.read_text()) if path.exists() else None


def by_input(run: dict) -> tuple[list[str], list[dict]]:
    """The run's stages in series order, and one row per input (benchmark group): impl -> its numbers."""
    rows: dict[tuple, dict] = {}
    run_stages: list[str] = []
    for b in run["benchmarks"]:
        x = b["extra_info"]
        key = (x["bs"], x["D"], x["page_size"], x["maxlen"])
        row = rows.setdefault(key, dict(zip(("bs", "D", "page_size", "maxlen"), key), floor_us=x["floor_us"]))
        impl = OLD_SUITE_NAMES.get(x["impl"], x["impl"])
        row[impl] = {"host_us": b["stats"]["median"] * 1e6, **x}
        if x["role"] in ("baseline", "stage") and impl not in run_stages:
            run_stages.append(impl)
    return [s for s in stages.names() if s in run_stages], [rows[k] for k in sorted(rows)]


# -- targets (bench/targets.toml): each measure returns the numbers its text quotes, None if no input applies
def separated(a: dict, b: dict) -> int:
    """-1 where a's quartile interval lies wholly below b's (a faster), 1 where wholly above, else 0."""
    return -1 if a["q3"] < b["q1"] else 1 if a["q1"] > b["q3"] else 0


def within(target: dict, floor: float, us: float) -> bool:
    """The floor target on one input: <= limit x the floor where the floor is large, else <= floor + slack."""
    return us <= target["limit"] * floor if floor >= target["min_floor_us"] else us <= floor + target["slack_us"]


def what_explains(target: dict, row: dict) -> str:
    """For an input over the floor target, which cost measured in the same run brings it within the target:
    "stride" (the same launch in the wider twin table), "launch" (our time less the empty kernel's),
    "both" (only the twin less the empty kernel), or "neither"."""
    k, floor = row["kernel"], row["floor_us"]
    nop = k["nop-args"]["us"] if "nop-args" in k else None
    twin = k["final-twin"]["us"] if "final-twin" in k else None
    if twin is not None and within(target, floor, twin):
        return "stride"
    if nop is not None and within(target, floor, k[FINAL]["us"] - nop):
        return "launch"
    if twin is not None and nop is not None and within(target, floor, twin - nop):
        return "both"
    return "neither"


def kernel_vs_floor(target: dict, stage: str, rows: list[dict]) -> dict | None:
    timed = [r for r in rows if FINAL in r["kernel"] and r["floor_us"]]
    if not timed:
        return None
    big = [r for r in timed if r["floor_us"] >= target["min_floor_us"]]
    small = [r for r in timed if r["floor_us"] < target["min_floor_us"]]
    ratio = max(big, key=lambda r: r["kernel"][FINAL]["us"] / r["floor_us"], default=None)
    excess = max(small, key=lambda r: r["kernel"][FINAL]["us"] - r["floor_us"], default=None)
    over = [r for r in timed if not within(target, r["floor_us"], r["kernel"][FINAL]["us"])]
    return {"big": len(big), "small": len(small),
            "worst": ratio["kernel"][FINAL]["us"] / ratio["floor_us"] if ratio else 0.0,
            "worst_id": ratio["id"] if ratio else "-",
            "worst_excess": excess["kernel"][FINAL]["us"] - excess["floor_us"] if excess else 0.0,
            "worst_excess_id": excess["id"] if excess else "-",
            "met": not over, "over": len(over), "attribution": _attribution(target, timed, over)}


def _attribution(target: dict, timed: list[dict], over: list[dict]) -> str:
    """What the two controls of the same run say about the inputs over the floor target."""
    if not over:
        return "No input is over it."
    nops = [r["kernel"]["nop-args"]["us"] for r in timed if "nop-args" in r["kernel"]]
    if not nops or not all("final-twin" in r["kernel"] for r in over):
        return "This record has no controls (wider twin table, empty kernel) to say why."
    causes = [what_explains(target, r) for r in over]
    unexplained = [r["id"] for r, cause in zip(over, causes) if cause == "neither"]
    return (f"Of the {len(over)} inputs over it, {causes.count('stride')} are within it in the table 2048 columns"
            " wider (the same launch and bytes, the rows no longer a multiple of 640 KiB apart: the row stride,"
            f" notebook/README.md), {causes.count('launch')} once the time an empty kernel with our arguments takes on the"
            f" same timer ({min(nops):.1f}-{max(nops):.1f} µs) is taken off, {causes.count('both')} only with both;"
            f" explained by neither: {', '.join(unexplained) or 'none'}.")


def launch_vs_nop_args(target: dict, stage: str, rows: list[dict]) -> dict | None:
    timed = [r for r in rows if "nop-args" in r["host"]]
    if not timed:
        return None
    worst = max(timed, key=lambda r: r["host"]["final-launch"]["us"] / r["host"]["nop-args"]["us"])
    ratio = worst["host"]["final-launch"]["us"] / worst["host"]["nop-args"]["us"]
    return {"worst": ratio, "worst_id": worst["id"], "met": ratio <= target["limit"]}


def kernel_vs_upstream(target: dict, stage: str, rows: list[dict]) -> dict | None:
    timed = [r for r in rows if "upstream-static" in r["kernel"]]
    if not timed:
        return None
    static = [separated(r["kernel"][FINAL], r["kernel"]["upstream-static"]) for r in timed]
    hostmax = [separated(r["kernel"][FINAL], r["kernel"]["upstream-hostmax"]) for r in timed]
    return {"inputs": len(timed), "faster": static.count(-1), "slower": static.count(1), "tied": static.count(0),
            "faster_hostmax": hostmax.count(-1), "slower_hostmax": hostmax.count(1),
            "median_ratio": statistics.median(r["kernel"]["upstream-static"]["us"] / r["kernel"][FINAL]["us"]
                                              for r in timed)}


def static_grid_vs_eager(target: dict, stage: str, rows: list[dict]) -> dict:
    worst = max(r["ratio"] for r in rows if r["maxlen"] == target["maxlen"])
    return {"worst": worst, "met": worst <= target["limit"]}


MEASURES = {f.__name__: f for f in (kernel_vs_floor, launch_vs_nop_args, kernel_vs_upstream, static_grid_vs_eager)}


def judged(section: str, stage: str, rows: list[dict] | None, reason: str = "") -> list[str]:
    """One line per target of `section`: its goal and verdict, or, with no `rows`, its goal and `reason`."""
    lines = []
    for target in tomllib.loads(TARGETS.read_text())[section]:
        goal = target["goal"].format(**target, stage=stage) + ": " if "goal" in target else ""
        numbers = MEASURES[target["measure"]](target, stage, rows) if rows is not None else None
        if numbers is not None:
            verdict = {"verdict": "met" if numbers.get("met") else "MISSED"}
            lines.append(goal + target["text"].format(**target, **numbers, **verdict, stage=stage))
        elif rows is None:
            lines.append(goal + f"not judged ({reason}).")
    return lines


# -- tables -----------------------------------------------------------------------------------------
def markdown_table(header: list[str], rows: list[list], align: str = "") -> str:
    """`align`: one letter a column, l or r (default: all unaligned)."""
    rule = [{"l": "---", "r": "---:"}[a] for a in align] if align else ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "".join(f"{r}|" for r in rule)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


SWEEP_BS = (1, 32, 128)  # the batch sizes the per-patch table quotes from the run of record's bs sweep


def bs_sweep(rows: list[dict]) -> list[dict]:
    """The run of record's bs sweep: equal lengths in the widest table, D 4, page 64, its most common length."""
    width = max(r["width"] for r in rows)
    equal = [r for r in rows if r["profile"] == "equal" and r["width"] == width and r["D"] == 4 and r["page_size"] == 64]
    if not equal:
        return []
    maxlen = statistics.mode(r["maxlen"] for r in equal)
    return sorted((r for r in equal if r["maxlen"] == maxlen), key=lambda r: r["bs"])


def per_patch_table(record_rows: list[dict], run_stages: list[str], run_rows: list[dict]) -> str:
    """Every stage of the series (harness.stages), one row each: host µs of its whole replay at bs 1/32/128 and
    its ratios to the previous stage and to baseline from the interleaved run of record; counts per replay at
    the largest bs and the ratios of the sequential run beside them. A stage a run did not measure says so."""
    names = stages.names()
    sweep = {r["bs"]: r["host"] for r in bs_sweep(record_rows)} if record_rows else {}
    timed = [r["host"] for r in record_rows if r["host"]]
    biggest = max(run_rows, key=lambda r: r["bs"]) if run_rows else {}
    missing = "not in this run"

    def ratio(samples: list[dict], a: str, b: str, key) -> str:
        pairs = [key(x[a]) / key(x[b]) for x in samples if a in x and b in x]
        return f"{statistics.median(pairs):.2f}x" if pairs else missing

    body = []
    for i, stage in enumerate(names):
        host = " / ".join(f"{sweep[bs][stage]['us']:.0f}" if stage in sweep.get(bs, {}) else "-" for bs in SWEEP_BS)
        previous = names[i - 1] if i else None
        seq = [r for r in run_rows if stage in r]
        body.append([
            stage, "-" if not i else f"{i:04d}",
            (host if stage in (sweep.get(SWEEP_BS[-1]) or {}) else missing) if sweep else "no bs sweep in this record",
            "" if not i else ratio(timed, previous, stage, lambda x: x["us"]),
            "" if not i else ratio(timed, stages.BASELINE, stage, lambda x: x["us"]),
            "" if not i else (ratio(seq, previous, stage, lambda x: x["host_us"]) if seq else missing),
            biggest[stage]["device_kernels"] if stage in biggest else missing,
            biggest[stage]["triton_launches"] if stage in biggest else missing,
        ])
    return markdown_table(["stage", "patch", f"host µs, bs {' / '.join(map(str, SWEEP_BS))} (interleaved)",
                           "vs previous (interleaved)", "vs baseline (interleaved)", "vs previous (sequential)",
                           "device aten kernels", "Triton launches"], body, "llrrrrrr")


def inputs_table(impls: list[str], rows: list[dict], gpu: bool) -> str:
    body = []
    for r in rows:
        cells = []
        for impl in impls:
            if impl not in r:
                cells.append("skipped")
            elif gpu:
                cells.append(f"{r[impl]['host_us']:.1f} / {r[impl]['device_us']:.1f}")
            else:
                cells.append(f"{r[impl]['host_us']:.0f}")
        body.append([r["bs"], r["D"], r["page_size"], r["maxlen"], *cells] + ([f"{r['floor_us']:.1f}"] if gpu else []))
    header = [i if i in stages.names() else op.label(i) for i in impls]
    return markdown_table(["bs", "D", "ps", "maxlen", *header] + (["floor"] if gpu else []), body)


def bullets(lines) -> str:
    return "\n".join(f"- {line}" for line in lines)


def verdict_text(verdicts: dict, run_stages: list[str]) -> str:
    env = verdicts["env"]
    counts = []
    for stage in list(dict.fromkeys(v["stage"] for v in verdicts["stages"])):  # the verdict run's own stages
        mine = [v for v in verdicts["stages"] if v["stage"] == stage]
        counts.append(f"{stage}: {sum(v['exact'] for v in mine)}/{len(mine)} scenarios bit-exact")
    text = fill("verdicts.md", **env, stage_lines=bullets(counts))
    if "sync" in verdicts:  # GPU runs only
        peers = [
            f"{p['scenario']}: whole-buffer {'bit-exact' if p['whole_buffer_exact'] else 'DIFFERS, ' + p['first_whole_buffer_mismatch']};"
            f" valid-only {'equal' if p['valid_only_exact'] else 'DIFFERS at ' + p['first_valid_only_mismatch']}"
            for p in verdicts["peer"]
        ]
        text += fill("verdicts_gpu.md", sync_lines=bullets(f"{k}: {v}" for k, v in verdicts["sync"].items()),
                     peer_note=verdicts["peer_note"], peer_lines=bullets(peers))
    return text.rstrip("\n")


def modes_text(machine: str) -> str:
    """Decode and draft extend against baseline and upstream, from modes.json (`python -m bench.modes`)."""
    from bench.modes import table

    path = REPORTS / machine / "modes.json"
    if not path.exists():
        return "No `modes.json` for this machine yet (`python -m bench.modes`, GPU).\n"
    return fill("MODES.md", table=table(str(path)))


# -- plots: every line labelled in the image; CPU plots say their timings are not comparable ---------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(fig, path: Path, gpu: bool, missing: list[str]) -> None:
    """Save `fig` with what a reader needs in the image: stages the run lacks, and on CPU that timings are
    not comparable."""
    if missing:
        fig.text(0.01, 0.01, "not in this run: " + ", ".join(missing), fontsize=7, color="dimgray", va="bottom")
    if not gpu:
        for ax in fig.axes:  # on every panel, inside it: the first thing a reader of the image sees
            ax.text(0.5, 0.5, NOT_COMPARABLE, fontsize=11, color="red", alpha=0.45, ha="center", va="center",
                    rotation=15, transform=ax.transAxes)
    fig.tight_layout(rect=(0, 0.04 if missing else 0, 1, 1))
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot(run_stages: list[str], rows: list[dict], folder: Path, gpu: bool) -> list[str]:
    """The sequential pytest-benchmark run: every stage's host µs (and device µs against the floor) vs bs."""
    plt = _pyplot()
    made = []
    metrics = [("host_us", "host_us_vs_bs.png")] + ([("device_us", "device_us_vs_floor.png")] if gpu else [])
    d, ps = max(r["D"] for r in rows), max(r["page_size"] for r in rows)
    maxlens = sorted({r["maxlen"] for r in rows})
    missing = [s for s in stages.names() if s not in run_stages]
    for metric, name in metrics:
        fig, axes = plt.subplots(1, len(maxlens), figsize=(5.5 * len(maxlens) + 2.5, 4.4), sharey=True, squeeze=False)
        for ax, maxlen in zip(axes[0], maxlens):
            sel = [r for r in rows if r["D"] == d and r["page_size"] == ps and r["maxlen"] == maxlen]
            bss = [r["bs"] for r in sel]
            for impl in run_stages + ["upstream-static", "upstream-hostmax"]:
                if sel and all(impl in r for r in sel):
                    ax.plot(bss, [r[impl][metric] for r in sel], marker="o", label=op.label(impl))
            if metric == "host_us" and sel and all("nop-1" in r for r in sel):
                ax.plot(bss, [r["nop-1"]["host_us"] for r in sel], "k--", label=op.label("nop-1"))
            elif metric == "device_us":
                ax.plot(bss, [r["floor_us"] for r in sel], "k--", label="memory floor (bytes / copy bandwidth)")
            ax.set(xscale="log", yscale="log", xlabel="bs", title=f"D={d}, page {ps}, max length {maxlen}")
        what = "host µs of one call" if metric == "host_us" else "device µs of one call (CUDA events)"
        axes[0][0].set_ylabel(f"{what}, sequential median")
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
        finish(fig, folder / name, gpu, missing)
        made.append(name)
    return made


# -- the benchmark of record (record.json) ------------------------------------------------------------
KERNEL_IMPLS = (FINAL, "final-twin", "nop-args", "upstream-static", "upstream-hostmax")
LAUNCH_IMPLS = (FINAL, "upstream-static", "upstream-hostmax", "nop-args", "nop-1")


def spread_cell(x: dict | None, floor: float | None = None) -> str:
    if x is None:
        return "-"
    cell = f"{x['us']:.1f} [{x['q1']:.1f}, {x['q3']:.1f}]"
    return cell + (f" {x['us'] / floor:.2f}x" if floor else "")


def versus(ours: dict, theirs: dict | None) -> str:
    if theirs is None:
        return "-"
    return {-1: "faster", 1: "slower", 0: "not separated"}[separated(ours, theirs)]


def record_tables(rows: list[dict]) -> tuple[str, str, str]:
    """GPU µs of the final launch with its controls and peers; host µs of every stage's whole replay; host µs
    of the final launch beside upstream's bare call and the empty launches."""
    kernel, replay, launch = [], [], []
    names = stages.names()
    for r in rows:
        k, h = r["kernel"], r["host"]
        if k:
            kernel.append([r["id"], f"{r['floor_us']:.1f}",
                           *(spread_cell(k.get(i), None if i == "nop-args" else r["floor_us"]) for i in KERNEL_IMPLS),
                           versus(k[FINAL], k.get("upstream-static")), versus(k[FINAL], k.get("upstream-hostmax"))])
        replay.append([r["id"], *(spread_cell(h.get(s)) if s in h else "not in this run" for s in names)])
        nop = h.get("nop-args")
        launch.append([r["id"], *(spread_cell(h.get(i)) for i in LAUNCH_IMPLS),
                       f"{h[FINAL]['us'] / nop['us']:.2f}x" if nop and FINAL in h else "-",
                       versus(h[FINAL], h.get("upstream-static")) if FINAL in h else "-"])
    kernel_table = markdown_table(
        ["input", "floor", "final launch (x floor)", "final launch, table 2048 columns wider",
         "empty kernel, our arguments", "upstream as it ships", "upstream given the host max", "final vs as it ships",
         "final vs host max"], kernel, "lrrrrrrll") if kernel else "Not timed on this machine (GPU only)."
    replay_table = markdown_table(["input", *(op.stage_label(s) for s in names)], replay, "l" + "r" * len(names))
    launch_table = markdown_table(
        ["input", "final launch object", "upstream as it ships: bare call", "upstream given the host max: bare call",
         "empty kernel, our arguments", "empty launch, one argument", "launch / empty (our arguments)",
         "launch vs upstream as it ships"], launch, "lrrrrrrl")
    return kernel_table, replay_table, launch_table


def quotable(rows: list[dict]) -> str:
    """The few numbers the patch headers and the cover letter quote, all from this one record."""
    final = stages.final()
    timed = [r for r in rows if r["kernel"] and "nop-args" in r["host"] and final in r["host"]]
    if not timed:
        return "None: this record has no GPU timings."
    launch = [r["host"][FINAL]["us"] for r in timed]
    replay = [r["host"][final]["us"] for r in timed]
    vs_nop = [r["host"][FINAL]["us"] / r["host"]["nop-args"]["us"] for r in timed]
    big = [r for r in timed if r["floor_us"] >= 25]
    vs_floor = [r["kernel"][FINAL]["us"] / r["floor_us"] for r in big]
    lines = [f"eager replay of the final stage (whole backend call): {min(replay):.0f}-{max(replay):.0f} µs of host time;"
             f" its launch alone {min(launch):.0f}-{max(launch):.0f} µs, {min(vs_nop):.2f}-{max(vs_nop):.2f}x an empty"
             " launch with the same arguments"]
    if vs_floor:
        lines.append(f"kernel: {min(vs_floor):.2f}-{max(vs_floor):.2f}x the memory floor on the {len(big)} inputs whose"
                     " floor is >= 25 µs")
    ships = [r["kernel"]["upstream-static"]["us"] / r["kernel"][FINAL]["us"] for r in timed
             if "upstream-static" in r["kernel"]]
    if ships:
        lines.append(f"upstream 0.5.23's kernel as it ships takes {min(ships):.1f}-{max(ships):.1f}x our kernel's time"
                     f" (median {statistics.median(ships):.1f}x)")
    return bullets(lines)


def record_plots(rows: list[dict], folder: Path, gpu: bool) -> list[str]:
    """Median with quartile bars against bs over the run of record's bs sweep: every stage's whole replay
    (host), the final launch beside upstream's bare call and the empty launches (host), and GPU µs."""
    plt = _pyplot()
    family = bs_sweep(rows)
    if len(family) < 2:
        return []
    names = stages.names()
    title = f"D=4, page 64, {family[0]['maxlen']} long, table {family[0]['width']} wide (interleaved rounds)"
    made = []
    for metric, impls, name, ylabel in (
            ("host", names, "record_host_us.png", "host µs of the whole replay call"),
            ("host", LAUNCH_IMPLS, "record_launch_us.png", "host µs of one bare launch or call"),
            ("kernel", KERNEL_IMPLS, "record_kernel_us.png", "GPU µs of one launch (do_bench)")):
        sel = [r for r in family if r[metric]]
        if len(sel) < 2:
            continue
        fig, ax = plt.subplots(figsize=(9.5, 4.6))
        bss = [r["bs"] for r in sel]
        for impl in impls:
            if all(impl in r[metric] for r in sel):
                xs = [r[metric][impl] for r in sel]
                ax.errorbar(bss, [x["us"] for x in xs], yerr=[[x["us"] - x["q1"] for x in xs],
                                                              [x["q3"] - x["us"] for x in xs]],
                            marker="o", capsize=3, label=op.label(impl))
        if metric == "kernel":
            ax.plot(bss, [r["floor_us"] for r in sel], "k--", label="memory floor (bytes / copy bandwidth)")
        ax.set(xscale="log", yscale="log", xlabel="bs", ylabel=f"{ylabel}, median, quartile bars", title=title)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
        missing = [s for s in names if not all(s in r["host"] for r in sel)] if impls is names else []
        finish(fig, folder / name, gpu, missing)
        made.append(name)
    return made


# -- text -------------------------------------------------------------------------------------------
def fill(template: str, **fields) -> str:
    return Template((TEMPLATES / template).read_text()).substitute(fields)


def record_text(machine: str, record: dict | None, folder: Path) -> dict:
    """The REPORT.md fields the benchmark of record fills: targets, its tables and plots."""
    stage = stages.final()
    if record is None:
        missing = f"No `record.json` for {machine} yet: `python -m bench.record reports/{machine}/record.json` (GPU: `bench/gpu_run.sh`)."
        return dict(record_file="(no record.json)", record=missing, record_plots="", record_rows=[],
                    target_lines=bullets(judged("record", stage, None, f"no record.json for {machine}")))
    env = record["environment"]
    rows = [op.normalized(r, env["final_stage"]) for r in record["rows"]]
    if not env["comparable"]:
        targets = bullets(judged("record", stage, None, "timings on this machine are not comparable"))
    elif env["final_stage"] != stage:
        targets = bullets(judged("record", stage, None, f"record.json timed `{env['final_stage']}`, not the final stage"))
    else:
        targets = bullets(judged("record", stage, rows))
    kernel_table, replay_table, launch_table = record_tables(rows)
    text = fill("RECORD.md", **{k: env[k] for k in ("final_stage", "card", "torch", "triton", "kernel_rounds",
                                                   "host_rounds", "whole_upstream_replay")},
                kernel_table=kernel_table, replay_table=replay_table, launch_table=launch_table, quote=quotable(rows))
    plots = record_plots(rows, folder, bool(env["comparable"]))
    return dict(record_file="record.json", target_lines=targets, record=text.rstrip("\n"), record_rows=rows,
                record_plots="\n".join(f"![{p}]({p})" for p in plots))


def write(machine: str) -> Path:
    run, record = latest_run(machine), read_json(machine, "record.json")
    if run is None and record is None:
        raise SystemExit(f"reports/{machine} holds no saved run: on that machine `make report`, or on a GPU"
                         " `bench/gpu_run.sh OUT` and copy OUT/* into it")
    verdicts = read_json(machine, "verdicts.json")
    run_stages, rows = by_input(run) if run else ([], [])
    env = run["benchmarks"][0]["extra_info"] if run else record["environment"]
    gpu = bool(env["comparable"])
    folder = REPORTS / machine
    stale = staleness_text(machine)
    if stale:
        print(f"warning: reports/{machine}: {stale.strip()}", file=sys.stderr)
    stage_notes = "".join("\n" + (TEMPLATES / "stages" / f"{name}.md").read_text() for name in run_stages
                          if gpu and (TEMPLATES / "stages" / f"{name}.md").exists())
    record_fields = record_text(machine, record, folder)
    record_rows = record_fields.pop("record_rows")
    graph = read_json(machine, "graph_demo.json")
    if gpu and graph is not None:  # the in-graph target, judged on GRAPH.md's run
        record_fields["target_lines"] = (record_fields["target_lines"].rstrip("\n")
                                         + f"\n- {in_graph_line(graph['host'])} (`graph_demo.json`, GRAPH.md)")
    others = [i for i in ("upstream-static", "upstream-hostmax", "nop-1") if any(i in r for r in rows)]
    text = fill(
        "REPORT.md",
        card=env["card"], torch=env["torch"], triton=env["triton"], python=env["python"],
        run_file=run["_file"] if run else "no sequential run", version=run["version"] if run else "-", stale=stale,
        not_comparable="" if gpu else fill("not_comparable.md"),
        **record_fields,
        verdicts=verdict_text(verdicts, run_stages) if verdicts else "No `verdicts.json` for this machine yet.\n",
        modes=modes_text(machine),
        per_patch=per_patch_table(record_rows, run_stages, rows),
        device_heading=" / device µs" if gpu else "",
        inputs=inputs_table(run_stages + others, rows, gpu) if rows else "No sequential run saved for this machine.",
        gpu_sections=stage_notes,
        plots="\n".join(f"![{p}]({p})" for p in (plot(run_stages, rows, folder, gpu) if rows else [])),
    )
    (folder / "REPORT.md").write_text(text)
    return folder / "REPORT.md"


def in_graph_line(host: list[dict], limit_us: float = 2.0) -> str:
    """Issue 11's in-graph target: recorded step minus the metadata-free step of the same round (median
    over rounds), at every bs. Runs before the paired estimate: the difference of the two medians."""
    extra = {x["bs"]: x.get("in_graph_extra_us", x["in_graph_step_us"] - x["copies_and_replay_us"]) for x in host}
    worst = max(extra, key=extra.get)
    within = sum(v <= limit_us for v in extra.values())
    verdict = "met" if within == len(extra) else "MISSED"
    return (f"Target, the recorded step at most {limit_us:g} µs above the same graph without the metadata, at "
            f"every bs (median over rounds of the two steps' difference in the same round): {verdict} (worst "
            f"{extra[worst]:.1f} µs at bs {worst}; within the limit at {within} of {len(extra)} captured bs).")


def write_graph(machine: str) -> Path | None:
    """GRAPH.md from graph_demo.json, where a GPU run left one."""
    r = read_json(machine, "graph_demo.json")
    if r is None:
        return None
    config, names, b = r["config"], r["stages"], r["bit_exact"]
    host = [[x["bs"], *(f"{x[k]:.1f}" for k in ("input_copies_us", "copies_and_replay_us", "in_graph_step_us",
                                                   "eager_step_us", "empty_launch_us"))] for x in r["host"]]
    kernel = [[x["bs"], x["maxlen"], tuple(x["static_grid"]), f"{x['static_us']:.1f}", f"{x['eager_us']:.1f}",
               f"{x['ratio']:.2f}"] for x in r["kernel"]]
    extra = [x["copies_and_replay_us"] - x["input_copies_us"] for x in r["host"]]
    text = fill(
        "GRAPH.md",
        **r["env"], **names, draft=config["draft"], page_size=config["page_size"],
        capture_bs=", ".join(map(str, config["capture_bs"])), context=f"{config['context_len'] // 1024}k",
        replays=b["replays"], exact="**bit-exact**" if b["exact"] else f"DIFFERS: {b['mismatch']}",
        consumer_matches=b["consumer_matches"],
        host_table=markdown_table(["bs", "input copies alone", "step without metadata", "step, metadata recorded",
                                   f"eager {names['eager']} step", "empty Triton launch"], host, "rrrrrr"),
        extra_low=f"{min(extra):.0f}", extra_high=f"{max(extra):.0f}",
        kernel_table=markdown_table(["bs", "max length", "static grid", "static µs", f"{names['eager']} µs", "ratio"],
                                    kernel, "rrlrrr"),
        target_lines=" ".join(judged("graph_md", names["recorded"], r["kernel"])),
        in_graph_line=in_graph_line(r["host"]),
    )
    (REPORTS / machine / "GRAPH.md").write_text(text)
    return REPORTS / machine / "GRAPH.md"


STEP_VARIANTS = {"baseline": "baseline", "eager": "eager", "as_of_0008": "as of 0008", "recorded": "recorded",
                 "no_metadata": "no metadata"}
STEP_RUNNERS = {"target_verify": "target verify", "draft_extend": "draft extend", "draft": "draft (all steps)"}


def _spread(x: dict) -> str:
    return f"{x['median']:.1f} [{x['q1']:.1f}, {x['q3']:.1f}]"


def step_target_line(r: dict) -> str:
    """bench.spec_step's target, judged per runner at every bs: recorded minus no metadata, paired."""
    limit = r["config"]["target_us_per_runner"]
    extra = [(x["recorded_extra_per_runner"][p]["median"], x["bs"], p) for x in r["host"] for p in STEP_RUNNERS]
    over = [e for e in extra if e[0] > limit]
    worst = max(extra)
    verdict = "met" if not over else f"MISSED on {len(over)} of {len(extra)} (runner, bs)"
    return (f"Target, each runner's recorded share at most {limit:g} µs above the same runner over graphs holding no "
            f"metadata, at every bs: {verdict}; worst {worst[0]:.1f} µs ({STEP_RUNNERS[worst[2]]}, bs {worst[1]}).")


def step_where(r: dict) -> str:
    """What a recorded draft runner's replay does that a no-metadata one does not, timed alone."""
    rows = [[x["bs"], STEP_RUNNERS[kind], *(f"{w[v][k]:.2f}" for k in ("check_us", "graph_replay_us")
                                           for v in ("recorded", "no_metadata"))]
            for x in r["host"] if "where_the_extra_is" in x for kind, w in x["where_the_extra_is"].items()]
    if not rows:
        return ""
    return ("\nWhere a draft runner's recorded extra goes, each part timed alone (host µs, median of 200): the "
            "runner's `(bs, mode) in recorded_forward_metadata_cuda_graph` check, and `graph.replay()`.\n\n"
            + markdown_table(["bs", "runner", "check, recorded", "check, no metadata", "replay, recorded",
                              "replay, no metadata"], rows, "rlrrrr") + "\n")


def write_step(machine: str) -> Path | None:
    """STEP.md from spec_step.json, where a GPU run left one."""
    r = read_json(machine, "spec_step.json")
    if r is None:
        return None
    config, b = r["config"], r["bit_exact"]
    step_table = markdown_table(
        ["bs", *STEP_VARIANTS.values(), "recorded - no metadata"],
        [[x["bs"], *(_spread(x[v]) for v in STEP_VARIANTS), f"{x['recorded_extra']['median']:.1f}"] for x in r["host"]],
        "r" + "r" * (len(STEP_VARIANTS) + 1))
    runner_table = markdown_table(
        ["bs", "runner", *STEP_VARIANTS.values(), "recorded - no metadata"],
        [[x["bs"], name, *(f"{x['pieces'][v][p]['median']:.1f}" for v in STEP_VARIANTS),
          f"{x['recorded_extra_per_runner'][p]['median']:.1f}"] for x in r["host"] for p, name in STEP_RUNNERS.items()],
        "rl" + "r" * (len(STEP_VARIANTS) + 1))
    hashed = r["env"].get("series_hash", "")
    text = fill(
        "STEP.md", **{k: r["env"][k] for k in ("card", "torch", "triton")}, series_hash=hashed,
        stale="" if hashed == series_hash() else f"; **the series has changed since: {hashed} is not {series_hash()}**",
        num_steps=config["num_steps"], draft=config["draft"], page_size=config["page_size"],
        context=config["context_len"], max_len=config["max_len"], stage=config["stage"], rounds=config["rounds"],
        tv_replays=b["target_verify"]["replays"],
        tv_exact="bit-exact" if b["target_verify"]["exact"] else f"DIFFERS: {b['target_verify']['mismatch']}",
        **{f"{k}_{f}": b[name][f] for k, name in (("dx", "draft_extend"), ("dd", "draft"))
           for f in ("exact", "replays", "records")},
        step_table=step_table, runner_table=runner_table, target_line=step_target_line(r), where=step_where(r),
    )
    (REPORTS / machine / "STEP.md").write_text(text)
    return REPORTS / machine / "STEP.md"


def write_releases(machine: str) -> Path | None:
    """RELEASES.md from release_replay.json, where a GPU run left one."""
    r = read_json(machine, "release_replay.json")
    if r is None:
        return None
    env = r["environment"]

    def host(x: dict) -> str:
        return f"{x['us']:.1f} [{x['q1']:.1f}, {x['q3']:.1f}]"

    rows = [[version, x["mode"], x["bs"], host(x["host_us"]["unpatched"]), host(x["host_us"]["series"]),
             f"{x['syncs']['unpatched']} -> {x['syncs']['series']}", "yes" if x["exact"] else f"NO: {x['mismatch']}"]
            for version, xs in r["releases"].items() for x in xs]
    hashed = env.get("series_hash", "")
    text = fill(
        "RELEASES.md", **{k: env[k] for k in ("card", "torch", "triton", "deep_gemm")}, series_hash=hashed,
        stale="" if hashed == series_hash() else f"; **the series has changed since: {hashed} is not {series_hash()}**",
        table=markdown_table(["release", "mode", "bs", "unpatched µs", "series µs", "syncs", "buffers equal"], rows,
                             "llrrrrl"),
    )
    (REPORTS / machine / "RELEASES.md").write_text(text)
    return REPORTS / machine / "RELEASES.md"


def main(machines: list[str]) -> None:
    here = machine_name()
    if not machines:
        produce_missing(here)
        machines = sorted(p.parent.name for p in REPORTS.glob("*/benchmarks"))
    elif here in machines:
        produce_missing(here)
    for machine in machines:
        print(f"wrote {write(machine)}")
        for written in (write_graph(machine), write_step(machine), write_releases(machine)):
            if written:
                print(f"wrote {written}")


if __name__ == "__main__":
    main(sys.argv[1:])
