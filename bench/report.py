"""reports/<machine>/REPORT.md (and GRAPH.md) and the plots: saved data -> tables -> text.

    python -m bench.report [MACHINE ...]      (default: every reports/<machine>/ holding a run)

Data, read here and never computed: the machine's latest pytest-benchmark run
(reports/<machine>/benchmarks/, `make bench`), verdicts.json (`python -m bench.gpu_verdicts`),
graph_demo.json (`python -m bench.graph_demo`) and NOTES.md. For the machine this runs on, a missing
run or verdicts.json is produced first, by those same commands. Targets: bench/targets.toml, judged
on the final stage of the series. Text: bench/templates/*.md, filled with the tables built here.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path
from string import Template

from bench.machine import machine_name
from harness import stages

REPORTS = Path(__file__).resolve().parents[1] / "reports"
TEMPLATES = Path(__file__).resolve().parent / "templates"
TARGETS = Path(__file__).resolve().parent / "targets.toml"
PEER, FLOOR = "upstream-0.5.23", "empty-launch"


# -- data -------------------------------------------------------------------------------------------
def produce_missing(machine: str) -> None:
    """On the machine itself: run the benchmark suite and the verdicts where their files are missing."""
    folder = REPORTS / machine
    if not list(folder.glob("benchmarks/*/*.json")):
        subprocess.run([sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", "--benchmark-enable",
                        "--benchmark-only", f"--benchmark-storage={folder / 'benchmarks'}",
                        f"--benchmark-save={machine}"], check=True)
    if not (folder / "verdicts.json").exists():
        subprocess.run([sys.executable, "-m", "bench.gpu_verdicts", str(folder / "verdicts.json")], check=True)


def latest_run(machine: str) -> dict:
    runs = sorted((REPORTS / machine / "benchmarks").glob("*/*.json"), key=lambda p: p.name)
    if not runs:
        raise FileNotFoundError(f"no pytest-benchmark run under reports/{machine}/benchmarks: run `make bench` first")
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
        row[x["impl"]] = {"host_us": b["stats"]["median"] * 1e6, **x}
        if x["role"] in ("baseline", "stage") and x["impl"] not in run_stages:
            run_stages.append(x["impl"])
    # first appearance is series order: pytest ran the stages that way, baseline first
    return run_stages, [rows[k] for k in sorted(rows)]


# -- targets (bench/targets.toml): each measure returns the numbers its text quotes, None if no input applies
def host_vs_empty_launch(target: dict, stage: str, rows: list[dict]) -> dict:
    worst = max(r[stage]["host_us"] / r[FLOOR]["host_us"] for r in rows)
    return {"worst": worst, "met": worst <= target["limit"]}


def device_vs_floor(target: dict, stage: str, rows: list[dict]) -> dict | None:
    big = [r for r in rows if r["bs"] >= target["min_bs"] and r["maxlen"] >= target["min_maxlen"]]
    if not big:
        return None
    worst = max(r[stage]["device_us"] / r["floor_us"] for r in big)
    return {"worst": worst, "met": worst <= target["limit"]}


def beats_upstream(target: dict, stage: str, rows: list[dict]) -> dict | None:
    with_peer = [r for r in rows if PEER in r]
    if not with_peer:
        return None
    return {
        "configs": len(with_peer),
        "host_wins": sum(r[stage]["host_us"] < r[PEER]["host_us"] for r in with_peer),
        "device_wins": sum(r[stage]["device_us"] < r[PEER]["device_us"] for r in with_peer),
    }


def static_grid_vs_eager(target: dict, stage: str, rows: list[dict]) -> dict:
    worst = max(r["ratio"] for r in rows if r["maxlen"] == target["maxlen"])
    return {"worst": worst, "met": worst <= target["limit"]}


MEASURES = {f.__name__: f for f in (host_vs_empty_launch, device_vs_floor, beats_upstream, static_grid_vs_eager)}


def judged(section: str, stage: str, rows: list[dict]) -> list[str]:
    lines = []
    for target in tomllib.loads(TARGETS.read_text())[section]:
        numbers = MEASURES[target["measure"]](target, stage, rows)
        if numbers is not None:
            verdict = {"verdict": "met" if numbers.get("met") else "MISSED"}
            lines.append(target["text"].format(**target, **numbers, **verdict, stage=stage))
    return lines


# -- tables -----------------------------------------------------------------------------------------
def markdown_table(header: list[str], rows: list[list], align: str = "") -> str:
    """`align`: one letter a column, l or r (default: all unaligned)."""
    rule = [{"l": "---", "r": "---:"}[a] for a in align] if align else ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "".join(f"{r}|" for r in rule)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def per_patch_table(run_stages: list[str], rows: list[dict]) -> str:
    biggest = max(rows, key=lambda r: r["bs"])
    body = []
    for i, stage in enumerate(run_stages):
        vs_prev = statistics.median(r[run_stages[i - 1]]["host_us"] / r[stage]["host_us"] for r in rows) if i else None
        vs_base = statistics.median(r[stages.BASELINE]["host_us"] / r[stage]["host_us"] for r in rows)
        c = biggest[stage]
        body.append([stage, "" if vs_prev is None else f"{vs_prev:.2f}x", f"{vs_base:.2f}x", c["device_kernels"],
                     c["triton_launches"]])
    return markdown_table(["stage", "vs previous", "vs baseline", "device aten kernels", "Triton launches"], body, "lrrrr")


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
    return markdown_table(["bs", "D", "ps", "maxlen", *impls] + (["floor"] if gpu else []), body)


def bullets(lines) -> str:
    return "\n".join(f"- {line}" for line in lines)


def verdict_text(verdicts: dict, run_stages: list[str]) -> str:
    env = verdicts["env"]
    counts = []
    for stage in run_stages[1:]:
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


def plot(run_stages: list[str], rows: list[dict], folder: Path, gpu: bool) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    metrics = [("host_us", "host_us_vs_bs.png")] + ([("device_us", "device_us_vs_floor.png")] if gpu else [])
    d, ps = max(r["D"] for r in rows), max(r["page_size"] for r in rows)
    maxlens = sorted({r["maxlen"] for r in rows})
    for metric, name in metrics:
        fig, axes = plt.subplots(1, len(maxlens), figsize=(5.5 * len(maxlens), 4), sharey=True, squeeze=False)
        for ax, maxlen in zip(axes[0], maxlens):
            sel = [r for r in rows if r["D"] == d and r["page_size"] == ps and r["maxlen"] == maxlen]
            bss = [r["bs"] for r in sel]
            for impl in run_stages + [PEER]:
                if all(impl in r for r in sel):
                    ax.plot(bss, [r[impl][metric] for r in sel], marker="o", label=impl)
            if metric == "host_us":
                ax.plot(bss, [r[FLOOR]["host_us"] for r in sel], "k--", label="empty Triton launch")
            else:
                ax.plot(bss, [r["floor_us"] for r in sel], "k--", label="memory floor")
            ax.set(xscale="log", yscale="log", xlabel="bs", title=f"D={d} page_size={ps} maxlen={maxlen}")
        axes[0][0].set_ylabel(f"{metric.removesuffix('_us')} µs per replay (median)")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        made.append(name)
    return made


# -- text -------------------------------------------------------------------------------------------
def fill(template: str, **fields) -> str:
    return Template((TEMPLATES / template).read_text()).substitute(fields)


def judged_stage(run_stages: list[str]) -> tuple[str, str]:
    """The final stage of the series, or the run's last where the run predates it (said in the text)."""
    final = stages.final()
    if final in run_stages:
        return final, ""
    return run_stages[-1], f"Judged on `{run_stages[-1]}`: the final stage `{final}` is not in this run.\n\n"


def write(machine: str) -> Path:
    run = latest_run(machine)
    verdicts = read_json(machine, "verdicts.json")
    run_stages, rows = by_input(run)
    env = run["benchmarks"][0]["extra_info"]
    gpu = bool(env["comparable"])
    folder = REPORTS / machine
    gpu_sections = ""
    if gpu:
        stage, caveat = judged_stage(run_stages)
        gpu_sections = fill("targets.md", target_lines=caveat + bullets(judged("report_md", stage, rows)))
        for name in run_stages:
            note = TEMPLATES / "stages" / f"{name}.md"
            if note.exists():
                gpu_sections += "\n" + note.read_text()
        notes = folder / "NOTES.md"
        if notes.exists():
            gpu_sections += "\n" + notes.read_text().strip() + "\n"
    text = fill(
        "REPORT.md",
        card=env["card"], torch=env["torch"], triton=env["triton"], python=env["python"],
        run_file=run["_file"], version=run["version"],
        not_comparable="" if gpu else fill("not_comparable.md"),
        verdicts=verdict_text(verdicts, run_stages) if verdicts else "No `verdicts.json` for this machine yet.\n",
        per_patch=per_patch_table(run_stages, rows),
        device_heading=" / device µs" if gpu else "",
        inputs=inputs_table(run_stages + [PEER, FLOOR], rows, gpu),
        gpu_sections=gpu_sections,
        plots="\n".join(f"![{p}]({p})" for p in plot(run_stages, rows, folder, gpu)),
    )
    (folder / "REPORT.md").write_text(text)
    return folder / "REPORT.md"


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
        host_table=markdown_table(["bs", "input copies alone", "copies + `replay()`",
                                   "copies + backend replay call + `replay()`", f"eager {names['eager']} step",
                                   "empty Triton launch"], host, "rrrrrr"),
        extra_low=f"{min(extra):.0f}", extra_high=f"{max(extra):.0f}",
        kernel_table=markdown_table(["bs", "max length", "static grid", "static µs", f"{names['eager']} µs", "ratio"],
                                    kernel, "rrlrrr"),
        target_lines=" ".join(judged("graph_md", names["recorded"], r["kernel"])),
    )
    (REPORTS / machine / "GRAPH.md").write_text(text)
    return REPORTS / machine / "GRAPH.md"


def main(machines: list[str]) -> None:
    here = machine_name()
    if not machines:
        produce_missing(here)
        machines = sorted(p.parent.name for p in REPORTS.glob("*/benchmarks"))
    elif here in machines:
        produce_missing(here)
    for machine in machines:
        print(f"wrote {write(machine)}")
        if graph := write_graph(machine):
            print(f"wrote {graph}")


if __name__ == "__main__":
    main(sys.argv[1:])
