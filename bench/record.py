"""The benchmark of record: bench.replay_operator's target-verify inputs, every implementation of an input
interleaved round by round, like for like.

    python3 -m bench.record OUT.json      (GPU; NSA_USE_BUILD=1 on a machine without git; on CPU: two
                                          small inputs, host timings only, marked not comparable)

Writes {"environment", "rows"} to OUT.json after every input (a run cut short keeps its rows);
bench/report.py reads it as reports/<machine>/record.json. Per input, on the same captured buffers:
  host µs (HOST_ROUNDS rounds, the order shuffled every round, the queue drained before each call):
    every stage's whole backend replay (baseline first), the final stage's launch object called bare,
    upstream 0.5.23's bare kernel call (static, hostmax), nop-args, nop-1
  GPU µs (KERNEL_ROUNDS rounds of triton.testing.do_bench medians, interleaved): the final launch, its
    twin in a table 2048 columns wider, nop-args, upstream static and hostmax; and each one's floor ratio.
A whole upstream replay cannot run here (0.5.23's backend needs a running sglang server), so no row sets
our whole replay beside an upstream one: bare launch is compared with bare call only.
"""

from __future__ import annotations

import json
import sys

from bench import replay_operator as op
from bench.machine import environment

import torch  # noqa: E402  (after replay_operator, which sets up the interpreter where there is no GPU)

from harness import stages  # noqa: E402

KERNEL_ROUNDS, HOST_ROUNDS = 5, 300
SMOKE_INPUTS = op.INPUTS["record-cpu"]


def main(out: str, *flags: str) -> None:
    from bench.timing import copy_bandwidth

    smoke = "--smoke" in flags or not op.GPU
    upstream, peer_note = op.upstream()
    bandwidth = copy_bandwidth() if op.GPU else None
    host_rounds = HOST_ROUNDS if op.GPU else 5
    env = dict(environment(op.DEVICE), final_stage=stages.final(), stages=stages.names(), copy_bandwidth=bandwidth,
               kernel_rounds=KERNEL_ROUNDS, host_rounds=host_rounds, peer=peer_note, comparable=op.GPU,
               whole_upstream_replay="not run: 0.5.23's backend replay needs a running sglang server")
    print(env, flush=True)
    rows = []
    impls = op.implementations(op.TARGET_VERIFY)
    rounds = {"host_us": (host_rounds, 20 if op.GPU else 1), "kernel_us": KERNEL_ROUNDS}
    for config in SMOKE_INPUTS if smoke else op.INPUTS["record"]:
        row = op.measure(config, impls, upstream, rounds, bandwidth)
        rows.append(row)
        print(f"{config.id:40} floor {row['floor_us'] or 0:6.1f} | kernel "
              + " ".join(f"{n} {v['us']:.1f}" for n, v in row["kernel"].items()) + " | host "
              + " ".join(f"{n} {v['us']:.1f}" for n, v in row["host"].items()), flush=True)
        if op.GPU:
            torch.cuda.empty_cache()
        with open(out, "w") as f:  # after every input: a run cut short still leaves its rows
            json.dump({"environment": env, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:])
