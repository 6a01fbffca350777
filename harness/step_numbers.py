"""The 0.5.6 track's cover letter numbers: one speculative step's host time per graph runner, read from
the step run of record (reports/<machine>/spec_step.json, written by `python3 -m bench.spec_step` on a
GPU; h200 first, then h100), and told per release by what that release's matrix row says records.

Each runner's number is the one its release gets: recorded where the row says the runner records
into its graph, the series' eager replay call where it declines (or offers no recorder), nothing where
the row says neither (a matrix older than the runners' column).
"""

from __future__ import annotations

import json
from pathlib import Path

from .series import REPO_ROOT

REPORTS = REPO_ROOT / "reports"
MACHINES = ("h200", "h100")
# runner -> (its name in the letter, the row's mode and its "runners recording" key, or None: the
# target-verify runner, whose verdict is the mode's own `records`)
RUNNERS = {
    "target_verify": ("target-verify runner", "target_verify", None),
    "draft_extend": ("draft-extend runner", "draft_extend", "draft-extend runner"),
    "draft": ("draft runner, {steps} steps", "decode", "draft runner (multi-step backend)"),
}


def run_of_record(reports: Path | None = None) -> dict | None:
    """The step run of record of the current series, or None (none yet, or one of another series)."""
    from bench.machine import series_hash  # plain file reads: no GPU, no git

    for machine in MACHINES:
        path = (reports or REPORTS) / machine / "spec_step.json"
        if path.exists():
            data = json.loads(path.read_text())
            return data if data["env"].get("series_hash") == series_hash() else None
    return None


def records(row: dict, runner: str) -> bool | None:
    """Whether the release's row says `runner` records into its graph (None: the row does not say)."""
    _, mode, key = RUNNERS[runner]
    m = (row.get("runner") or {}).get(mode)
    if m is None:
        return None
    if key is None:
        return bool(m["records"])
    line = (m.get("runners recording") or {}).get(key)
    return None if line is None else line.startswith("records")


def _span(data: dict, variant: str, runner: str) -> str:
    values = [x["pieces"][variant][runner]["median"] for x in data["host"]]
    return f"{min(values):.0f}-{max(values):.0f}"


def block(row: dict | None, data: dict | None = None) -> str:
    """The letter's numbers: per runner, baseline -> what this release gets, and the no-metadata floor."""
    data = data if data is not None else run_of_record()
    if data is None or not row:
        return ""
    env, config = data["env"], data["config"]
    bs = config["capture_bs"]
    lines = [
        f"Host us per graph-runner replay in one speculative step ({config['num_steps']} draft",
        f"steps, D={config['draft']}, page {config['page_size']}, {config['context_len'] // 1024}k-wide table, "
        f"bs {bs[0]}-{bs[-1]}; sglang 0.5.6's runners,",
        f"stand-in models) on an {env['card']} (torch {env['torch'].split('+')[0]}, triton {env['triton']}),",
        "medians of interleaved rounds; no metadata: the same graphs without it:",
        f" {'runner':<22}{'baseline':>10}  {'series':<21}{'no metadata':>11}",
    ]
    for runner, (name, _, _) in RUNNERS.items():
        recorded = records(row, runner)
        if recorded is None:
            continue
        variant, how = ("recorded", "recorded") if recorded else ("eager", "eager")
        series = f"{_span(data, variant, runner)} {how}"
        lines.append(f" {name.format(steps=config['num_steps']):<22}{_span(data, 'baseline', runner):>10}  "
                     f"{series:<21}{_span(data, 'no_metadata', runner):>11}")
    return "\n".join(lines) + "\n"
