"""Draft extend's eager host time at bs 128/256 varied 67-129 / 74-120 µs between runs (modes.json).

Is it the launch, or what the baseline call interleaved with it leaves behind? The final stage's draft
extend replay call timed alone, and interleaved with baseline's as bench.modes does, same rounds.
Prediction, written before the run: alone it stays at ~60 µs at every bs; interleaved it grows with bs,
as baseline's garbage and allocations grow.

    python3 -m notebook.draft_extend_host OUT.json          (GPU; after `python -m harness build`)
"""

from __future__ import annotations

import json
import sys

from bench.machine import environment
from bench.modes import runner_for
from bench.timing import interleaved_host_us
from harness import stages

ROUNDS = 300


def main(out: str) -> None:
    baseline, final = stages.load(stages.BASELINE), stages.load(stages.final())
    rows = []
    for bs in (1, 32, 128, 256):
        base_runner, final_runner = runner_for(baseline, "draft_extend", bs), runner_for(final, "draft_extend", bs)
        calls = {"baseline": lambda: base_runner.replay_metadata(bs), "final": lambda: final_runner.replay_metadata(bs)}
        alone = interleaved_host_us({"final": calls["final"]}, ROUNDS)
        together = interleaved_host_us(calls, ROUNDS)
        rows.append({"bs": bs, "final_alone": alone["final"], "final_with_baseline": together["final"],
                     "baseline": together["baseline"]})
        print({k: (round(v["us"], 1) if isinstance(v, dict) else v) for k, v in rows[-1].items()}, flush=True)
    with open(out, "w") as f:
        json.dump({"environment": environment("cuda"), "rounds": ROUNDS, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:])
