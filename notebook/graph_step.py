"""Where a graph step's host time goes: the recorded graph against the graph holding the consumer alone.

bench.graph_demo found the recorded step (input copies, replay_prepare, replay()) 2-5 µs *faster* than
the same runner's step over graphs holding the consumer alone, growing with bs. This splits both steps:
replay_prepare alone (input copies and the skipped backend call) and graph.replay() alone, every piece
of both runners interleaved round by round (order shuffled), the queue drained before each.
Prediction, written before the run: replay_prepare costs the same in both; the difference is all in
graph.replay() (cudaGraphLaunch of two different graphs).

    python3 -m notebook.graph_step OUT.json          (GPU; after `python -m harness build`)
"""

from __future__ import annotations

import json
import sys
import time

import torch

from bench import graph_demo
from bench.machine import environment
from bench.timing import gc_paused, shuffled_rounds, spread
from harness.cuda_graph import forward_batch

CAPTURE_BS = (1, 64, 256)
ROUNDS = 600


def pieces(s: dict, bs: int) -> dict:
    """name -> call, for the recorded and consumer-only runners at captured `bs`."""
    calls = {}
    for name in ("recorded", "consumer_only"):
        graphs, runner = s["graphs"][name], s["runners"][name]
        fbs = [forward_batch(runner, b) for b in graph_demo.make_batches(s["scenario"], bs, 4, "cuda")]
        turn = iter(range(1 << 30))
        calls[f"{name}: step"] = lambda graphs=graphs, fbs=fbs, turn=turn: graphs.replay(fbs[next(turn) % 4])
        calls[f"{name}: replay_prepare"] = lambda graphs=graphs, fbs=fbs, turn=turn: graphs.replay_prepare(
            fbs[next(turn) % 4])
        calls[f"{name}: graph.replay()"] = lambda graph=graphs.graphs[bs]: graph.replay()
    # A second graph holding the consumer alone, from another runner: is it the graph or the runner?
    calls["unrecorded: graph.replay()"] = lambda graph=s["graphs"]["unrecorded"].graphs[bs]: graph.replay()
    return calls


def main(out: str) -> None:
    s = graph_demo.setup("cuda", capture_bs=CAPTURE_BS)
    rows = []
    for bs in CAPTURE_BS:
        calls = pieces(s, bs)
        samples = {name: [] for name in calls}
        for fn in calls.values():
            fn()
        with gc_paused():
            for order in shuffled_rounds(list(calls), ROUNDS):
                for name in order:
                    torch.cuda.synchronize()
                    t0 = time.perf_counter_ns()
                    calls[name]()
                    samples[name].append((time.perf_counter_ns() - t0) / 1e3)
        torch.cuda.synchronize()
        row = {"bs": bs, **{name: spread(xs) for name, xs in samples.items()}}
        rows.append(row)
        print(f"bs {bs:3}: " + "  ".join(f"{n} {v['us']:.1f} [{v['q1']:.1f}, {v['q3']:.1f}]"
                                         for n, v in row.items() if n != "bs"), flush=True)
    with open(out, "w") as f:
        json.dump({"environment": environment("cuda"), "rounds": ROUNDS, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:])
