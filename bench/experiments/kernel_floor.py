"""Issue 11 item 3: can the final kernel reach 1.2x the memory floor at a 163840-wide table?

Each variant is the final stage's kernel module with a small source transform (`VARIANTS`: text
replaced in harness.stages.kernel_module(final()).__file__, the result loaded as a module of its
own), so no kernel is copied and the winning change is an exact diff of the series' kernel.

Outcomes of the first run: reports/h100/NOTES.md (rotation and request-major order win 11 % on full
160k rows, 2 % on 64k rows in the 160k table; the stride is not the cause).

Hypothesis (issue 11): at width 163840 a row is 640 KiB = 5 * 2^17 bytes, so the programs of
different requests, all starting at the same column, hit addresses a large power of two apart at
the same moment and may crowd a few memory channels. Predictions, written before the run:
  - `rotate-*` (each request starts its walk over the row at another column block) brings 163840
    from ~1.35x to ~1.1x of the floor and leaves 65600 where it is;
  - the diagnostic width 163904 (64 columns more: the same fill ratio, the stride no longer a
    multiple of 2^17) runs at ~1.1x with the unchanged kernel if alignment is the cause;
  - BLOCK_COLS, num_warps, more programs per multiprocessor and streaming cache hints move
    163840 by < 5 % (the issue saw little from the first two).

    python3 -m bench.experiments.kernel_floor OUT.json [variant ...]     (GPU; NSA_USE_BUILD=1 without git)

Every variant's buffers are compared whole (dtype, shape, stride, every element, stale columns
included) with the unchanged kernel's before any timing. Timing: triton.testing.do_bench median of
the bare launch, all variants of one input interleaved for ROUNDS rounds; median and IQR of the
rounds. Floor: bench.inputs.Config.bytes_moved() / the device-to-device copy bandwidth measured here.
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

ROUNDS = 7
D, TOPK = 4, 2048
# (bs, page size, table width, every request's kv length)
INPUTS = [
    (32, 64, 163840, 65536),
    (128, 64, 163840, 65536),
    (256, 64, 163840, 65536),
    (64, 64, 163840, 163840),
    (128, 1, 163840, 65536),
    (128, 64, 65600, 65536),
    (128, 64, 163904, 65536),  # diagnostic: 163840's fill ratio without its power-of-two stride
]

_LOOP = "for block in range(first_block, tl.cdiv(max_seqlen_k, BLOCK_COLS), COL_PROGRAMS):\n"


def _rotate(k: int) -> list[tuple[str, str]]:
    """Request i walks its row's column blocks starting k*i blocks in, wrapping: a permutation of the
    blocks each row copies, so every buffer stays bit-identical."""
    indent = " " * 8
    return [(_LOOP, "n_blocks = tl.cdiv(max_seqlen_k, BLOCK_COLS)\n    "
                    "for step in range(first_block, n_blocks, COL_PROGRAMS):\n"
                    f"{indent}block = (step + req * {k}) % n_blocks\n")]


_BODY = "    # A negative pool index"
_END = "\n\ndef _check_int32_buffer"


def request_major(source: str) -> str:
    """Program k of the N = bs * COL_PROGRAMS walks the (request, column block) items k, k + N, ...,
    request-major: at any moment the grid works on about N / n_blocks neighbouring requests, not on
    every request of the batch at once, so far fewer rows (and memory pages) are open together.
    Each item's request prologue (pool index, row pointers) is recomputed: a few scalar loads.
    (The same grid and launch; only the kernel body's walk changes.)"""
    head, rest = source.split(_BODY, 1)
    body, tail = rest.split(_END, 1)
    head = variant_source(head, [(
        "    max_seqlen_k = tl.minimum(longest + DRAFT, WIDTH)\n",
        "    max_all = tl.minimum(longest + DRAFT, WIDTH)\n    n_blocks = tl.cdiv(max_all, BLOCK_COLS)\n"
        "    for item in range(req * COL_PROGRAMS + first_block, BS * n_blocks, BS * COL_PROGRAMS):\n"
        "        req = item // n_blocks\n        block = item % n_blocks\n        max_seqlen_k = max_all\n")])
    body = variant_source(_BODY + body, [(_LOOP, "if True:\n")])
    body = "".join("    " + line if line.strip() else line for line in body.splitlines(True))
    return head + body + _END + tail


VARIANTS: dict = {  # name -> [(old, new), ...] or a function of the source
    "final": [],
    "rotate-7": _rotate(7),
    "request-major": request_major,
    "block-2048": [("BLOCK_COLS = 1024", "BLOCK_COLS = 2048")],
    "warps-8": [("num_warps=4", "num_warps=8")],
    "programs-x2": [("triton.cdiv(4 * sms, bs)", "triton.cdiv(8 * sms, bs)")],
    "stream-hints": [("tokens = tl.load(src_row + cols, mask=body)",
                      'tokens = tl.load(src_row + cols, mask=body, eviction_policy="evict_first")'),
                     ("tl.store(dst_rows + d * PAGE_TABLE_STRIDE + cols, tokens, mask=body)",
                      'tl.store(dst_rows + d * PAGE_TABLE_STRIDE + cols, tokens, mask=body, cache_modifier=".cs")')],
}


def base_stage() -> str:
    """The newest stage whose kernel module is the target-verify-only kernel the variants edit: the
    experiment of record (NOTES.md) ran on it, before patch 0006 turned it into the three-mode family."""
    for name in reversed(stages.patched()):
        try:
            text = Path(stages.kernel_module(name).__file__).read_text()
        except LookupError:
            continue
        if "class TargetVerifyMetadataLaunch" in text:
            return name
    raise LookupError("no stage holds the target-verify-only kernel the variants were written against")


def variant_source(source: str, replacements) -> str:
    """`source` with each (old, new) of `replacements` applied once, or `replacements(source)`."""
    if callable(replacements):
        return replacements(source)
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


def main(out: str, *names: str) -> None:
    import triton

    from bench.timing import copy_bandwidth, interleaved_kernel_us

    names = ("final",) + tuple(n for n in names or VARIANTS if n != "final")  # "final": the reference
    modules = {name: load_variant(name, VARIANTS[name]) for name in names}
    bandwidth = copy_bandwidth()
    env = dict(card=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               final_stage=stages.final(), variants_of=base_stage(), copy_bandwidth=bandwidth, rounds=ROUNDS, draft=D)
    print(env, flush=True)
    rows = []
    for bs, page, width, length in INPUTS:
        req_to_token = torch.randint(0, 1 << 30, (bs + 8, width), dtype=torch.int32, device="cuda")
        seq_lens = torch.full((bs,), min(length, width) - D, dtype=torch.int32, device="cuda")
        pool = torch.randperm(bs + 8, device="cuda")[:bs].to(torch.int32)
        launches, outputs = {}, {}
        for name, module in modules.items():
            meta = poison(launch_buffers(bs, D, page, width, "cuda"), seed=bs + width)
            launches[name] = module.TargetVerifyMetadataLaunch(meta, req_to_token, D, TOPK, seq_lens, pool)
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
        times = interleaved_kernel_us(
            {name: (lambda launch=launch: launch(seq_lens, pool)) for name, launch in launches.items()}, ROUNDS)
        floor = Config(bs, D, page, min(length, width), context_len=width).floor_us(bandwidth)
        row = dict(bs=bs, page_size=page, width=width, length=length, floor_us=floor, variants={})
        for name in modules:
            row["variants"][name] = dict(**times[name], vs_floor=times[name]["us"] / floor, bit_exact=exact[name])
        rows.append(row)
        print(f"bs {bs:3} page {page:2} width {width:6} len {length:6} floor {floor:6.1f} us | " + "  ".join(
            f"{n} {v['us']:.1f} [{v['q1']:.1f}, {v['q3']:.1f}] {v['vs_floor']:.2f}x" for n, v in row["variants"].items()), flush=True)
        del req_to_token, launches, outputs
        torch.cuda.empty_cache()
        with open(out, "w") as f:  # after every input: a run cut short still leaves its rows
            json.dump({"environment": env, "rows": rows, "diffs": {n: diff(n) for n in names if n != "final"}},
                      f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:])
