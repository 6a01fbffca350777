"""Where the fused-era kernel loses on the H200, and which of its knobs win (fused/patches/0001).

Each variant is the patched module's text with one or more exact edits (an edit that no longer finds
its text raises, so a variant never silently times the unchanged kernel); `v1` is the kernel as the
H100 run measured it (the patch of commit 82108f3), kept as a file because its text is not an edit
of today's. Every time is taken the way fused.gpu_check takes the benchmark of record: the launch
alone in a CUDA graph, `triton.testing.do_bench(graph.replay)` median (its L2 flush before every
replay), rounds interleaved in a fresh order. Beside it, labelled as such and never judged:
`per_launch_us`, 20 launches captured in one graph, the replay's median over 20 (the graph launch's
host and scheduling cost spread over 20; the L2 is warm after the first launch).

    .venv/bin/python -m notebook.fused_h200 prepare             (here: the variants into build/fused/exp/)
    python3 -m notebook.fused_h200 run OUT.json [--only A,B] [--no-equality]   (GPU host, build/ carried)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from fused import gpu_check, track

EXP = track.MODULE_CACHE / "exp"
V1_COMMIT = "82108f3"  # the kernel the H100 run measured
V2_COMMIT = "6cc1db7"  # run 1's base
PATCH = "fused/patches/0001-dsa-metadata-width-free-grid.patch"


def _const(name: str, old, new) -> tuple[str, str]:
    return (f"{name} = {old}\n", f"{name} = {new}\n")


STREAMING = [
    (
        "tokens = tl.load(src_row + cols * src_stride_1, mask=mask)",
        'tokens = tl.load(src_row + cols * src_stride_1, mask=mask, eviction_policy="evict_first")',
    ),
    (
        "            tokens.to(tl.int32),\n            mask=mask,\n        )",
        '            tokens.to(tl.int32),\n            mask=mask,\n            cache_modifier=".cs",\n        )',
    ),
]

# Run 1 (notebook/h200/fused_h200_run1.json) timed knob edits of the module as committed in 6cc1db7
# (`v2`: 4 programs per multiprocessor, 4 warps, 1024-column items, 256 requests per read):
# v2-p8, -p16, -w2-p8, -w1-p16, -w8, -n2048, -p8-n512, -stream (evict-first loads, .cs stores) and
# -reqs64. Run 2 times edits of today's module (8 programs per multiprocessor from 64 requests on,
# 4 below), two of them ablations that break the output and only locate the time.
NO_LENGTHS = [
    (
        "    if pid == 0:\n        if MODE == _DECODE:",
        "    if pid == 0:\n        return\n    if pid == -1:\n        if MODE == _DECODE:",
    )
]
NO_COPY = [("    while item < end:\n        n_rows", "    while item < end - (1 << 30):\n        n_rows")]
# Run 2's variants were edits of the module at that point (`v3`): -w2, -w1, -w2-full (8 programs
# per multiprocessor at every bs), -w2-scan128, -w2-reqs128, -w1-scan128, and the two ablations.
# Run 3 (with the run of record): today's module (`v4`: 2 warps, scans 32 wide up to 32 requests,
# no row scan where every request owns as many rows) and its copy ablated.
VARIANTS = {
    "v4": [],
    "v4-nocopy": NO_COPY,
}
ABLATIONS = ("v3-w2-nolengths", "v3-w2-nocopy", "v4-nocopy")

# (mode, bs, width, profile): the inputs where the H100 run missed a target, and its corners
INPUTS = [
    ("decode", 1, 163840, "all_le_4k"),
    ("target_verify", 1, 163840, "all_64k"),
    ("draft_extend", 1, 65600, "all_64k"),
    ("draft_extend", 8, 65600, "all_64k"),
    ("decode", 32, 163840, "all_le_4k"),
    ("target_verify", 32, 163840, "all_64k"),
    ("draft_extend", 256, 163840, "all_le_4k"),
    ("target_verify", 256, 163840, "all_le_4k"),
    ("decode", 256, 65600, "all_64k"),
    ("decode", 256, 163840, "uniform_1_160k"),
    ("draft_extend", 128, 163840, "all_64k"),
]
EMPTY_GRIDS = (529, 1057)
ROUNDS = 3
PER_GRAPH = 20


def variant_source(base: str, edits) -> str:
    for old, new in edits:
        if base.count(old) != 1:
            raise ValueError(f"variant edit does not apply: {old!r} found {base.count(old)} times")
        base = base.replace(old, new)
    return base


def prepare() -> list[Path]:
    import subprocess
    import tempfile

    EXP.mkdir(parents=True, exist_ok=True)
    current = track.patched_source()
    written = []
    for name, edits in VARIANTS.items():
        path = EXP / f"{name}.py"
        path.write_text(variant_source(current, edits))
        written.append(path)
    for name, commit in (("v1", V1_COMMIT), ("v2", V2_COMMIT)):
        old_patch = subprocess.run(["git", "show", f"{commit}:{PATCH}"], capture_output=True, text=True, check=True)
        with tempfile.TemporaryDirectory() as tmp:
            patch = Path(tmp) / "0001.patch"
            patch.write_text(old_patch.stdout)
            (EXP / f"{name}.py").write_text(track.patched_source([patch]))
        written.append(EXP / f"{name}.py")
    return written


def _graph(fn, n: int):
    fn()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(n):
            fn()
    return graph


def run(out: Path, only: list[str] | None, equality: bool) -> None:
    import triton
    import triton.testing

    names = list(VARIANTS)
    if only:
        names = [n for n in names if n in only]
    modules = {n: track.load((EXP / f"{n}.py").read_text(), f"exp_{n.replace('-', '_')}") for n in names}
    upstream = track.upstream_module(gpu_check.BENCH_VERSION, cpu=False)
    empty = gpu_check.make_empty_kernel()
    report = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
    started = time.monotonic()
    # Equality on the GPU for every variant, as gpu_check does for the patched kernel.
    if equality:
        checked = [(n, m, "physical_page_size") for n, m in modules.items() if n not in ABLATIONS]
        eq = gpu_check.check_equality("cuda", gpu_check.equality_cases(), checked)
        report["equality"] = {n: {"cases": r["cases"], "failures": r["failures"][:3]} for n, r in eq.items()}
    report["copy_bandwidth_Bps"] = bandwidth = gpu_check.copy_bandwidth()
    times: dict[str, dict[str, list[float]]] = {}
    floors = {}
    for round_ in range(ROUNDS):
        order = INPUTS[:]
        random.Random(round_).shuffle(order)
        for mode, bs, width, profile in order:
            seq = gpu_check.profile_lengths(profile, bs, width, random.Random(f"{mode}|{bs}|{width}|{profile}"))
            bench = gpu_check.Bench(mode, bs, width, seq, upstream, modules["v4"], empty)
            key = f"{mode}|{bs}|{width}|{profile}"
            floors[key] = bench.floor_bytes / bandwidth * 1e6
            launches = {
                "upstream_as_shipped": bench.launches["upstream_as_shipped"],
                "upstream_host_max": bench.launches["upstream_host_max"],
            }
            for n, m in modules.items():
                launches[n] = bench._call(m, width)
            pointers = (list(bench.inputs.values()) + list(bench.outputs.values())) * 2
            integers = [1] * 11 + [bs, bench.rows, width]
            for grid in EMPTY_GRIDS:
                launches[f"empty_{grid}"] = (
                    lambda grid=grid: empty[(grid,)](*pointers[:12], *integers)
                )
            entry = times.setdefault(key, {})
            order_impl = list(launches)
            random.Random(round_ * 7919 + bs).shuffle(order_impl)
            for name in order_impl:
                fn = launches[name]
                one = _graph(fn, 1)
                many = _graph(fn, PER_GRAPH)
                entry.setdefault(f"{name}/graph_us", []).append(
                    1e3 * triton.testing.do_bench(one.replay, warmup=3, rep=15, return_mode="median")
                )
                entry.setdefault(f"{name}/per_launch_us", []).append(
                    1e3 * triton.testing.do_bench(many.replay, warmup=3, rep=15, return_mode="median") / PER_GRAPH
                )
                del one, many
            del bench
        print(f"round {round_ + 1} at {time.monotonic() - started:.0f} s", flush=True)
    rows = []
    for key, entry in times.items():
        mode, bs, width, profile = key.split("|")
        row = {"mode": mode, "bs": int(bs), "width": int(width), "profile": profile, "floor_us": floors[key]}
        row.update({k: statistics.median(v) for k, v in entry.items()})
        rows.append(row)
    report["rows"] = rows
    report["total_s"] = time.monotonic() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    _table(report, names)


def _table(report: dict, names: list[str]) -> None:
    """graph_us per input: floor, bound, upstream host max, each variant (and the empty kernel)."""
    cols = ["floor", "bound", "up_hm", "e529"] + names
    print(" ".join(f"{c:>9}" for c in ["input"] + cols))
    for row in report["rows"]:
        bound = max(1.3 * row["floor_us"], row["floor_us"] + 6)
        vals = [row["floor_us"], bound, row["upstream_host_max/graph_us"], row["empty_529/graph_us"]]
        vals += [row[f"{n}/graph_us"] for n in names]
        tag = f"{row['mode'][:2]}{row['bs']}/{row['width'] // 1000}k/{row['profile'][:6]}"
        print(f"{tag:>9} " + " ".join(f"{v:9.2f}" for v in vals))
    print("empty kernel by grid (graph_us / per_launch_us), first input:")
    row = report["rows"][0]
    print({g: (round(row[f"empty_{g}/graph_us"], 2), round(row[f"empty_{g}/per_launch_us"], 2)) for g in EMPTY_GRIDS})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare")
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--only", default="")
    r.add_argument("--no-equality", action="store_true", help="time only (run 2: the final run checks equality)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        for path in prepare():
            print(path)
        return 0
    run(args.out, [n for n in args.only.split(",") if n] or None, not args.no_equality)
    return 0


if __name__ == "__main__":
    sys.exit(main())
