"""Issue 11 item 4: an eager launch within 1.5x of an empty launch with the same arguments.

`BoundLaunch` wraps the final stage's launch object: it takes the kernel the launch object already
compiled at capture (JITFunction.warmup returns the CompiledKernel from Triton's cache) and launches
it straight through CompiledKernel.run with the argument list built once, skipping JITFunction.run's
per-call work (binding, specialization key, cache lookup, grid canonicalization). A compiled kernel
is specialized on its tensors' pointer alignment, so the bound launch is used only on the static
inputs it was bound to (same data_ptr, dtype, shape); anything else, or a launch hook (a profiler),
goes through the launch object.

    python3 -m notebook.bound_launch OUT.json        (GPU; NSA_USE_BUILD=1 without git)

Checks: the bound launch and its fallback write buffers bit-identical (whole, stale columns
included) to the launch object's. Host µs: wall time of one call with the queue drained before it,
all implementations interleaved (order shuffled every round), median and IQR over ROUNDS rounds.
Beside it: `nop-args`, an empty kernel with exactly our kernel's parameters (tritonbench's
nop_with_args) launched the usual way with our arguments; `nop-1`, an empty one-argument launch.
"""

from __future__ import annotations

import json
import sys

import torch

from bench.inputs import launch_buffers, poison
from bench.timing import captured_launch, interleaved_host_us, launch_kwargs
from harness import stages

ROUNDS = 3000
D, PAGE, TOPK, WIDTH = 4, 64, 2048, 163840
BATCH_SIZES = (1, 32, 128, 256)


def _hook_holder():
    """Where Triton keeps its launch enter/exit hooks: knobs.runtime from 3.4 on, CompiledKernel before."""
    try:
        from triton import knobs

        return knobs.runtime
    except ImportError:  # older Triton
        from triton.compiler import CompiledKernel

        return CompiledKernel


class BoundLaunch:
    """`launch` (a launch object) with its compiled kernel bound once to its static inputs."""

    def __init__(self, launch):
        from triton.runtime.driver import driver

        self.launch = launch
        seq_lens, req_pool_indices = launch.static_inputs[:2]  # target verify: no accept_length
        jit_fn, args, kwargs = captured_launch(lambda: launch(seq_lens, req_pool_indices))
        kwargs = launch_kwargs(kwargs)
        compiled = jit_fn.warmup(*args, grid=launch.grid, **kwargs)  # the kernel compiled at capture
        compiled[launch.grid]  # loads the module and function handles (CompiledKernel._init_handles)
        # Every kernel parameter in order, constexprs included: what JITFunction.run hands the launcher.
        self.args = tuple(args) + tuple(kwargs[name] for name in jit_fn.arg_names[len(args):])
        self.grid = tuple(launch.grid) + (1,) * (3 - len(launch.grid))
        self.compiled, self.run = compiled, compiled.run
        self.function, self.packed_metadata = compiled.function, compiled.packed_metadata
        device = seq_lens.get_device()
        get_stream = driver.active.get_current_stream
        self.stream = lambda: get_stream(device)
        self.bound = tuple((t.data_ptr(), t.dtype, t.shape) for t in (seq_lens, req_pool_indices))
        self.hooks = _hook_holder()

    def launch_bound(self) -> None:
        """The launch on the bound static inputs, no checks: what __call__ does once they pass."""
        g0, g1, g2 = self.grid
        self.run(g0, g1, g2, self.stream(), self.function, self.packed_metadata, None, None, None, *self.args)

    def __call__(self, seq_lens: torch.Tensor, req_pool_indices: torch.Tensor) -> None:
        if ((seq_lens.data_ptr(), seq_lens.dtype, seq_lens.shape),
                (req_pool_indices.data_ptr(), req_pool_indices.dtype, req_pool_indices.shape)) != self.bound \
                or self.hooks.launch_enter_hook is not None or self.hooks.launch_exit_hook is not None:
            self.launch(seq_lens, req_pool_indices)  # other inputs or a profiler: the generic path
            return
        self.launch_bound()


def assert_same_buffers(got, want) -> None:
    for field, w in vars(want).items():
        if isinstance(w, torch.Tensor):
            torch.testing.assert_close(getattr(got, field), w, rtol=0, atol=0, check_stride=True)


def main(out: str) -> None:
    import triton

    from bench.peers import empty_launch, nop_with_args

    kernel = stages.kernel_module(stages.final())
    req_to_token = torch.randint(0, 1 << 30, (max(BATCH_SIZES) + 8, WIDTH), dtype=torch.int32, device="cuda")
    env = dict(card=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               final_stage=stages.final(), rounds=ROUNDS, draft=D, page_size=PAGE, width=WIDTH)
    print(env, flush=True)
    rows = []
    for bs in BATCH_SIZES:
        seq_lens = torch.randint(1, 65536, (bs,), dtype=torch.int32, device="cuda")
        pool = torch.randperm(bs + 8, device="cuda")[:bs].to(torch.int32)
        reference, bound_meta, fallback_meta = (poison(launch_buffers(bs, D, PAGE, WIDTH, "cuda"), seed=bs)
                                                for _ in range(3))
        plain = kernel.CudaGraphMetadataLaunch(reference, req_to_token, D, TOPK, seq_lens, pool)
        bound = BoundLaunch(kernel.CudaGraphMetadataLaunch(bound_meta, req_to_token, D, TOPK, seq_lens, pool))
        fallback = BoundLaunch(kernel.CudaGraphMetadataLaunch(fallback_meta, req_to_token, D, TOPK, seq_lens, pool))
        for written_at_bind in (bound_meta, fallback_meta):  # binding launched once: poison again
            poison(written_at_bind, seed=bs)
        plain(seq_lens, pool)
        bound(seq_lens, pool)
        fallback(seq_lens.clone(), pool.clone())  # other pointers: must take the generic path
        torch.cuda.synchronize()
        assert_same_buffers(bound_meta, reference)
        assert_same_buffers(fallback_meta, reference)

        jit_fn, args, kwargs = captured_launch(lambda: plain(seq_lens, pool))
        kwargs = launch_kwargs(kwargs)
        nop = nop_with_args(jit_fn)
        grid = plain.grid
        calls = {
            "launch-object": lambda: plain(seq_lens, pool),
            "bound": lambda: bound(seq_lens, pool),
            "bound-unchecked": bound.launch_bound,
            "compiled-getitem": lambda: bound.compiled[bound.grid](*bound.args),  # CompiledKernel.__getitem__ wants 3 dims
            "nop-args": lambda: nop[grid](*args, **kwargs),
            "nop-1": empty_launch("cuda"),
        }
        times = interleaved_host_us(calls, ROUNDS)
        ratio = {name: times[name]["us"] / times["nop-args"]["us"] for name in times}
        rows.append(dict(bs=bs, grid=list(grid), bit_exact=True, host=times, vs_nop_args=ratio))
        print(f"bs {bs:3}: " + "  ".join(f"{n} {t['us']:.1f} [{t['q1']:.1f}, {t['q3']:.1f}] ({ratio[n]:.2f}x)"
                                         for n, t in times.items()), flush=True)
        with open(out, "w") as f:  # after every bs: a run cut short still leaves its rows
            json.dump({"environment": env, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:])
