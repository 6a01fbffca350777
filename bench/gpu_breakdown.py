"""Where the host time of one target-verify replay goes (GPU; after `python -m harness build`, NSA_USE_BUILD=1).

    python3 -m bench.gpu_breakdown [STAGE]      host time, piece by piece (default: the final stage)
    python3 -m bench.gpu_breakdown kernels      kernel-only GPU time of the final stage: block-size variants, upstream, floor
    python3 -m bench.gpu_breakdown ab           every stage's host time, interleaved call by call

Times, median of many calls (host clock, queue drained between calls): the whole backend replay,
the replay with the launch object stubbed out (prologue + tail), the launch object alone, the bare
`kernel[grid](...)` launch, and the pieces of the prologue. A notes tool: it answers "what is left
to cut", it is not a benchmark of record.
"""

from __future__ import annotations

import copy
import random
import statistics
import sys
import time

from harness.env import triton_device

triton_device()  # before triton is imported

import torch  # noqa: E402

from bench.inputs import Config, prepared_runner  # noqa: E402
from bench.machine import environment  # noqa: E402
from bench.peers import empty_launch, load_upstream_peer, upstream_call  # noqa: E402
from bench.replay_operator import final_launch  # noqa: E402
from bench.timing import captured_launch, copy_bandwidth, host_us, kernel_us  # noqa: E402
from harness import stages  # noqa: E402

CONTEXT = 65536 + 64


def stubbed(launch_obj, calls: list):
    """A copy of `launch_obj` whose call only records its arguments; what the backend reads of it stays."""
    stub = copy.copy(launch_obj)
    cls = type(launch_obj)
    stub.__class__ = type(f"Stubbed{cls.__name__}", (cls,), {"__call__": lambda self, *args: calls.append(args)})
    return stub


def main(stage: str) -> None:
    module = stages.load(stage)
    print(environment("cuda"), stage)
    empty = empty_launch("cuda")
    empty()
    rows = [("empty Triton launch", host_us(empty))]
    for bs in (1, 32, 128):
        config = Config(bs, 4, 64, 65004, context_len=CONTEXT, spread=False)
        runner = prepared_runner(module, config, "cuda")
        backend = runner.backend
        launch_obj = final_launch(runner, "target_verify", bs)
        launches, key = ((backend.cuda_graph_metadata_launches, (bs, "target_verify"))
                         if hasattr(backend, "cuda_graph_metadata_launches") else (backend.target_verify_launches, bs))
        launch_args = []
        launches[key] = stubbed(launch_obj, launch_args)
        runner.replay_metadata(bs)  # what the backend hands its launch object, whatever the stage's API
        prologue = host_us(lambda: runner.replay_metadata(bs))
        launches[key] = launch_obj
        full = host_us(lambda: runner.replay_metadata(bs))
        launcher = host_us(lambda: launch_obj(*launch_args[0]))
        jit, args, kwargs = captured_launch(lambda: launch_obj(*launch_args[0]))
        bare = host_us(lambda: jit.run(*args, **kwargs))
        sl, slc, rpi = runner.seq_lens, runner.seq_lens_cpu, runner.req_pool_indices
        rows += [
            (f"bs={bs} whole replay", full),
            (f"bs={bs} replay, launch object stubbed", prologue),
            (f"bs={bs} launch object (checks + launch)", launcher),
            (f"bs={bs}   bare kernel[grid](...) launch", bare),
            (f"bs={bs}   3 prologue slices", host_us(lambda: (sl[:bs], slc[:bs], rpi[:bs]))),
            (f"bs={bs}   set_nsa_prefill_impl", host_us(lambda: backend.set_nsa_prefill_impl(forward_batch=None))),
        ]
    for name, us in rows:
        print(f"{name:<42} {us:8.1f} us")


def kernels() -> None:
    """Kernel-only GPU time (do_bench median) of the final stage's launch, block-size variants, and peers."""
    module = stages.load(stages.final())
    peer, _ = load_upstream_peer()
    bandwidth = copy_bandwidth()
    print(environment("cuda"), stages.final(), f"copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    for bs, ps in ((128, 1), (128, 64), (256, 1), (256, 64), (32, 64)):
        config = Config(bs, 4, ps, 65536, context_len=CONTEXT, spread=False)
        runner = prepared_runner(module, config, "cuda")
        jit, args, kwargs = captured_launch(lambda: runner.replay_metadata(bs))
        line = [f"bs={bs:<4} D=4 ps={ps:<3} 64k floor {config.floor_us(bandwidth):6.1f} us |"]
        for block, warps in ((1024, 4), (1024, 8), (2048, 4), (2048, 8), (4096, 8)):
            variant = dict(kwargs, BLOCK_COLS=block, num_warps=warps)  # the launch's own grid
            line.append(f"{block}/{warps}: {kernel_us(lambda: jit.run(*args, **variant)):6.1f}")
        if peer:
            ref = prepared_runner(stages.load(stages.BASELINE), config, "cuda")
            line.append(f"| upstream: {kernel_us(upstream_call(peer, ref, bs, config.D, ps, config.topk)):6.1f}")
            del ref
        print(" ".join(line), flush=True)
        torch.cuda.empty_cache()


def ab(rounds: int = 1000) -> None:
    """Host µs of every stage, interleaved call by call (shuffled order each round), so drift hits all alike."""
    modules = {name: stages.load(name) for name in stages.names()}
    print(environment("cuda"), f"{rounds} interleaved rounds")
    print(f"{'bs':>4} {'D':>2} {'ps':>3} {'len':>6} | " + " | ".join(f"{n:>18}" for n in modules))
    rng = random.Random(0)
    for bs, draft, ps, maxlen in ((1, 2, 1, 4096), (1, 4, 64, 4096), (1, 4, 64, 65536), (32, 4, 64, 65536), (128, 2, 1, 4096)):
        config = Config(bs, draft, ps, maxlen, context_len=CONTEXT, spread=False)
        calls = {}
        for name, module in modules.items():
            runner = prepared_runner(module, config, "cuda")
            calls[name] = lambda r=runner: r.replay_metadata(bs)
        samples = {name: [] for name in calls}
        order = list(calls)
        for _ in range(rounds):
            rng.shuffle(order)
            for name in order:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                calls[name]()
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
        main(sys.argv[1] if len(sys.argv) > 1 else stages.final())
