"""The final stage's metadata recorded into sglang's CUDA graphs by the patched graph runner (GPU): the graph
runner's view of bench.replay_operator (its GRAPH input; baseline, the final stage and a metadata-free
control as implementations; host µs per step and GPU µs as metrics).

    python3 -m bench.graph_demo OUT.json          (after `python -m harness build`; NSA_USE_BUILD=1)

Every graph is captured and replayed by the stage's stub of sglang's CudaGraphRunner
(harness.cuda_graph.graph_runner): per captured bs the backend's capture, two warm-up runs, the
capture; per step replay_prepare (input copies, the backend's replay call) and replay(). The model
is a consumer reading page_table_1, real_page_table and nsa_cache_seqlens_int32. D=4, page 64, a
163840-wide table, sglang's speculative capture list up to 256, lengths uniform in [1, 64k].

1. bit_exact: recorded replays against eager baseline replays through the same runner, whole
   buffers of every captured graph after every step, and the consumer's output.
2. host: µs per step, interleaved rounds (recorded, unrecorded, baseline, consumer_only, copies,
   in a fresh random order every round, the cycle collector paused), median and IQR: recorded = the final stage with its metadata in
   the graph (replay_prepare skips the backend's replay call); unrecorded = the same stage and graphs
   without it (eager launch in replay_prepare); baseline = sglang 0.5.6; consumer_only = the same
   runner's step over graphs holding the consumer alone, no backend replay call either
   (harness.cuda_graph.metadata_free_graph_runner); copies = the input copies alone.
   in_graph_extra_us = the median over rounds of recorded - consumer_only in the same round (the
   target: <= 2 µs at every bs); unpaired_extra_us, the difference of the two medians, is kept beside it.
3. kernel: GPU µs of the static-grid launch against the stage before it (bs 1/32/128).
"""

from __future__ import annotations

import bisect
import json
import statistics
import sys
import time

from bench import replay_operator as op  # first: sets up the interpreter where there is no GPU

import torch  # noqa: E402

from bench.machine import environment  # noqa: E402
from bench.peers import empty_launch  # noqa: E402
from bench.timing import captured_launch, gc_paused, interleaved_kernel_us, shuffled_rounds  # noqa: E402
from harness import stages  # noqa: E402
from harness.compare import captured_state, first_mismatch  # noqa: E402
from harness.cuda_graph import (  # noqa: E402
    RECORDER,
    forward_batch,
    graph_runner,
    metadata_free_graph_runner,
    recorded_against,
)
from harness.runner import Batch  # noqa: E402
from harness.scenarios import Scenario  # noqa: E402

# The graph runner's input, from the operator's registry: sglang's speculative capture list up to 256,
# the 163840-wide table (the page table's width), lengths uniform in [1, MAX_LEN].
CAPTURE_BS, CONTEXT, MAX_LEN = op.GRAPH["capture_bs"], op.GRAPH["width"], op.GRAPH["max_len"]
DRAFT, PAGE, TOPK = op.GRAPH["draft"], op.GRAPH["page_size"], op.GRAPH["topk"]
ALLOWED_EXTRA_US = 2.0  # the target: the recorded metadata costs at most this much host time per step
VARIANTS = ("recorded", "unrecorded", "baseline", "consumer_only", "copies")


def recording_stage() -> str:
    """The first stage whose backend can record its metadata."""
    for name in stages.patched():
        backend = stages.load(name).NativeSparseAttnBackend
        if hasattr(backend, RECORDER):
            return name
    raise LookupError("no stage of the series offers a metadata recorder")


def make_batches(scenario: Scenario, bs: int, n: int, device, seed: int = 5) -> list[Batch]:
    g = torch.Generator().manual_seed(seed + bs)
    top = min(MAX_LEN, scenario.context_len - scenario.num_draft_tokens)
    return [
        Batch(torch.randint(0, scenario.pool_size, (bs,), generator=g, dtype=torch.int32).to(device),
              torch.randint(1, top + 1, (bs,), generator=g, dtype=torch.int32).to(device))
        for _ in range(n)
    ]


def setup(device, capture_bs=CAPTURE_BS, context=CONTEXT, pool_size=64, stage=None) -> dict:
    """Runners (harness GraphRunner) and their stub CudaGraphRunners for every compared variant."""
    final = stage or stages.final()
    scenario = Scenario(num_draft_tokens=DRAFT, page_size=PAGE, index_topk=TOPK, context_len=context,
                        capture_bs=tuple(capture_bs), pool_size=pool_size, seed=3)
    runners = {
        "baseline": scenario.runner(stages.load(stages.BASELINE), device),
        "recorded": scenario.runner(stages.load(final), device),
        "unrecorded": scenario.runner(stages.load(final), device),
        "consumer_only": scenario.runner(stages.load(final), device),
    }
    baseline_graphs, recorded_graphs = recorded_against(runners["baseline"], runners["recorded"])
    graphs = {
        "baseline": baseline_graphs,
        "recorded": recorded_graphs,
        "unrecorded": graph_runner(runners["unrecorded"], record=False),
        "consumer_only": metadata_free_graph_runner(runners["consumer_only"]),
    }
    return {"scenario": scenario, "stage": final, "runners": runners, "graphs": graphs}


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def check_bit_exact(s: dict, steps_per_bs: int, device) -> dict:
    """Recorded replays against baseline's, whole buffers and the consumer's output, after every step."""
    ref, got = s["runners"]["baseline"], s["runners"]["recorded"]
    ref_graphs, got_graphs = s["graphs"]["baseline"], s["graphs"]["recorded"]
    replays, mismatch, consumed = 0, None, True
    for bs in s["scenario"].capture_bs:
        for raw_bs in sorted({bs, max(1, bs - 1)}):  # exact and padded batches
            for batch in make_batches(s["scenario"], raw_bs, steps_per_bs, device, seed=11):
                expected = ref_graphs.replay(forward_batch(ref, batch))
                actual = got_graphs.replay(forward_batch(got, batch))
                sync(device)
                replays += 1
                consumed &= int(expected) == int(actual)
                found = first_mismatch(captured_state(ref.backend), captured_state(got.backend))
                if found is not None:
                    mismatch = f"step {replays} (raw bs {raw_bs}): {found}"
                    return {"replays": replays, "exact": False, "mismatch": mismatch, "consumer_matches": consumed}
    return {"replays": replays, "exact": True, "mismatch": None, "consumer_matches": consumed}


def spread(samples: list[float]) -> dict:
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3, "iqr": q3 - q1}


def step_functions(s: dict, bs: int, fbs: dict) -> dict:
    """Per variant, one step over the batches of `fbs[variant]` in turn (they are all raw bs == bs)."""
    graphs = s["graphs"]
    unrecorded = graphs["unrecorded"]
    turn = {name: 0 for name in VARIANTS}

    def nxt(name, key):
        turn[name] += 1
        return fbs[key][turn[name] % len(fbs[key])]

    def full(name):
        return lambda: graphs[name].replay(nxt(name, name))

    def populate(fb):
        index = bisect.bisect_left(unrecorded.capture_bs, fb.batch_size)
        padded = unrecorded.capture_bs[index]
        unrecorded.buffers.populate_from_forward_batch(
            forward_batch=fb, raw_bs=fb.batch_size, raw_num_token=fb.batch_size * unrecorded.num_tokens_per_bs,
            bs=padded, seq_len_fill_value=unrecorded.seq_len_fill_value,
        )
        return padded

    def copies():
        populate(nxt("copies", "unrecorded"))

    return {"recorded": full("recorded"), "unrecorded": full("unrecorded"), "baseline": full("baseline"),
            "consumer_only": full("consumer_only"), "copies": copies}


def time_steps(s: dict, rounds: int, device, capture_bs=None) -> list[dict]:
    """Host µs per step at each bs, variants interleaved round by round, the queue drained before each."""
    rows = []
    for bs in capture_bs or s["scenario"].capture_bs:
        batches = make_batches(s["scenario"], bs, 4, device)
        fbs = {name: [forward_batch(runner, b) for b in batches] for name, runner in s["runners"].items()}
        steps = step_functions(s, bs, fbs)
        for fn in steps.values():  # one untimed step each
            fn()
        samples = {name: [] for name in VARIANTS}
        with gc_paused():
            for order in shuffled_rounds(list(VARIANTS), rounds):
                for name in order:
                    sync(device)
                    t0 = time.perf_counter()
                    steps[name]()
                    samples[name].append((time.perf_counter() - t0) * 1e6)
        row = {"bs": bs, **{name: spread(v) for name, v in samples.items()}}
        # Paired: both steps run in every round, so each round's difference cancels what the host did
        # to that round (a burst of noise hits both); the median of those is the estimate judged.
        row["in_graph_extra"] = spread([a - b for a, b in zip(samples["recorded"], samples["consumer_only"])])
        row["in_graph_extra_us"] = row["in_graph_extra"]["median"]
        row["unpaired_extra_us"] = row["recorded"]["median"] - row["consumer_only"]["median"]
        row["meets_issue_11"] = row["in_graph_extra_us"] <= ALLOWED_EXTRA_US
        # The keys bench/report.py's GRAPH.md reads.
        row.update(input_copies_us=row["copies"]["median"], copies_and_replay_us=row["consumer_only"]["median"],
                   in_graph_step_us=row["recorded"]["median"], eager_step_us=row["unrecorded"]["median"],
                   baseline_step_us=row["baseline"]["median"])
        rows.append(row)
        print({k: row[k] for k in ("bs", "in_graph_step_us", "copies_and_replay_us", "eager_step_us",
                                   "baseline_step_us", "in_graph_extra_us")}, flush=True)
    return rows


def kernel_rows(scenario: Scenario, recording: str, eager_stage: str) -> list[dict]:
    """GPU µs of the recording stage's static-grid launch against the eager stage before it, the two
    interleaved round by round (5 rounds of do_bench medians; median of the rounds)."""
    runners = {name: scenario.runner(stages.load(name), "cuda") for name in (recording, eager_stage)}
    rows = []
    for bs in (1, 32, 128):
        for maxlen in (4096, scenario.context_len):
            lens = torch.full((bs,), maxlen - DRAFT, dtype=torch.int32, device="cuda")
            batch = Batch(torch.arange(bs, dtype=torch.int32, device="cuda"), lens)
            launches = {}
            for name, runner in runners.items():
                runner.prepare(batch)
                launches[name] = captured_launch(lambda runner=runner: runner.replay_metadata(bs))
            (jit, args, kwargs), (e_jit, e_args, e_kwargs) = launches[recording], launches[eager_stage]
            timed = interleaved_kernel_us({"static": lambda: jit.run(*args, **kwargs),
                                           "eager": lambda: e_jit.run(*e_args, **e_kwargs)}, rounds=5)
            static_us, eager_us = timed["static"]["us"], timed["eager"]["us"]
            rows.append({"bs": bs, "maxlen": maxlen, "static_grid": list(kwargs["grid"]), "static_us": static_us,
                         "eager_us": eager_us, "ratio": static_us / eager_us})
            print(rows[-1], flush=True)
    return rows


def run(device, capture_bs=CAPTURE_BS, context=CONTEXT, rounds=300, steps_per_bs=2, timed_bs=None) -> dict:
    """Everything but the kernel section (which needs a GPU): what main() writes, and the CPU smoke test runs."""
    s = setup(device, capture_bs, context)
    recording = recording_stage()
    result = {
        "stages": {"recorded": s["stage"], "eager": s["stage"], "baseline": stages.BASELINE,
                   "recording_since": recording},
        "config": {"capture_bs": list(s["scenario"].capture_bs), "draft": DRAFT, "page_size": PAGE,
                   "context_len": context, "max_len": MAX_LEN, "rounds": rounds,
                   "allowed_extra_us": ALLOWED_EXTRA_US},
    }
    result["bit_exact"] = check_bit_exact(s, steps_per_bs, device)
    print("recorded replays:", result["bit_exact"], flush=True)
    result["host"] = time_steps(s, rounds, device, timed_bs)
    result["issue_11"] = {
        "met": all(r["meets_issue_11"] for r in result["host"]),
        "worst_extra_us": max(r["in_graph_extra_us"] for r in result["host"]),
    }
    return result


def main(out_path: str) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench.graph_demo needs a GPU (CUDA graphs); the CPU smoke test is tests/test_graph_runner_demo.py")
    result = {"env": environment("cuda"), **run("cuda")}
    empty = empty_launch("cuda")
    empty()
    samples = []
    for _ in range(300):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        empty()
        samples.append((time.perf_counter() - t0) * 1e6)
    for row in result["host"]:
        row["empty_launch_us"] = statistics.median(samples)
    recording = result["stages"]["recording_since"]
    result["kernel"] = kernel_rows(Scenario(num_draft_tokens=DRAFT, page_size=PAGE, index_topk=TOPK,
                                            context_len=CONTEXT, capture_bs=(1, 32, 128), pool_size=160, seed=3),
                                   recording, stages.previous(recording))
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
    print("in-graph extra <= 2 us at every bs:", result["issue_11"], flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python3 -m bench.graph_demo OUT.json")
    main(sys.argv[1])
