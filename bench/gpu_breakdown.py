"""Where the host time of one fused target-verify replay goes (GPU; after `python -m bench.gpu_run prepare`).

    python3 -m bench.gpu_breakdown [STAGE]      host time, piece by piece
    python3 -m bench.gpu_breakdown kernels      kernel-only GPU time: block-size variants, upstream, floor
    python3 -m bench.gpu_breakdown ab           every stage's host time, interleaved call by call

Times, median of many calls (host clock, queue drained between calls): the whole backend replay,
the replay with the launcher stubbed out (prologue + tail), the launcher alone, the bare
`kernel[grid](...)` launch, and the pieces of the prologue. A notes tool: it answers "what is left
to cut", it is not a benchmark of record.
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time

import torch

from bench.timing import host_us, launch_arguments
from harness.loader import load_built as stage_modules
from harness.runner import Batch
from harness.scenarios import Scenario


def main(stage: str) -> None:
    import triton

    module = stage_modules()[stage]
    kernel_mod = importlib.import_module(module.__package__ + ".nsa.target_verify_metadata")
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, stage)

    @triton.jit
    def _empty(x):
        pass

    dummy = torch.empty(1, device="cuda")
    _empty[(1,)](dummy)
    rows = [("empty Triton launch", host_us(lambda: _empty[(1,)](dummy)))]
    for bs in (1, 32, 128):
        sc = Scenario(num_draft_tokens=4, page_size=64, index_topk=2048, context_len=65600, capture_bs=(bs,), pool_size=bs + 8)
        runner = sc.runner(module, "cuda")
        lens = torch.full((bs,), 65000, dtype=torch.int32, device="cuda")
        batch = Batch(torch.arange(bs, dtype=torch.int32, device="cuda"), lens)
        runner.replay(batch)
        runner.prepare(batch)
        backend = runner.backend
        launch_obj = backend.target_verify_launches[bs]
        backend.target_verify_launches[bs] = lambda *args: None
        prologue = host_us(lambda: runner.replay_metadata(bs))
        backend.target_verify_launches[bs] = launch_obj
        full = host_us(lambda: runner.replay_metadata(bs))
        max_seqlen_k = int(runner.seq_lens_cpu[:bs].max()) + 4
        call_args = (runner.seq_lens[:bs], runner.req_pool_indices[:bs], max_seqlen_k)
        launcher = host_us(lambda: launch_obj(*call_args))
        jit = kernel_mod._target_verify_metadata_kernel
        args, kwargs = launch_arguments(jit, lambda: launch_obj(*call_args))
        bare = host_us(lambda: jit.run(*args, **kwargs))
        sl, slc, rpi = runner.seq_lens, runner.seq_lens_cpu, runner.req_pool_indices
        rows += [
            (f"bs={bs} whole replay", full),
            (f"bs={bs} replay, launcher stubbed", prologue),
            (f"bs={bs} launch object (checks + launch)", launcher),
            (f"bs={bs}   bare kernel[grid](...) launch", bare),
            (f"bs={bs}   3 prologue slices", host_us(lambda: (sl[:bs], slc[:bs], rpi[:bs]))),
            (f"bs={bs}   seq_lens_cpu.max().item()", host_us(lambda: int(slc[:bs].max().item()))),
            (f"bs={bs}   set_nsa_prefill_impl", host_us(lambda: backend.set_nsa_prefill_impl(forward_batch=None))),
        ]
    for name, us in rows:
        print(f"{name:<42} {us:8.1f} us")




def kernels() -> None:
    """Kernel-only GPU time (triton.testing.do_bench, median) of the fused launch, its variants, and peers."""
    import triton
    import triton.testing

    from bench.peers import load_upstream_peer, upstream_call

    module = stage_modules()["repeat-audit"]
    kernel_mod = importlib.import_module(module.__package__ + ".nsa.target_verify_metadata")
    jit = kernel_mod._target_verify_metadata_kernel
    peer, _ = load_upstream_peer()
    src = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    bandwidth = 2 * src.numel() / (triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median") * 1e-3)
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    for bs, ps in ((128, 1), (128, 64), (256, 1), (256, 64), (32, 64)):
        draft, maxlen = 4, 65536
        sc = Scenario(num_draft_tokens=draft, page_size=ps, index_topk=2048, context_len=65600, capture_bs=(bs,), pool_size=bs + 8)
        runner = sc.runner(module, "cuda")
        batch = Batch(torch.arange(bs, dtype=torch.int32, device="cuda"), torch.full((bs,), maxlen - draft, dtype=torch.int32, device="cuda"))
        runner.replay(batch)
        launch_obj = runner.backend.target_verify_launches[bs]
        args, kwargs = launch_arguments(jit, lambda: launch_obj(runner.seq_lens[:bs], runner.req_pool_indices[:bs], maxlen))
        floor = 4 * (bs * maxlen + bs * draft * maxlen + (bs * draft * maxlen // ps if ps > 1 else 0)) / bandwidth * 1e6
        line = [f"bs={bs:<4} D=4 ps={ps:<3} 64k floor {floor:6.1f} us |"]
        for block, warps in ((1024, 4), (1024, 8), (2048, 4), (2048, 8), (4096, 8)):
            kw = dict(kwargs, BLOCK_COLS=block, num_warps=warps, grid=(bs, triton.cdiv(maxlen, block)))
            us = triton.testing.do_bench(lambda: jit.run(*args, **kw), return_mode="median") * 1e3
            line.append(f"{block}/{warps}: {us:6.1f}")
        if peer:
            ref = sc.runner(stage_modules()["baseline"], "cuda")
            ref.replay(batch)
            call = upstream_call(peer, ref, bs, draft, ps, 2048)
            line.append(f"| upstream: {triton.testing.do_bench(call, return_mode='median') * 1e3:6.1f}")
            del ref
        print(" ".join(line), flush=True)
        torch.cuda.empty_cache()


def ab(rounds: int = 1000) -> None:
    """Host µs of every stage, interleaved call by call (shuffled order each round), so drift hits all alike."""
    import random

    import triton

    modules = stage_modules()
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, f"{rounds} interleaved rounds")
    print(f"{'bs':>4} {'D':>2} {'ps':>3} {'len':>6} | " + " | ".join(f"{n:>18}" for n in modules))
    rng = random.Random(0)
    for bs, draft, ps, maxlen in ((1, 2, 1, 4096), (1, 4, 64, 4096), (1, 4, 64, 65536), (32, 4, 64, 65536), (128, 2, 1, 4096)):
        calls = {}
        for name, module in modules.items():
            sc = Scenario(num_draft_tokens=draft, page_size=ps, index_topk=2048, context_len=65600, capture_bs=(bs,), pool_size=bs + 8)
            runner = sc.runner(module, "cuda")
            lens = torch.full((bs,), maxlen - draft, dtype=torch.int32, device="cuda")
            runner.replay(Batch(torch.arange(bs, dtype=torch.int32, device="cuda"), lens))
            calls[name] = (runner, lambda r=runner: r.replay_metadata(bs))
        samples = {name: [] for name in calls}
        names = list(calls)
        for _ in range(rounds):
            rng.shuffle(names)
            for name in names:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                calls[name][1]()
                samples[name].append((time.perf_counter() - t0) * 1e6)
        cells = []
        for name in modules:
            q = statistics.quantiles(samples[name], n=4)
            cells.append(f"{q[1]:6.1f} [{q[0]:5.1f},{q[2]:6.1f}]")
        print(f"{bs:>4} {draft:>2} {ps:>3} {maxlen:>6} | " + " | ".join(cells), flush=True)
        del calls
        torch.cuda.empty_cache()


if __name__ == "__main__":
    if sys.argv[1:] == ["kernels"]:
        kernels()
    elif sys.argv[1:] == ["ab"]:
        ab()
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "repeat-audit")
