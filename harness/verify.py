"""Verdicts: each stage against baseline, replay by replay, whole buffers; and ops per replay."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from . import stages
from .compare import Mismatch, captured_state, first_mismatch
from .counters import ReplayCounts, count_replay
from .runner import Batch
from .scenarios import Scenario


@dataclass(frozen=True)
class Verdict:
    stage: str
    scenario: str
    replays: int
    mismatch: Mismatch | None = None
    at_replay: int | None = None

    @property
    def exact(self) -> bool:
        return self.mismatch is None

    def as_dict(self) -> dict:
        return {**asdict(self), "exact": self.exact, "mismatch": str(self.mismatch) if self.mismatch else None}


def compare_stage(stage: str, scenario: Scenario, device="cpu", reference: str = stages.BASELINE) -> Verdict:
    """Replay `scenario` on `reference` and `stage` in lockstep; stop at the first differing buffer."""
    return compare_modules(stages.load(reference), stages.load(stage), scenario, device, label=stage)


def compare_modules(reference, module, scenario: Scenario, device="cpu", label: str = "") -> Verdict:
    """compare_stage for any two loaded backends (a stage, a mutant, a real upstream file)."""
    ref = scenario.runner(reference, device)
    got = scenario.runner(module, device)
    mismatch = first_mismatch(captured_state(ref.backend), captured_state(got.backend))
    if mismatch:
        return Verdict(label, scenario.name, 0, mismatch, at_replay=-1)  # -1: after capture
    replays = 0
    for i, batch in enumerate(scenario.batches(device)):
        ref.replay(batch)
        got.replay(batch)
        replays += 1
        mismatch = first_mismatch(captured_state(ref.backend), captured_state(got.backend))
        if mismatch:
            return Verdict(label, scenario.name, replays, mismatch, at_replay=i)
    return Verdict(label, scenario.name, replays)


def count_ops(stage: str, bs: int, device="cpu", num_draft_tokens=4, page_size=64, context_len=256) -> ReplayCounts:
    """Ops and launches of one target-verify replay at captured `bs` (steady state, after a warm-up)."""
    scenario = Scenario(
        num_draft_tokens=num_draft_tokens,
        page_size=page_size,
        index_topk=48,
        context_len=context_len,
        capture_bs=(bs,),
    )
    runner = scenario.runner(stages.load(stage), device)
    g = torch.Generator().manual_seed(bs)
    lens = torch.randint(1, context_len - num_draft_tokens + 1, (bs,), generator=g, dtype=torch.int32)
    pool = torch.randint(0, scenario.pool_size, (bs,), generator=g, dtype=torch.int32)
    batch = Batch(pool.to(device), lens.to(device))
    runner.replay(batch)  # warm-up: JIT compile and the arange cache stay out of the count
    runner.prepare(batch)
    with count_replay([runner.seq_lens_cpu]) as counts:
        runner.replay_metadata(bs)
    return counts
