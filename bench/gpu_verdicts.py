"""What a GPU run checks beside timings: bit-exact verdicts, device syncs, the upstream peer's verdict.

    python3 -m bench.gpu_verdicts reports/<machine>/verdicts.json     (after `python -m harness build`)

- every stage against baseline over the harness's scenario matrix, whole buffers, on the GPU;
- each stage's replay under torch.cuda.set_sync_debug_mode("error");
- upstream's fused_dsa_target_verify_metadata (NSA_UPSTREAM_WHEEL) in lockstep with baseline over
  replay sequences whose later batches are shorter, so stale columns are in play: whole-buffer
  verdict, and a valid-only verdict (page tables compared on columns < each row's kv length).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
import triton

from bench.peers import load_upstream_peer, upstream_call
from harness.compare import captured_state, first_mismatch
from harness.loader import load_built
from harness.runner import Batch
from harness.scenarios import Scenario, matrix


def stage_verdicts(modules) -> list[dict]:
    rows = []
    for scenario in matrix():
        ref = scenario.runner(modules["baseline"], "cuda")
        others = {n: scenario.runner(m, "cuda") for n, m in modules.items() if n != "baseline"}
        bad = {}
        for i, batch in enumerate(scenario.batches("cuda")):
            ref.replay(batch)
            state = captured_state(ref.backend)
            for name, runner in others.items():
                runner.replay(batch)
                if name not in bad and (m := first_mismatch(state, captured_state(runner.backend))):
                    bad[name] = f"replay {i}: {m}"
        rows += [{"stage": n, "scenario": scenario.name, "exact": n not in bad, "mismatch": bad.get(n)} for n in others]
    return rows


def sync_check(modules, bs=8) -> dict:
    out = {}
    for name, module in modules.items():
        sc = Scenario(num_draft_tokens=4, page_size=64, index_topk=2048, context_len=4096, capture_bs=(bs,))
        runner = sc.runner(module, "cuda")
        batch = Batch(torch.arange(bs, dtype=torch.int32, device="cuda"), torch.full((bs,), 1000, dtype=torch.int32, device="cuda"))
        runner.replay(batch)
        runner.prepare(batch)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            runner.replay_metadata(bs)
            out[name] = "no device sync"
        except RuntimeError as e:
            out[name] = f"syncs: {str(e).splitlines()[0]}"
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return out


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


def peer_verdicts(peer, modules) -> list[dict]:
    rows = []
    for draft in (2, 4):
        for ps in (1, 64):
            sc = Scenario(num_draft_tokens=draft, page_size=ps, index_topk=2048, context_len=4096, capture_bs=(4, 8),
                          replays=6, seed=draft * 10 + ps)
            ref, got = sc.runner(modules["baseline"], "cuda"), sc.runner(modules["baseline"], "cuda")
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
    modules = load_built()
    env = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "python": platform.python_version()}
    print(env, flush=True)
    result = {"env": env, "stages": stage_verdicts(modules)}
    print(f"stage verdicts: {sum(v['exact'] for v in result['stages'])}/{len(result['stages'])} bit-exact", flush=True)
    result["sync"] = sync_check(modules)
    print("sync:", result["sync"], flush=True)
    peer, note = load_upstream_peer()
    result["peer_note"] = note
    result["peer"] = peer_verdicts(peer, modules) if peer else []
    for row in result["peer"]:
        print("peer:", row, flush=True)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
