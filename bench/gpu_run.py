"""One GPU session: bit-exact verdicts, sync check, op counts and timings for every stage and peer.

    python -m bench.gpu_run prepare            # here: materialize stages into build/stages (needs git)
    python -m bench.gpu_run run OUT.json       # on the GPU: no git needed, reads build/stages/index.json

Metrics (per target-verify replay, median over repeats):
  host_us   wall time of the replay call, no synchronize inside it (what the scheduler thread pays);
            the queue is drained with a synchronize between calls, outside the timed region.
  device_us CUDA events recorded around the call after a synchronize: from the first to the last
            GPU work of one replay, launch gaps included.
Peers in the same run: an empty Triton launch (host floor of any Python Triton launch) and upstream
sglang's fused_dsa_target_verify_metadata loaded from a wheel (NSA_UPSTREAM_WHEEL), never vendored.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from harness.compare import captured_state, first_mismatch
from harness.counters import count_replay
from harness.runner import Batch
from harness.scenarios import Scenario, matrix
from harness.loader import BUILD_DIR, import_stub

INDEX = BUILD_DIR / "index.json"
UPSTREAM_MODULE = "sglang/kernels/ops/attention/dsa/metadata.py"


def prepare() -> None:
    from harness.series import Series
    from harness.stages import load

    series = Series()
    index = {}
    for name in series.names():
        module = load(name, series)
        index[name] = str(Path(module.__file__).parent.relative_to(BUILD_DIR))
    INDEX.write_text(json.dumps(index, indent=2))
    print(f"wrote {INDEX}: {', '.join(index)}")


def stage_modules() -> dict:
    index = json.loads(INDEX.read_text())
    return {name: import_stub(f"gpu_stage_{i}", BUILD_DIR / rel) for i, (name, rel) in enumerate(index.items())}


def load_upstream_peer():
    wheel = os.environ.get("NSA_UPSTREAM_WHEEL")
    if not wheel or not Path(wheel).exists():
        return None, f"upstream peer skipped: set NSA_UPSTREAM_WHEEL to an sglang>=0.5.23 wheel (got {wheel!r})"
    folder = Path(tempfile.mkdtemp(prefix="sglang-peer-"))
    with zipfile.ZipFile(wheel) as z:
        (folder / "dsa_metadata.py").write_bytes(z.read(UPSTREAM_MODULE))
    spec = importlib.util.spec_from_file_location("sglang_peer_dsa_metadata", folder / "dsa_metadata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fused_dsa_target_verify_metadata, f"upstream peer: {Path(wheel).name}:{UPSTREAM_MODULE}"


def time_host(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    torch.cuda.synchronize()
    return statistics.median(samples)


def time_device(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3)
    return statistics.median(samples)


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second."""
    src = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    us = time_device(lambda: dst.copy_(src), 20)
    return 2 * src.numel() / (us * 1e-6)


def verdicts(modules) -> list[dict]:
    rows = []
    for scenario in matrix():
        ref = scenario.runner(modules["baseline"], "cuda")
        others = {n: scenario.runner(m, "cuda") for n, m in modules.items() if n != "baseline"}
        bad = {}
        for batch in scenario.batches("cuda"):
            ref.replay(batch)
            state = captured_state(ref.backend)
            for name, runner in others.items():
                runner.replay(batch)
                if name not in bad and (m := first_mismatch(state, captured_state(runner.backend))):
                    bad[name] = str(m)
        rows += [{"stage": n, "scenario": scenario.name, "exact": n not in bad, "mismatch": bad.get(n)} for n in others]
    return rows


def sync_check(modules, bs=8) -> dict:
    out = {}
    for name, module in modules.items():
        runner = Scenario(num_draft_tokens=4, page_size=64, index_topk=2048, context_len=4096, capture_bs=(bs,)).runner(module, "cuda")
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


def run(out_path: str) -> None:
    modules = stage_modules()
    peer, peer_note = load_upstream_peer()
    print(peer_note, flush=True)
    env = {
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "python": platform.python_version(),
    }
    print(env, flush=True)
    bandwidth = copy_bandwidth()
    result = {"env": env, "copy_bandwidth_Bps": bandwidth, "peer": peer_note}
    result["verdicts"] = verdicts(modules)
    print(f"verdicts: {sum(v['exact'] for v in result['verdicts'])}/{len(result['verdicts'])} exact", flush=True)
    result["sync"] = sync_check(modules)
    print("sync:", result["sync"], flush=True)

    import triton
    import triton.language as tl

    @triton.jit
    def _empty(x):
        pass

    dummy = torch.empty(1, device="cuda")
    _empty[(1,)](dummy)
    empty_host = time_host(lambda: _empty[(1,)](dummy), 200)
    empty_dev = time_device(lambda: _empty[(1,)](dummy), 200)

    rows = []
    context = 65536 + 64
    for bs in (1, 8, 32, 128, 256):
        for draft in (2, 4):
            for ps in (1, 64):
                for maxlen in (4096, 65536):
                    scenario = Scenario(num_draft_tokens=draft, page_size=ps, index_topk=2048, context_len=context,
                                        capture_bs=(bs,), pool_size=bs + 8, seed=bs)
                    g = torch.Generator().manual_seed(bs * 7 + draft)
                    lens = torch.randint(maxlen // 2, maxlen - draft + 1, (bs,), generator=g, dtype=torch.int32)
                    lens[0] = maxlen - draft
                    batch = Batch(torch.randperm(bs + 8, generator=g)[:bs].to(torch.int32).cuda(), lens.cuda())
                    floor_bytes = 4 * (bs * maxlen + bs * draft * maxlen + (bs * draft * (maxlen // ps) if ps > 1 else 0))
                    row = {"bs": bs, "D": draft, "page_size": ps, "maxlen": maxlen, "floor_us": floor_bytes / bandwidth * 1e6,
                           "empty_launch": {"host_us": empty_host, "device_us": empty_dev}}
                    reference = None
                    for name, module in modules.items():
                        runner = scenario.runner(module, "cuda")
                        runner.replay(batch)
                        runner.prepare(batch)
                        call = lambda r=runner: r.replay_metadata(bs)  # noqa: E731
                        for _ in range(3):
                            call()
                        with count_replay([runner.seq_lens_cpu]) as counts:
                            call()
                        row[name] = {"host_us": time_host(call, 50), "device_us": time_device(call, 50),
                                     "device_kernels": counts.device_kernels, "triton_launches": counts.triton_launches}
                        if name == "baseline":
                            reference = runner
                        del runner
                    if peer is not None:
                        row["upstream"] = peer_row(peer, scenario, batch, bs, draft, ps, reference)
                    rows.append(row)
                    print(json.dumps({k: (v if not isinstance(v, dict) else {kk: round(vv, 1) if isinstance(vv, float) else vv for kk, vv in v.items()}) for k, v in row.items()}), flush=True)
                    torch.cuda.empty_cache()
    result["rows"] = rows
    Path(out_path).write_text(json.dumps(result, indent=1))


def peer_row(peer, scenario, batch, bs, draft, ps, reference) -> dict:
    """Upstream's kernel on a copy of the baseline's buffers; verdict whole-buffer and valid-only."""
    md = reference.backend.decode_cuda_graph_metadata[bs]
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in captured_state(reference.backend).items()}
    names = {f: f"bs{bs}.{f}" for f in ("cache_seqlens_int32", "cu_seqlens_k", "page_table_1", "nsa_seqlens_expanded",
                                         "nsa_cache_seqlens_int32", "nsa_cu_seqlens_k", "real_page_table")}
    bufs = {f: getattr(md, f).clone() for f in names}
    if ps == 1:
        bufs["real_page_table"] = bufs["page_table_1"]
    seq_lens = reference.seq_lens[:bs]
    pool = reference.req_pool_indices[:bs]
    max_seqlen_k = int(reference.seq_lens_cpu[:bs].max()) + draft

    def call():
        peer(seq_lens, pool, reference.backend.req_to_token, bufs["cache_seqlens_int32"], bufs["cu_seqlens_k"],
             bufs["page_table_1"], bufs["nsa_seqlens_expanded"], bufs["nsa_cache_seqlens_int32"], bufs["nsa_cu_seqlens_k"],
             bufs["real_page_table"], bs, max_seqlen_k, 2048, ps, draft)

    call()
    got = dict(state)
    for f, key in names.items():
        got[key] = bufs[f]
    mismatch = first_mismatch(state, got)
    row = {"host_us": time_host(call, 50), "device_us": time_device(call, 50), "whole_buffer_exact": mismatch is None,
           "mismatch": str(mismatch) if mismatch else None}
    # valid-only: compare page tables on columns < each row's kv length
    kv = md.cache_seqlens_int32.repeat_interleave(draft)
    cols = torch.arange(md.page_table_1.shape[1], device="cuda")
    valid = cols[None, :] < kv[:, None]
    row["valid_only_exact"] = bool(torch.equal(md.page_table_1[valid], bufs["page_table_1"][valid]))
    return row


if __name__ == "__main__":
    {"prepare": lambda: prepare(), "run": lambda: run(sys.argv[2])}[sys.argv[1]]()
