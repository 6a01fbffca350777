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
    at_replay: int | None = None  # -1: at capture
    error: str | None = None  # the stage raised where the reference did not

    @property
    def exact(self) -> bool:
        return self.mismatch is None and self.error is None

    def describe(self) -> str:
        where = "at capture" if self.at_replay == -1 else f"replay {self.at_replay}"
        return "bit-exact" if self.exact else f"{where}: {self.mismatch or self.error}"

    def as_dict(self) -> dict:
        return {**asdict(self), "exact": self.exact, "mismatch": str(self.mismatch) if self.mismatch else None}


def compare_stage(stage: str, scenario: Scenario, device="cpu", reference: str = stages.BASELINE) -> Verdict:
    """Replay `scenario` on `reference` and `stage` in lockstep; stop at the first differing buffer."""
    return compare_modules(stages.load(reference), stages.load(stage), scenario, device, label=stage)


def compare_modules(reference, module, scenario: Scenario, device="cpu", label: str = "") -> Verdict:
    """compare_stage for any two loaded backends (a stage, a mutant, a real upstream file)."""
    return compare_lockstep(reference, {label: module}, scenario, device)[label]


def compare_lockstep(reference, peers: dict[str, object], scenario: Scenario, device="cpu") -> dict[str, Verdict]:
    """Replay `scenario` once on `reference` and on every peer in lockstep, whole buffers after
    capture and after every replay. A peer drops out at its first difference, or where it raises
    and the reference did not; the reference raising is an error of the scenario and propagates."""
    ref = scenario.runner(reference, device)
    runners, verdicts = {}, {}
    for label, module in peers.items():
        try:
            runners[label] = scenario.runner(module, device)
        except Exception as e:  # noqa: BLE001  (the peer's capture refused what the reference took)
            verdicts[label] = Verdict(label, scenario.name, 0, at_replay=-1, error=f"{type(e).__name__}: {e}")
    replays = 0

    def compare(at: int) -> None:
        state = captured_state(ref.backend)
        for label, runner in list(runners.items()):
            mismatch = first_mismatch(state, captured_state(runner.backend))
            if mismatch:
                verdicts[label] = Verdict(label, scenario.name, replays, mismatch, at_replay=at)
                del runners[label]

    compare(-1)
    for i, batch in enumerate(scenario.batches(device)):
        ref.replay(batch)
        replays += 1
        for label, runner in list(runners.items()):
            try:
                runner.replay(batch)
            except Exception as e:  # noqa: BLE001
                verdicts[label] = Verdict(label, scenario.name, replays, at_replay=i, error=f"{type(e).__name__}: {e}")
                del runners[label]
        compare(i)
    verdicts.update({label: Verdict(label, scenario.name, replays) for label in runners})
    return {label: verdicts[label] for label in peers}


def count_ops(
    stage: str, bs: int, device="cpu", num_draft_tokens=4, page_size=64, context_len=256, mode="target_verify"
) -> ReplayCounts:
    """Ops and launches of one `mode` replay at captured `bs` (steady state, after a warm-up)."""
    scenario = Scenario(
        num_draft_tokens=num_draft_tokens,
        page_size=page_size,
        index_topk=48,
        mode=mode,
        context_len=context_len,
        capture_bs=(bs,),
    )
    runner = scenario.runner(stages.load(stage), device)
    g = torch.Generator().manual_seed(bs)
    lowest = num_draft_tokens if mode == "draft_extend" else 1  # every accept length fits
    lens = torch.randint(lowest, context_len - num_draft_tokens + 1, (bs,), generator=g, dtype=torch.int32)
    pool = torch.randint(0, scenario.pool_size, (bs,), generator=g, dtype=torch.int32)
    accept = None
    if mode == "draft_extend":
        accept = torch.randint(1, num_draft_tokens + 1, (bs,), generator=g, dtype=torch.int32).to(device)
    batch = Batch(pool.to(device), lens.to(device), accept)
    runner.replay(batch)  # warm-up: JIT compile and the arange cache stay out of the count
    runner.prepare(batch)
    with count_replay([runner.seq_lens_cpu]) as counts:
        runner.replay_metadata(bs)
    return counts
