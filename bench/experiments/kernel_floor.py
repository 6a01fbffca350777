"""Issue 11 item 3: can the final kernel reach 1.2x the memory floor at a 163840-wide table?

Each variant is the final stage's kernel module with a small source transform (`VARIANTS`: text
replaced in harness.stages.kernel_module(final()).__file__, the result loaded as a module of its
own), so no kernel is copied and the winning change is an exact diff of the series' kernel.

Outcomes (reports/h100/NOTES.md, "Issue 11: the row stride"):
  1. kernel_floor_rotate7.json, kernel_floor_request_major.json (stage `graph`'s kernel): rotating
     each request's start block, or walking request-major, wins 11 % on full 160k rows and 1-2.5 %
     on 64k rows in the 160k table.
  2. kernel_floor_geometry.json, kernel_floor_variants.json (the three-mode kernel as it was, named
     `final` there): no launch shape or cache hint moves 64k rows in the 160k table; each program
     copying one contiguous run of blocks (`contiguous-chunks`) cuts full 160k rows from 1.33x to
     1.13x. The series now walks that way; `interleaved-walk` here is the walk it replaced.
  3. kernel_floor_stride.json: the same kernel and bytes run at 1.15-1.22x the floor in tables 2048
     columns narrower or wider, 8192 wider, 131072 or 196608 wide, and at 1.37-1.44x at 163840 and
     327680: rows a multiple of 640 KiB (5 * 2^17 bytes) apart. Every row then uses the same part
     of what looks like a 640 KiB-periodic memory interleave, so the bytes themselves crowd a few
     channels, whatever order they are written in. The table's width is upstream's (the context
     length) and a replay must leave its layout as it is, so this is the card's floor for it.
  4. `--inputs full-rows`, prediction written before the run: bs 32 with full 160k rows stays at
     ~1.22x from a fixed cost (launch, the prologue's dependent loads, the last block's drain) of ~5 µs
     with ~4 programs per multiprocessor; `programs-x2`, `block-2048` (more bytes in flight per
     program) or `early-pool-load` (one load latency less) cut ~1 µs there and nothing at bs 128.

    python3 -m bench.experiments.kernel_floor OUT.json [--inputs stride] [variant ...]
                                                 (GPU; NSA_USE_BUILD=1 without git)

Every variant's buffers are compared whole (dtype, shape, stride, every element, stale columns
included) with the unchanged kernel's before any timing. Timing: triton.testing.do_bench median of
the bare launch, all variants and torch references of one input interleaved for ROUNDS rounds;
median and quartiles of the rounds. Floor: bench.inputs.Config.bytes_moved() / the device-to-device
copy bandwidth measured here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

from bench.inputs import Config, launch_buffers, poison
from harness import stages

ROUNDS = 5
D, TOPK = 4, 2048
# (bs, page size, table width, every request's kv length)
INPUTS = [
    (32, 64, 163840, 65536),
    (128, 64, 163840, 65536),
    (256, 64, 163840, 65536),
    (128, 1, 163840, 65536),
    (32, 64, 163840, 163840),
    (64, 64, 163840, 163840),
    (128, 64, 163840, 163840),
    (128, 64, 65600, 65536),
    (256, 64, 65600, 26240),  # diagnostic: 40 % of each row used, as 64k of 163840, in a 2.5x smaller span
]
# `--inputs stride`: the same 64k batches in tables whose rows are a little wider or narrower than
# 163840 columns (640 KiB = 5 * 2^17 bytes), and at other multiples of 2^17 bytes.
STRIDE_PROBE = [
    (bs, 64, width, 65536)
    for bs in (128, 256)
    for width in (163840, 161792, 165888, 172032, 131072, 196608, 327680)
]
# `--inputs full-rows`: where the walk no longer crowds channels, what is left above the floor.
FULL_ROWS = [
    (1, 64, 163840, 65536),
    (32, 64, 163840, 65536),
    (32, 64, 163840, 163840),
    (64, 64, 163840, 163840),
    (128, 64, 163840, 163840),
    (128, 64, 65600, 65536),
    (256, 64, 65600, 65536),
]
INPUT_SETS = {"variants": INPUTS, "stride": STRIDE_PROBE, "full-rows": FULL_ROWS}

_RUN_WALK = (
    "    n_blocks = tl.cdiv(max_seqlen_k, BLOCK_COLS)\n"
    "    run = tl.cdiv(n_blocks, col_programs)\n"
    "    run_end = tl.minimum((col_program + 1) * run, n_blocks)\n"
    "    for block in range(col_program * run, run_end):\n"
)
_LOOP = "    for block in range(col_program * run, run_end):\n"
_STORE_MASK = "                mask=cols < row_body_end,\n"
_POOL_LOAD = "    pool_row = tl.load(req_pool_indices_ptr + req).to(tl.int64)\n"

VARIANTS: dict = {  # name -> [(old, new), ...]
    "final": [],
    # The walk the second run replaced (its `contiguous-chunks` is `final` now): blocks p, p + COL_PROGRAMS, ...
    "interleaved-walk": [(_RUN_WALK, "    for block in range(col_program, tl.cdiv(max_seqlen_k, BLOCK_COLS), col_programs):\n")],
    "programs-x4": [("triton.cdiv(4 * sms, bs)", "triton.cdiv(16 * sms, bs)")],
    "warps-8-block-2048": [("BLOCK_COLS = 1024", "BLOCK_COLS = 2048"), ("num_warps=4", "num_warps=8")],
    "stream-hints": [("tokens = tl.load(src_row + cols, mask=body)",
                      'tokens = tl.load(src_row + cols, mask=body, eviction_policy="evict_first")'),
                     (_STORE_MASK, _STORE_MASK + '                cache_modifier=".cs",\n')],
    "pipelined": [(_LOOP, "    for block in tl.range(col_program * run, run_end, num_stages=3):\n")],
    "programs-x2": [("triton.cdiv(4 * sms, bs)", "triton.cdiv(8 * sms, bs)")],
    "block-2048": [("BLOCK_COLS = 1024", "BLOCK_COLS = 2048")],
    # The pool index load issued before the scan for the longest request, so the two latencies overlap.
    "early-pool-load": [(_POOL_LOAD, ""), ("    longest = 0\n", _POOL_LOAD + "    longest = 0\n")],
}


def base_stage() -> str:
    """The stage whose kernel module the variants edit: the final one."""
    return stages.final()


def variant_source(source: str, replacements) -> str:
    """`source` with each (old, new) of `replacements` applied once."""
    for old, new in replacements:
        if source.count(old) != 1:
            raise LookupError(f"the final kernel module no longer holds exactly one {old!r}: update VARIANTS")
        source = source.replace(old, new)
    return source


def load_variant(name: str, replacements: list[tuple[str, str]]):
    """The final stage's kernel module with `replacements` applied, imported as a module of its own
    (Triton reads a kernel's source from its file, so the text is written to one)."""
    original = Path(stages.kernel_module(base_stage()).__file__)
    folder = Path(tempfile.mkdtemp(prefix="kernel-variant-"))
    path = folder / f"variant_{name.replace('-', '_').replace('+', '_')}.py"
    path.write_text(variant_source(original.read_text(), replacements))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def diff(name: str) -> str:
    """The exact change a variant makes, as a unified diff against the final kernel module."""
    import difflib

    original = Path(stages.kernel_module(base_stage()).__file__).read_text()
    changed = variant_source(original, VARIANTS[name])
    return "".join(difflib.unified_diff(original.splitlines(True), changed.splitlines(True),
                                        "a/kernel.py", f"b/kernel.py ({name})"))


def geometry(bs: int, width: int, length: int, device="cuda") -> dict:
    """torch writing the page-table addresses a replay writes (rows of `width`, the first `length`
    columns of each, every request's source row stored into its D rows), strided as the table is and
    packed into a table exactly `length` wide: name -> call. Same bytes; only the layout differs."""
    calls = {}
    for layout, w in (("strided", width), ("packed", length)):
        src = torch.randint(0, 1 << 30, (bs, w), dtype=torch.int32, device=device)
        out = torch.zeros(bs, D, w, dtype=torch.int32, device=device)
        rows, source = out[:, :, :length], src[:, None, :length].expand(bs, D, length)
        calls[f"torch-copy-{layout}"] = lambda rows=rows, source=source: rows.copy_(source)
        calls[f"torch-fill-{layout}"] = lambda rows=rows: rows.fill_(7)
    return calls


def main(out: str, *args: str) -> None:
    import triton

    from bench.timing import copy_bandwidth, interleaved_kernel_us

    inputs, names = INPUTS, list(args)
    if names[:1] == ["--inputs"]:
        inputs, names = INPUT_SETS[names[1]], names[2:]
    names = ("final",) + tuple(n for n in names or VARIANTS if n != "final")  # "final": the reference
    modules = {name: load_variant(name, VARIANTS[name]) for name in names}
    bandwidth = copy_bandwidth()
    env = dict(card=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               final_stage=stages.final(), variants_of=base_stage(), copy_bandwidth=bandwidth, rounds=ROUNDS, draft=D)
    print(env, flush=True)
    rows = []
    for bs, page, width, length in inputs:
        req_to_token = torch.randint(0, 1 << 30, (bs + 8, width), dtype=torch.int32, device="cuda")
        seq_lens = torch.full((bs,), min(length, width) - D, dtype=torch.int32, device="cuda")
        pool = torch.randperm(bs + 8, device="cuda")[:bs].to(torch.int32)
        launches, outputs = {}, {}
        for name, module in modules.items():
            meta = poison(launch_buffers(bs, D, page, width, "cuda"), seed=bs + width)
            launches[name] = module.CudaGraphMetadataLaunch(meta, req_to_token, D, TOPK, seq_lens, pool)
            launches[name](seq_lens, pool)
            outputs[name] = meta
        exact = {}
        for name in modules:
            try:
                for field, want in vars(outputs["final"]).items():
                    if isinstance(want, torch.Tensor):
                        torch.testing.assert_close(getattr(outputs[name], field), want, rtol=0, atol=0,
                                                   check_stride=True)
                exact[name] = True
            except AssertionError as e:
                exact[name] = False
                print(f"  {name}: NOT bit-exact: {str(e).splitlines()[0]}", flush=True)
        references = geometry(bs, width, min(length, width))
        calls = {name: (lambda launch=launch: launch(seq_lens, pool)) for name, launch in launches.items()}
        times = interleaved_kernel_us({**calls, **references}, ROUNDS)
        floor = Config(bs, D, page, min(length, width), context_len=width).floor_us(bandwidth)
        row = dict(bs=bs, page_size=page, width=width, length=length, floor_us=floor, variants={},
                   geometry={name: times[name] for name in references})
        for name in modules:
            row["variants"][name] = dict(**times[name], vs_floor=times[name]["us"] / floor, bit_exact=exact[name])
        rows.append(row)
        print(f"bs {bs:3} page {page:2} width {width:6} len {length:6} floor {floor:6.1f} us | " + "  ".join(
            f"{n} {v['us']:.1f} [{v['q1']:.1f}, {v['q3']:.1f}] {v['vs_floor']:.2f}x" for n, v in row["variants"].items())
            + " | " + "  ".join(f"{n} {v['us']:.1f}" for n, v in row["geometry"].items()), flush=True)
        del req_to_token, launches, outputs, references, calls
        torch.cuda.empty_cache()
        with open(out, "w") as f:  # after every input: a run cut short still leaves its rows
            json.dump({"environment": env, "rows": rows, "diffs": {n: diff(n) for n in names if n != "final"}},
                      f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:])
