"""One whole speculative step's metadata work through the three stand-in graph runners (GPU): the
speculative view of bench.replay_operator (its GRAPH input; implementations by role; host µs per step).

    python3 -m bench.spec_step OUT.json [ROUNDS]     (after `make bench-prepare`; NSA_USE_BUILD=1)

A step on sglang with NSA and EAGLE/MTP (topk 1, 3 draft steps, D = 4) replays three graph runners, each
calling the attention backend's replay metadata before its graph replay unless the metadata is recorded:
the target-verify runner (the stage's stub CudaGraphRunner, harness.cuda_graph), the draft-extend runner
and the draft runner over NativeSparseAttnMultiStepBackend (the stage's stub runners, whose capture and
replay are sglang 0.5.6's own methods, executed by harness.spec_runners). The models are stand-ins
reading the metadata; every graph is a real CUDA graph.

Implementations (one row each, all timed in the same rounds, in a fresh random order every round, the
queue drained before each step, the cycle collector paused; median and quartiles of the rounds):
  baseline     sglang 0.5.6: every runner eager, the unfused replay
  eager        the whole series, every runner's metadata launched eagerly in its replay call
  as_of_0008   the series' target-verify runner records; draft extend and draft decode eager (the
               draft runners without their patches: their replay calls launch)
  recorded     all three runners record their metadata into their graphs
  no_metadata  the same three runners over graphs holding no metadata, no replay call either
recorded_extra: per round, recorded - no_metadata (paired), median; the target is <= 2 µs per runner
(TARGET_US_PER_RUNNER x 3) at every bs. Each runner's share of the step is timed inside the step
(no synchronize between runners) and reported beside it, with its own paired extra.
where_the_extra_is: per draft runner, the two things a recorded replay does that a no-metadata one
does not, timed alone: the runner's recorded-view check and the graph replay with the launches in it.
Before timing, the recorded runners are checked bit-exact against baseline's on whole buffers, every
replay (harness.spec_runners.compare_runners; bench.graph_demo's check for target verify).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from bench import replay_operator as op  # first: sets up the interpreter where there is no GPU

import torch  # noqa: E402

from bench import graph_demo  # noqa: E402
from bench.machine import environment  # noqa: E402
from bench.timing import gc_paused, shuffled_rounds  # noqa: E402
from harness import stages  # noqa: E402
from harness.cuda_graph import forward_batch, graph_runner  # noqa: E402
from harness.runner import Batch  # noqa: E402
from harness.scenarios import Scenario  # noqa: E402
from harness.spec_runners import RUNNERS, SpecRunner, Step, build_backend, compare_runners, stub_side  # noqa: E402

TARGET_US_PER_RUNNER = 2.0
NUM_STEPS = 3  # draft steps; D = NUM_STEPS + 1 = op.GRAPH["draft"]
CAPTURE_BS = (1, 4, 16, 32, 64, 128, 256)
VARIANTS = ("baseline", "eager", "as_of_0008", "recorded", "no_metadata")
PIECES = ("target_verify", "draft_extend", "draft")


def spec_runner(stage: str, kind: str, step: Step, device, **how) -> SpecRunner:
    """The stage's stub runner of `kind` over the stage's backend, captured; lean for timing."""
    source, name, module = stub_side(stage, kind)
    runner = SpecRunner(kind, source, name, module, build_backend(module, kind, step, device), step,
                        device=device, **how)
    runner.proxy.lean = True
    return runner


def setup(device, capture_bs=CAPTURE_BS, context=op.GRAPH["width"], pool_size=64) -> dict:
    final = stages.final()
    tv = graph_demo.setup(device, capture_bs, context, pool_size)  # baseline, recorded, unrecorded, consumer_only
    as_of_0008 = tv["scenario"].runner(stages.load(final), device)
    target = {
        "baseline": (tv["runners"]["baseline"], tv["graphs"]["baseline"]),
        "eager": (tv["runners"]["unrecorded"], tv["graphs"]["unrecorded"]),
        "as_of_0008": (as_of_0008, graph_runner(as_of_0008, record=True)),
        "recorded": (tv["runners"]["recorded"], tv["graphs"]["recorded"]),
        "no_metadata": (tv["runners"]["consumer_only"], tv["graphs"]["consumer_only"]),
    }
    step = Step(Scenario(num_draft_tokens=NUM_STEPS + 1, page_size=op.GRAPH["page_size"],
                         index_topk=op.GRAPH["topk"], context_len=context, capture_bs=tuple(capture_bs),
                         pool_size=pool_size, seed=3), num_steps=NUM_STEPS)
    how = {
        "baseline": (stages.BASELINE, {}),
        "eager": (final, {"offer_recorder": False}),
        "as_of_0008": (final, {"offer_recorder": False}),
        "recorded": (final, {}),
        "no_metadata": (final, {"metadata_free": True}),
    }
    spec = {v: {kind: spec_runner(stage, kind, step, device, **kw) for kind in RUNNERS} for v, (stage, kw) in how.items()}
    return {"tv": tv, "target": target, "spec": spec, "step": step, "stage": final}


def check_bit_exact(s: dict, device) -> dict:
    """Recorded against baseline on whole buffers after every replay: target verify through
    bench.graph_demo's check, the two draft runners through harness.spec_runners (their own step)."""
    out = {"target_verify": graph_demo.check_bit_exact(s["tv"], 2, device)}
    small = Step(Scenario(num_draft_tokens=NUM_STEPS + 1, page_size=op.GRAPH["page_size"], index_topk=op.GRAPH["topk"],
                          context_len=4096, capture_bs=(1, 7, 64), replays=6, seed=9), num_steps=NUM_STEPS)
    for kind in RUNNERS:
        sides = (stub_side(stages.BASELINE, kind), stub_side(s["stage"], kind))
        verdict = compare_runners(kind, *sides, small, device=device)
        out[kind] = {"records": verdict.records, "replays": verdict.replays, "exact": verdict.exact,
                     "failure": verdict.failure}
    return out


def make_batches(step: Step, bs: int, n: int, device, context: int, seed: int = 5) -> list[Batch]:
    """n batches of bs requests: lengths in [D, min(max_len, context - D)], accept lengths in [1, D]."""
    g = torch.Generator().manual_seed(seed + bs)
    d = step.num_draft_tokens
    top = min(op.GRAPH["max_len"], context - d)
    out = []
    for _ in range(n):
        pool = torch.randint(0, step.scenario.pool_size, (bs,), generator=g, dtype=torch.int32)
        lens = torch.randint(d, top + 1, (bs,), generator=g, dtype=torch.int32)
        accept = torch.randint(1, d + 1, (bs,), generator=g, dtype=torch.int32)
        out.append(Batch(pool.to(device), lens.to(device), accept.to(device)))
    return out


def spread(samples: list[float]) -> dict:
    return graph_demo.spread(samples)


def time_steps(s: dict, rounds: int, device, context: int) -> list[dict]:
    rows = []
    for bs in s["step"].scenario.capture_bs:
        batches = make_batches(s["step"], bs, 4, device, context)
        prepared = {}
        for v in VARIANTS:  # what the worker hands each runner, built before timing
            runner, _ = s["target"][v]
            prepared[v] = [
                (forward_batch(runner, b), s["spec"][v]["draft_extend"].forward_batch(b),
                 s["spec"][v]["draft"].forward_batch(b))
                for b in batches
            ]
        turn = dict.fromkeys(VARIANTS, 0)
        pieces = {v: {p: [] for p in PIECES} for v in VARIANTS}

        def step(v):
            turn[v] += 1
            tv_fb, dx_fb, dd_fb = prepared[v][turn[v] % len(prepared[v])]
            t0 = time.perf_counter()
            s["target"][v][1].replay(tv_fb)
            t1 = time.perf_counter()
            s["spec"][v]["draft_extend"].runner.replay(dx_fb)
            t2 = time.perf_counter()
            s["spec"][v]["draft"].runner.replay(dd_fb)
            t3 = time.perf_counter()
            for piece, us in zip(PIECES, ((t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6)):
                pieces[v][piece].append(us)

        for v in VARIANTS:  # one untimed step each
            step(v)
            graph_demo.sync(device)
        pieces = {v: {p: [] for p in PIECES} for v in VARIANTS}
        samples = {v: [] for v in VARIANTS}
        with gc_paused():
            for order in shuffled_rounds(list(VARIANTS), rounds):
                for v in order:
                    graph_demo.sync(device)
                    t0 = time.perf_counter()
                    step(v)
                    samples[v].append((time.perf_counter() - t0) * 1e6)
        graph_demo.sync(device)
        row = {"bs": bs, **{v: spread(samples[v]) for v in VARIANTS}}
        row["pieces"] = {v: {p: spread(pieces[v][p]) for p in PIECES} for v in VARIANTS}
        row["recorded_extra"] = spread([a - b for a, b in zip(samples["recorded"], samples["no_metadata"])])
        row["recorded_extra_per_runner"] = {
            p: spread([a - b for a, b in zip(pieces["recorded"][p], pieces["no_metadata"][p])]) for p in PIECES
        }
        row["where_the_extra_is"] = where_the_extra_is(s, bs, device)
        row["meets_target"] = all(
            row["recorded_extra_per_runner"][p]["median"] <= TARGET_US_PER_RUNNER for p in PIECES
        ) and row["recorded_extra"]["median"] <= TARGET_US_PER_RUNNER * len(PIECES)
        rows.append(row)
        print({"bs": bs, **{v: round(row[v]["median"], 1) for v in VARIANTS},
               "extra": round(row["recorded_extra"]["median"], 2)}, flush=True)
    return rows


def _median_us(fn, device, n: int = 200) -> float:
    samples = []
    for _ in range(n):
        graph_demo.sync(device)
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def where_the_extra_is(s: dict, bs: int, device) -> dict:
    """Recorded against no-metadata draft runners, split in the two things their replays do
    differently: the runner's `(bs, mode) in recorded_forward_metadata_cuda_graph` check (the
    backend's recorded view against a plain set) and the graph replay (with the metadata launches
    against without), each timed alone (host µs, median)."""
    out = {}
    for kind in RUNNERS:
        mode = s["spec"]["recorded"][kind].module.ForwardMode
        key = (bs, mode.DECODE if kind == "draft" else mode.DRAFT_EXTEND)
        out[kind] = {}
        for v in ("recorded", "no_metadata"):
            runner = s["spec"][v][kind]
            view = runner.proxy.recorded_forward_metadata_cuda_graph
            graph = runner.graphs[bs]
            out[kind][v] = {"check_us": _median_us(lambda: key in view, device),
                            "graph_replay_us": _median_us(graph.replay, device)}
    return out


def run(device, capture_bs=CAPTURE_BS, context=op.GRAPH["width"], rounds=300, pool_size=64) -> dict:
    s = setup(device, capture_bs, context, pool_size)
    result = {
        "config": {"capture_bs": list(capture_bs), "num_steps": NUM_STEPS, "draft": NUM_STEPS + 1,
                   "page_size": op.GRAPH["page_size"], "context_len": context, "max_len": op.GRAPH["max_len"],
                   "rounds": rounds, "target_us_per_runner": TARGET_US_PER_RUNNER, "stage": s["stage"]},
        "bit_exact": check_bit_exact(s, device),
    }
    print("bit-exact:", result["bit_exact"], flush=True)
    result["host"] = time_steps(s, rounds, device, context)
    result["target_met"] = all(r["meets_target"] for r in result["host"])
    return result


def main(out_path: str, rounds: int = 300) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench.spec_step needs a GPU (CUDA graphs); its CPU smoke test is in tests/test_spec_runners.py")
    result = {"env": environment("cuda"), **run("cuda", rounds=rounds)}
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
    print("recorded within 2 us per runner of no metadata at every bs:", result["target_met"], flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: python3 -m bench.spec_step OUT.json [ROUNDS]")
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
