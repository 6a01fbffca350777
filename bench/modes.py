"""Decode and draft extend: the replays patches 0006-0007 fuse, against baseline and upstream.

    python3 -m bench.modes OUT.json        (GPU; NSA_USE_BUILD=1 on a machine without git)
    python3 -m bench.modes --table OUT.json   (the markdown table of a saved run)

A view of bench.replay_operator: its "modes" inputs (sglang's graph-runner buffers at a 163840-wide
table, page 64, D=4, seq_lens uniform up to 64k, draft extend's accept lengths uniform in [1, D], bs
1-256) and these of its implementations and metrics:
  host (µs of one call, the queue drained before it, interleaved rounds, median and quartiles):
    baseline      sglang 0.5.6's whole replay of the mode (its host reads and device syncs included)
    <final stage> the final stage's whole replay (one launch, or nothing once recorded); `final-alone`:
                  the same timed by itself
  kernel (GPU µs, triton.testing.do_bench median per round, interleaved):
    final-launch  the final stage's launch object, launched bare
    upstream-*    upstream 0.5.23's fused kernel of the mode, called bare on the same buffers:
      decode          fused_dsa_decode_metadata; -static: max_len = the table width, as it ships;
                      -hostmax: the batch's max read on the host first (not timed)
      draft extend    fused_dsa_draft_extend_metadata; -v1: our semantics (accept_length rows,
                      total and max read on the host first, not timed); -v2-static: as 0.5.23
                      ships it, the v2 mode: all D rows of every request and the table width,
                      which is more work than v1's rows, so it is listed, not compared.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from bench import replay_operator as op
from bench.inputs import prepared_runner
from bench.machine import environment
from bench.timing import interleaved_host_us
from harness import stages

KERNEL_ROUNDS, HOST_ROUNDS = 5, 200


def runner_for(module, mode: str, bs: int, width: int = op.WIDE):
    """`module`'s runner with the modes input of (`mode`, `bs`) replayed once and prepared again."""
    config = next(c for c in op.INPUTS["modes"] if c.mode == mode and c.bs == bs)
    return prepared_runner(module, dataclasses.replace(config, context_len=width), op.DEVICE)


def implementations(mode: str) -> list[op.Impl]:
    """baseline's and the final stage's whole replays (host), the final launch and upstream's peers (GPU)."""
    wanted = {stages.BASELINE: ("host_us",), stages.final(): ("host_us",), "final-launch": ("kernel_us",)}
    return [dataclasses.replace(i, metrics=wanted.get(i.name, ("kernel_us",))) for i in op.implementations(mode)
            if i.name in wanted or i.role == "peer"]


def measure(config, upstream) -> dict:
    rounds, warmup = (HOST_ROUNDS, 10) if op.GPU else (3, 1)
    row = op.measure(config, implementations(config.mode), upstream,
                     {"host_us": (rounds, warmup), "kernel_us": KERNEL_ROUNDS}, None)
    # Interleaved, each final call pays for what the baseline call before it left behind (caches,
    # allocator): +18-37 µs on the H100 (notebook: draft_extend_host). Alone is its own cost.
    final = op.Prepared(config).replay(stages.final())
    row["host"]["final-alone"] = interleaved_host_us({"final": final}, rounds, warmup=warmup)["final"]
    return row


def table(path: str) -> str:
    run = json.load(open(path))
    env = run["environment"]
    final = env["final_stage"]
    rows = [op.normalized(r, final) for r in run["rows"]]
    names = sorted({k for r in rows for k in r["kernel"]}, key=lambda n: (n != "final-launch", n))
    head = ["mode", "bs", "host baseline µs", f"host {final} µs", f"host {final} alone µs"] + [
        f"kernel {n} µs" for n in names]
    fmt = lambda s: f"{s['us']:.1f} [{s['q1']:.1f}, {s['q3']:.1f}]" if s else "-"  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["mode"], r["bs"], fmt(r["host"]["baseline"]), fmt(r["host"][final]),
                 fmt(r["host"].get("final-alone"))]
        cells += [fmt(r["kernel"].get(n)) for n in names]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    note = (f"{env['card']}, torch {env['torch']}, triton {env['triton']}; median [q1, q3]; final stage "
            f"`{final}`; width {rows[0]['width'] if rows else '-'}, page {rows[0]['page_size'] if rows else '-'},"
            f" D {rows[0].get('D', rows[0].get('draft')) if rows else '-'}.")
    return "\n".join(lines) + "\n\n" + note


def main(out: str) -> None:
    upstream, note = op.upstream()
    env = dict(environment(op.DEVICE), final_stage=stages.final(), peer=note, comparable=op.GPU)
    print(env, flush=True)
    rows = []
    for config in op.inputs("modes"):
        row = measure(config, upstream)
        rows.append(row)
        print(config.id, {k: round(v["us"], 1) for k, v in row["host"].items()},
              {k: round(v["us"], 1) for k, v in row["kernel"].items()}, flush=True)
        with open(out, "w") as f:  # after every input: a run cut short keeps its rows
            json.dump({"environment": env, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        print(table(sys.argv[2]))
    else:
        main(sys.argv[1])
