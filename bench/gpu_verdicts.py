"""What a GPU run checks beside timings: bit-exact verdicts, device syncs, the upstream peer's verdict.

    python3 -m bench.gpu_verdicts reports/<machine>/verdicts.json
    (on a GPU machine without git: NSA_USE_BUILD=1, after `python -m harness build` here)

On a CPU machine only the stage verdicts are computed (Triton through its interpreter); `make report`
runs this where a machine's verdicts.json is missing. Checks:

- every stage against baseline over the harness's scenario matrix, whole buffers, on the GPU;
- each stage's replay in every mode (target verify, decode, draft extend) under
  torch.cuda.set_sync_debug_mode("error"); the run fails, after writing the JSON, when the final
  stage syncs in any mode;
- upstream's fused_dsa_target_verify_metadata (NSA_UPSTREAM_WHEEL) in lockstep with baseline over
  replay sequences whose later batches are shorter, so stale columns are in play: whole-buffer
  verdict, and a valid-only verdict (page tables compared on columns < each row's kv length).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.env import triton_device

DEVICE = triton_device()  # before triton is imported

import torch  # noqa: E402

from bench.machine import environment  # noqa: E402
from bench.peers import load_upstream_peer, upstream_call  # noqa: E402
from harness import stages  # noqa: E402
from harness.compare import captured_state, first_mismatch  # noqa: E402
from harness.runner import MODES  # noqa: E402
from harness.scenarios import Scenario, matrix  # noqa: E402
from harness.verify import compare_stage  # noqa: E402


def stage_verdicts() -> list[dict]:
    return [compare_stage(stage, scenario, DEVICE).as_dict() for stage in stages.patched() for scenario in matrix()]


def sync_scenario(mode: str) -> Scenario:
    """One padded batch per mode (raw bs below the captured 8), long enough for several column blocks."""
    return Scenario(num_draft_tokens=4, page_size=64, index_topk=2048, mode=mode, context_len=4096,
                    capture_bs=(8, 16), replays=2, seed=3)


def sync_check() -> dict:
    """mode -> stage -> verdict: one replay under torch.cuda.set_sync_debug_mode("error")."""
    out = {}
    for mode in MODES:
        scenario = sync_scenario(mode)
        out[mode] = {}
        for name in stages.names():
            runner = scenario.runner(stages.load(name), "cuda")
            batches = list(scenario.batches("cuda"))
            runner.replay(batches[0])  # warm-up: compiles, fills the arange cache
            bs = runner.prepare(batches[1])  # the runner's own host work stays outside the check
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                runner.replay_metadata(bs)
                out[mode][name] = "no device sync"
            except RuntimeError as e:
                out[mode][name] = f"syncs: {str(e).splitlines()[0]}"
            finally:
                torch.cuda.set_sync_debug_mode(0)
    return out


def final_stage_syncs(sync: dict) -> list[str]:
    """The modes in which the final stage's replay synced the device, with the verdict."""
    final = stages.final()
    return [f"{mode}: {verdicts[final]}" for mode, verdicts in sync.items() if verdicts[final] != "no device sync"]


def valid_only_equal(ref, got, bs: int, draft: int) -> bool:
    """Page tables equal on the columns each row's kv length covers; length buffers equal whole."""
    a, b = ref.backend.decode_cuda_graph_metadata[bs], got.backend.decode_cuda_graph_metadata[bs]
    kv = a.cache_seqlens_int32.repeat_interleave(draft)
    for name in ("cache_seqlens_int32", "cu_seqlens_k", "nsa_seqlens_expanded", "nsa_cache_seqlens_int32", "nsa_cu_seqlens_k"):
        if not torch.equal(getattr(a, name), getattr(b, name)):
            return False
    cols = torch.arange(a.page_table_1.shape[1], device="cuda")
    if not torch.equal(a.page_table_1[cols[None] < kv[:, None]], b.page_table_1[cols[None] < kv[:, None]]):
        return False
    if a.page_size > 1:
        pages = torch.arange(a.real_page_table.shape[1], device="cuda")
        used = pages[None] * a.page_size < kv[:, None]
        return torch.equal(a.real_page_table[used], b.real_page_table[used])
    return True


def peer_verdicts(peer) -> list[dict]:
    rows = []
    for draft in (2, 4):
        for ps in (1, 64):
            sc = Scenario(num_draft_tokens=draft, page_size=ps, index_topk=2048, context_len=4096, capture_bs=(4, 8),
                          replays=6, seed=draft * 10 + ps)
            baseline = stages.load(stages.BASELINE)
            ref, got = sc.runner(baseline, "cuda"), sc.runner(baseline, "cuda")
            whole = valid = None
            for i, batch in enumerate(sc.batches("cuda")):
                bs = ref.replay(batch)
                got.prepare(batch)
                upstream_call(peer, got, bs, draft, ps, 2048)()
                if whole is None and (m := first_mismatch(captured_state(ref.backend), captured_state(got.backend))):
                    whole = f"replay {i}: {m}"
                if valid is None and not valid_only_equal(ref, got, bs, draft):
                    valid = f"replay {i}"
            rows.append({"scenario": sc.name, "whole_buffer_exact": whole is None, "first_whole_buffer_mismatch": whole,
                         "valid_only_exact": valid is None, "first_valid_only_mismatch": valid})
    return rows


def main(out_path: str) -> None:
    env = environment(DEVICE)
    print(env, flush=True)
    result = {"env": env, "stages": stage_verdicts()}
    print(f"stage verdicts: {sum(v['exact'] for v in result['stages'])}/{len(result['stages'])} bit-exact", flush=True)
    if DEVICE != "cuda":
        write_json(out_path, result)
        return
    result["sync"] = sync_check()
    print("sync:", result["sync"], flush=True)
    syncing = final_stage_syncs(result["sync"])
    peer, note = load_upstream_peer()
    result["peer_note"] = note
    result["peer"] = peer_verdicts(peer) if peer else []
    for row in result["peer"]:
        print("peer:", row, flush=True)
    write_json(out_path, result)
    if syncing:
        raise SystemExit(f"the final stage {stages.final()} syncs the device: {'; '.join(syncing)}")


def write_json(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
