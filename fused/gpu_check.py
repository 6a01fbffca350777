"""The fused track on a GPU: equality per release, then the benchmark of record. One JSON out.

Here (with the wheels and git):   python -m fused.gpu_check prepare
  copies every release's fused metadata module and the patched base into build/fused/.
On the GPU host (torch + triton, build/ carried, no git, no network):
  python -m fused.gpu_check run --out reports/<machine>/fused.json

1. Equality, compiled: for every release, upstream's own kernels (as shipped, asserts included)
   and the patched kernels are checked against the eager reference (fused/reference.py) on the
   contract, whole buffers (page tables: upstream on the live prefix, ours whole, sentinel past it).
2. Benchmark: decode, target verify (D=4) and draft extend (D=4, static), page 64; upstream 0.5.23
   as it ships (max = the table width), upstream given a host max (max = the longest live row: a
   sync upstream cannot ship), the patched kernels; bs 1..256, widths 65600 and 163840, four length
   profiles; rounds interleaved; each launch timed bare and replayed from a CUDA graph holding only
   it (triton.testing.do_bench medians); the live-prefix floor (bytes / the copy bandwidth measured
   in the same run) and an empty kernel taking the patched launch's arguments and grid.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from fused import cases, track
from fused.cases import Case

BENCH_VERSION = "0.5.23"
BS_LIST = (1, 8, 32, 64, 128, 256)
WIDTHS = (65600, 163840)
PROFILES = ("all_64k", "uniform_1_160k", "one_160k_rest_1_4k", "all_le_4k")
DRAFT = 4
PAGE = 64
ROUNDS = 3


# --- 1. equality ---------------------------------------------------------------------------------


def equality_cases() -> list[Case]:
    """bs 0 - 256 at narrow widths, few rows at 65600, 163840 and 1,000,003; page 1 and 64."""
    out = []
    rng = random.Random(0)
    edges = [0, 1, 63, 64, 65, 127, 128, 129, 191, 192, 193]
    for bs, width in ((0, 193), (1, 193), (7, 193), (128, 193), (256, 193), (1, 65600), (7, 65600)):
        seq = tuple(min(rng.choice(edges + [rng.randint(1, width)]), width) for _ in range(bs))
        for page_size in (1, 64):
            next_n = 1 + bs % 8
            out.append(Case("decode", seq, width, page_size=page_size))
            out.append(Case("target_verify", seq, width, page_size=page_size, next_n=next_n, paged_mqa_ctx_lens=True))
            extend = tuple(rng.randint(0, DRAFT) for _ in range(bs))
            out.append(Case("draft_extend", seq, width, page_size=page_size, next_n=DRAFT, extend_lens=extend))
            out.append(
                Case(
                    "draft_extend",
                    seq,
                    width,
                    page_size=page_size,
                    next_n=DRAFT,
                    extend_lens=(DRAFT,) * bs,
                    static_extend_len=True,
                )
            )
        out.append(Case("decode", seq, width, page_table_1=False))
    for width in (163840, 1_000_003):
        for next_n in range(1, 9) if width == 163840 else (1, 8):
            seq = (width - next_n, 129, width // 2)
            out.append(Case("target_verify", seq, width, next_n=next_n, paged_mqa_ctx_lens=True))
        out.append(Case("decode", (width, 64), width))
        out.append(Case("draft_extend", (width, 1, 300), width, next_n=DRAFT, extend_lens=(3, 4, 0)))
    return out


def implementations(cpu: bool) -> list[tuple[str, object, str]]:
    """(name, module, page-size parameter): every release's upstream module, then the patched one."""
    found = [(v, track.upstream_module(v, cpu=cpu), track.page_size_arg(v)) for v in track.versions()]
    return found + [("patched", track.patched_module(cpu=cpu), "physical_page_size")]


def check_equality(device: str, case_list: list[Case], modules: list[tuple[str, object, str]]) -> dict:
    """Each case's inputs and reference once; every implementation on fresh sentinel buffers."""
    results = {name: {"cases": 0, "failures": []} for name, _, _ in modules}
    for case in case_list:
        inputs, outputs = cases.make_inputs(case)
        want = cases.expected(case, inputs, outputs)
        on_device = {k: v.to(device) for k, v in inputs.items()}
        for name, module, arg in modules:
            fresh = {k: (None if v is None else cases.to_device(v, device)) for k, v in outputs.items()}
            results[name]["cases"] += 1
            try:
                cases.call(module, case, on_device, fresh, arg)
                cases.check(case, fresh, want, live_prefix_only=name != "patched")
            except AssertionError as error:
                results[name]["failures"].append(str(error)[:300])
    for name, result in results.items():
        print(f"equality {name}: {result['cases'] - len(result['failures'])} of {result['cases']} equal", flush=True)
    return results


# --- 2. benchmark --------------------------------------------------------------------------------


def profile_lengths(profile: str, bs: int, width: int, rng: random.Random) -> list[int]:
    top = width - DRAFT  # verify reads seq + D columns
    if profile == "all_64k":
        return [min(65536, top)] * bs
    if profile == "uniform_1_160k":
        return [rng.randint(1, min(160_000, top)) for _ in range(bs)]
    if profile == "one_160k_rest_1_4k":
        return [min(160_000, top)] + [rng.randint(1, 4096) for _ in range(bs - 1)]
    return [rng.randint(1, 4096) for _ in range(bs)]


class Bench:
    """The buffers of one (mode, bs, width, profile) input, and a launch per implementation."""

    def __init__(self, mode, bs, width, seq, upstream, ours, empty_kernel, dev="cuda"):
        self.mode, self.bs, self.width, self.seq = mode, bs, width, seq
        rows = bs * DRAFT if mode != "decode" else bs
        self.rows = rows
        pool = bs + 1
        self.inputs = {
            "seq_lens": torch.tensor(seq, dtype=torch.int64, device=dev),
            "req_pool_indices": torch.arange(bs, dtype=torch.int64, device=dev),
            "req_to_token": torch.randint(0, 1 << 24, (pool, width), dtype=torch.int32, device=dev),
        }
        if mode == "draft_extend":
            self.inputs["extend_seq_lens"] = torch.full((bs,), DRAFT, dtype=torch.int32, device=dev)
        i32 = dict(dtype=torch.int32, device=dev)
        self.outputs = {
            "cache_seqlens": torch.zeros(bs, **i32),
            "cu_seqlens_k": torch.zeros(bs + 1, **i32),
            "dsa_cache_seqlens": torch.zeros(rows, **i32),
            "dsa_cu_seqlens_k": torch.zeros(rows + 1, **i32),
            "page_table_1": torch.zeros(rows, width, **i32),
            "real_page_table": torch.zeros(rows, width // PAGE + 1, **i32),
        }
        if mode != "decode":
            self.outputs["seqlens_expanded"] = torch.zeros(rows, **i32)
        kv = [s + (DRAFT if mode == "target_verify" else 0) for s in seq]
        host_max = min(max(kv), width)
        self.launches = {
            "upstream_as_shipped": self._call(upstream, width),
            "upstream_host_max": self._call(upstream, host_max),
            "ours": self._call(ours, width),
        }
        self.launches["empty_kernel"] = self._empty(ours, empty_kernel)
        # The live prefix: its req_to_token row read once, written to each of the request's rows of
        # page_table_1 and (a page id per page) real_page_table.
        rows_per_req = 1 if mode == "decode" else DRAFT
        live = [min(k, width) for k in kv]
        pages = [-(-n // PAGE) for n in live]
        self.floor_bytes = 4 * sum(n + rows_per_req * (n + p) for n, p in zip(live, pages))

    def _call(self, module, max_len: int):
        case = Case(
            self.mode,
            tuple(self.seq),
            max_len,
            page_size=PAGE,
            next_n=DRAFT,
            extend_lens=(DRAFT,) * self.bs,
            static_extend_len=True,
        )
        return lambda: cases.call(module, case, self.inputs, self.outputs, "physical_page_size")

    def _empty(self, ours, empty_kernel):
        grid = ours._grid(self.inputs["seq_lens"].device, self.bs)
        pointers = (list(self.inputs.values()) + list(self.outputs.values())) * 2
        integers = [1] * 11 + [self.bs, self.rows, self.width]
        return lambda: empty_kernel[grid](*pointers[:12], *integers)


def make_empty_kernel():
    import triton

    # As many arguments as the patched kernel's runtime ones: 12 pointers, 14 integers.
    @triton.jit(do_not_specialize=["i11", "i12", "i13"])
    def _empty(p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11,
               i0, i1, i2, i3, i4, i5, i6, i7, i8, i9, i10, i11, i12, i13):  # fmt: skip
        pass

    return _empty


def graph_of(fn):
    fn()  # compiled and warm before capture
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def copy_bandwidth() -> float:
    """Bytes per second of a device-to-device copy (read plus write), 1 GiB."""
    import triton.testing

    src = torch.empty(1 << 28, dtype=torch.int32, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=10, rep=100, return_mode="median")
    return 2 * src.numel() * 4 / (ms * 1e-3)


def benchmark(budget_s: float) -> dict:
    import triton.testing

    upstream = track.upstream_module(BENCH_VERSION, cpu=False)
    ours = track.patched_module(cpu=False)
    empty_kernel = make_empty_kernel()
    bandwidth = copy_bandwidth()
    rng = random.Random(0)
    inputs = []
    for width in WIDTHS:
        for profile in PROFILES:
            for bs in BS_LIST:
                seq = profile_lengths(profile, bs, width, rng)
                for mode in cases.MODES:
                    inputs.append((mode, bs, width, profile, seq))
    times = {}  # key -> {impl/kind: [median per round]}
    start = time.monotonic()
    for round_ in range(ROUNDS):
        # Inputs, and implementations within an input, in a new order each round.
        order = inputs[:]
        random.Random(round_).shuffle(order)
        for mode, bs, width, profile, seq in order:
            if time.monotonic() - start > budget_s:
                print(f"benchmark: time budget reached in round {round_}", flush=True)
                break
            bench = Bench(mode, bs, width, seq, upstream, ours, empty_kernel)
            key = f"{mode}|{bs}|{width}|{profile}"
            entry = times.setdefault(key, {"floor_bytes": bench.floor_bytes})
            names = list(bench.launches)
            random.Random(round_ * 7919 + bs).shuffle(names)
            for name in names:
                fn = bench.launches[name]
                graph = graph_of(fn)
                entry.setdefault(f"{name}/bare_us", []).append(
                    1e3 * triton.testing.do_bench(fn, warmup=3, rep=15, return_mode="median")
                )
                entry.setdefault(f"{name}/graph_us", []).append(
                    1e3 * triton.testing.do_bench(graph.replay, warmup=3, rep=15, return_mode="median")
                )
                del graph
            del bench
        print(f"benchmark: round {round_ + 1} done at {time.monotonic() - start:.0f} s", flush=True)
    rows = []
    for key, entry in times.items():
        mode, bs, width, profile = key.split("|")
        row = {"mode": mode, "bs": int(bs), "width": int(width), "profile": profile}
        row["floor_us"] = entry["floor_bytes"] / bandwidth * 1e6
        for name, values in entry.items():
            if name != "floor_bytes":
                row[name] = statistics.median(values)
                row[name.replace("_us", "_rounds")] = len(values)
        rows.append(row)
    return {"copy_bandwidth_Bps": bandwidth, "draft": DRAFT, "page_size": PAGE, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="copy the modules into build/fused/ (needs the wheels and git)")
    run = sub.add_parser("run", help="equality and benchmark on a GPU")
    run.add_argument("--out", required=True, type=Path)
    run.add_argument("--bench-budget-s", type=float, default=330.0)
    run.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        for path in track.prepare_build():
            print(path)
        return 0
    if not torch.cuda.is_available():
        print("fused.gpu_check run needs a CUDA device; on CPU run the tests: pytest tests/test_fused_track.py")
        return 2
    import triton

    report = {
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "patched_sha256": (
            track._sha256(track.PREPARED_PATCHED.read_text()) if track.PREPARED_PATCHED.exists() else None
        ),
    }
    started = time.monotonic()
    report["equality"] = check_equality("cuda", equality_cases(), implementations(cpu=False))
    report["equality_s"] = time.monotonic() - started
    if not args.skip_bench:
        # The whole run stays under 8 minutes: the benchmark gets what equality left of 7.5.
        report["benchmark"] = benchmark(min(args.bench_budget_s, 450 - report["equality_s"]))
    report["total_s"] = time.monotonic() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    differing = {v: len(r["failures"]) for v, r in report["equality"].items() if r["failures"]}
    print(f"wrote {args.out}; releases with differences: {differing or 'none'}")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
