"""Issue 11 item 3: can the final kernel reach 1.2x the memory floor at a 163840-wide table?

Each variant is the kernel these experiments measured with a small source transform (`VARIANTS`:
text replaced in notebook/kernel_floor_base.py, the result loaded as a module of its own), so the
winning change is an exact diff of that kernel. kernel_floor_base.py is the final stage's kernel
module as of commit aec2bdf, when every run below was taken, kept verbatim: the series' kernel has
changed since (one MODE constexpr, no CPU seams), and a lab notebook reruns what it recorded.

Outcomes (notebook/NOTES.md, "Issue 11: the row stride"):
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

  5. `--inputs fixed-cost`, prediction written before the run: (a) bs 1 and 8 take the same time in
     the 165888-wide twin (a fixed cost), bs 128 at 4k and bs 32 at 64k less (the stride); (b) the
     empty kernel with our arguments takes ~2-3 µs under do_bench, so about 3 µs of bs 1's 6.2 are
     the chain of dependent loads; (c) `scan-program` (the length scan in a program of its own) cuts
     ~1 µs at bs 32 with full rows, where program (0, 0) ends last by the length of the scan, and
     about as much at bs 1; with `early-pool-load` it brings bs 32's full rows under 1.2x; (d) the
     driver's own 2D memset writes the 640 KiB-strided address set >= 1.2x slower than packed, and
     the 165888-wide one about as fast as packed.
     Outcome (kernel_floor_fixed_cost.json): (a) confirmed: bs 1 and 8 take the same time in the twin,
     bs 32 at 64k 2.3 µs less, bs 128 at 4k 1.1 µs less; (b) the empty kernel takes 3.9-4.4 µs, more
     than predicted: bs 1 is 2.2 µs above it; (c) refuted: no scan placement moves bs 32's full rows
     (44.7-45.2 against 44.8), and `scan-program`'s extra grid column costs 2-5 µs at bs 128;
     `early-pool-load` no longer moves anything; (d) confirmed: the driver's memset takes 17.1 against
     14.6 µs (bs 32 at 64k), 7.6 against 6.3 (bs 128 at 4k), equal in the twin and on full rows.
  6. `prefetch-next`, `warps-8` on the same inputs, prediction written before the run: bs 32's full
     rows are nop (4 µs) + two dependent loads (~2 µs) + the bytes at ~1.07x the floor's rate, while
     the driver writes at 3.2 TB/s; if the copy waits on each block's load, two loads in flight per
     program (or twice the warps) cut bs 32 and bs 128 full rows by >= 3 %.
     Outcome (kernel_floor_prefetch.json): refuted. `prefetch-next` costs 0.6 µs at bs 32 and 4.4 µs
     at bs 128 with full rows, `warps-8` moves nothing by more than 1 %, both together cost 1.3 and
     10.6 µs. The copy does not wait on its loads; what is left on full rows is the empty kernel's
     time on this timer, which bench.record now measures beside every input.
  7. `simplest-kernel` (notebook/broadcast_rows.py: one program per request and 1024 columns,
     the length given by the host, nothing else) on the same inputs, prediction written before the
     run: it writes the same bytes no faster than ours on full rows (44-45 µs at bs 32, ~162 at bs
     128), i.e. ~1.1x the floor's rate plus the empty kernel is what this read/write mix costs on an
     H100; packed, it is as slow on full rows and faster on the 64k-in-163840 ones.
     Outcome (kernel_floor_simplest.json): confirmed on full rows at bs 32 (45.4-45.6 against our
     45.2 µs) and at 65600 it is 4 % faster (66.6 against 69.3); at bs 128 with full rows its 20480
     programs take 191.6 against our 162.8. Packed it gains 2 µs at bs 32 in the 163840 table.
  8. `bulk-store-kernel` (the same, each block's D rows written by one Hopper bulk tensor store, in
     contiguous runs as ours), prediction written before the run: if the stores' issue is what holds
     the mix at ~2.6 TB/s, bulk stores bring bs 32's full rows to <= 42 µs; otherwise it lands within
     3 % of ours.
     Outcome (kernel_floor_bulk_store.json): refuted both ways: bulk stores are slower everywhere
     (52.0 against 45.1 µs at bs 32 with full rows, 182.1 against 162.2 at bs 128, 77.5 against 69.1
     at 65600), each program waiting on its store's shared-memory staging.
  9. `simplest-fill-strided` (the simplest kernel storing a constant: no loads) and `rows-outer` (each
     program writes its request's rows one after another, re-reading the source run from L2: one
     write stream per program instead of D), prediction written before the run: Triton's fill runs
     within 5 % of the driver's memset, so stores alone are not slow and the mix is what costs; if
     D concurrent write streams per program cost DRAM page misses, rows-outer cuts full rows by >= 3 %,
     else it lands within 2 % of ours.
     Outcome (kernel_floor_rows_outer.json): both refuted. Triton's fill is 12-25 % slower than the
     memset on full rows (34.2 against 29.8-30.5 µs at bs 32, 132.3 against 105.5 at bs 128), 8 % at
     65600; `rows-outer` costs 35-54 % (60.4 against 44.7 at bs 32). But the simplest kernels launch
     one block of every request together, so at 163840 their neighbouring programs write the same
     column of rows 640 KiB apart: they are no floor there.
  10. `simplest-kernel-along-rows`, `simplest-fill-along-rows` (their grids transposed: neighbouring
     programs take neighbouring blocks of one row), prediction written before the run: along rows,
     the fill comes within 5 % of the memset on full rows, and the copy gains >= 5 % over ours there;
     if it does, our grid's order is what to change next.

     Outcome (kernel_floor_along_rows.json): confirmed. Along rows the fill matches the memset (29.9
     against 30.1 µs at bs 32, 108.3 against 106.0 at bs 128), and the copy beats ours by 4-6 % on
     full rows and at 65600: 42.3 against 44.6 µs at bs 32 (1.17x the floor), 155.3 against 162.1 at
     bs 128, 65.2 against 69.2 at 65600.
  11. `along-rows` (our grid transposed: neighbouring programs take neighbouring runs of one row) and
     `along-rows-one-block` (also one block per program), prediction written before the run: `along-
     rows` cuts full rows and 65600 by >= 3 % and leaves the 64k-in-163840 inputs within 2 %;
     `along-rows-one-block` matches the simplest kernel along rows on full rows and loses on partly
     used rows, where most of its programs find nothing to copy.

     Outcome (kernel_floor_along_rows_ours.json, kernel_floor_along_rows_variants.json): `along-rows`
     alone moves nothing (within 2 % but bs 256 at 64k, +4 %): refuted. `along-rows-one-block` cuts
     every input with a large floor: full rows 44.9 -> 42.3 (bs 32, 1.18x), 85.6 -> 80.1 (bs 64),
     162.7 -> 153.5 (bs 128, 1.07x); 65600 69 -> 65.7; even the 64k-in-163840 ones, 156.3 -> 148.4 at
     bs 256. But its 20480 programs cost bs 128 x 4k 9 µs (9.9 -> 18.5): the idle ones still find the
     batch's max before they exit.
  12. `along-rows-runs-{2,4,8}` (runs of a fixed 2, 4 or 8 blocks, set by the width: 1/2 to 1/8 of the
     programs), prediction written before the run: runs of 2-4 keep most of one-block's gain on full
     rows and cut the 4k cost to <= 3 µs; 8 gives back part of the gain.

     Outcome (kernel_floor_runs_fixed.json, kernel_floor_runs_variants.json): refuted. Fixed runs give
     back most of one-block's gain (bs 128 full rows: 157.7 / 161.2 / 163.4 for runs of 2 / 4 / 8
     against 153.8) and still pay 2-4 µs at 4k, and bs 1 pays the longer chain (7.0-11.0 against 6.2).
  13. `flat-walk` (every program walks the batch's (request, block) items row-major, p, p + P, ...:
     the window of blocks in flight slides along the rows, no program idles) with ~4 and ~16 programs
     per multiprocessor (`flat-walk-x4`), prediction written before the run: `flat-walk-x4` matches
     one block per program along rows on the large inputs (within 2 %) and `final` at 4k and bs 1;
     `flat-walk` (as session 1's request-major) keeps about half the gain.
     Outcome (kernel_floor_flat_fixed.json, kernel_floor_flat_variants.json): refuted. Both keep 4k
     and bs 1 where `final` is, but gain only 1-3 % on the large inputs (bs 32 full rows: 43.5-44.2
     for `flat-walk-x4` against 42.5-42.8 one block per program, 44.6-45.2 final). The gain needs
     a program per (request, block), so a grid as wide as the table: not ported.

    python3 -m notebook.kernel_floor OUT.json [--inputs stride] [variant ...]
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
# `--inputs fixed-cost`: the inputs still above their target on the series' kernel (small floors, and bs 32
# with full rows), each small one beside a twin in a table 2048 columns wider (rows 8 KiB off the 640 KiB
# multiple): is what is left a fixed cost, or the row stride?
FIXED_COST = [
    (bs, 64, width, length)
    for bs, length in ((1, 65536), (8, 65536), (128, 4096), (32, 65536))
    for width in (163840, 165888)
] + [(32, 64, 163840, 163840), (128, 64, 163840, 163840), (128, 64, 65600, 65536)]
INPUT_SETS = {"variants": INPUTS, "stride": STRIDE_PROBE, "full-rows": FULL_ROWS, "fixed-cost": FIXED_COST}

_RUN_WALK = (
    "    n_blocks = tl.cdiv(max_seqlen_k, BLOCK_COLS)\n"
    "    run = tl.cdiv(n_blocks, col_programs)\n"
    "    run_end = tl.minimum((col_program + 1) * run, n_blocks)\n"
    "    for block in range(col_program * run, run_end):\n"
)
_LOOP = "    for block in range(col_program * run, run_end):\n"
_STORE_MASK = "                mask=cols < row_body_end,\n"
_POOL_LOAD = "    pool_row = tl.load(req_pool_indices_ptr + req).to(tl.int64)\n"
_SCAN_AT = "    if (req == 0) & (col_program == 0):\n"
_SCAN_CALL_END = "            BLOCK_DRAFT,\n        )\n    longest = 0\n"
_SCAN_PROGRAM = [
    ("    col_program = tl.program_id(1)\n" + _SCAN_AT,
     "    col_program = tl.program_id(1) - 1\n    if col_program < 0:\n        if req != 0:\n            return\n"),
    (_SCAN_CALL_END, "            BLOCK_DRAFT,\n        )\n        return\n    longest = 0\n"),
    ("        self.grid = (bs, col_programs)\n", "        self.grid = (bs, 1 + col_programs)\n"),
]

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
    # The length scan in a program of its own (column 0 of the grid, request 0; the other requests'
    # column-0 programs return at once), so no copy program waits for it.
    "scan-program": _SCAN_PROGRAM,
    # The length scan in the last column program of the last request, whose run is the shortest.
    "scan-last": [(_SCAN_AT, "    if (req == bs - 1) & (col_program == col_programs - 1):\n")],
}
# Software pipelining by hand: the next block's source load is issued before this block's stores, so
# each program has two loads in flight and no iteration starts by waiting on one.
VARIANTS["prefetch-next"] = [
    (_LOOP, "    cols = col_program * run * BLOCK_COLS + tl.arange(0, BLOCK_COLS)\n"
            "    tokens = tl.load(src_row + cols, mask=cols < body_end)\n" + _LOOP),
    ("        tokens = tl.load(src_row + cols, mask=body)\n",
     "        next_cols = cols + BLOCK_COLS\n"
     "        next_tokens = tl.load(src_row + next_cols, mask=next_cols < tl.where(block + 1 < run_end, body_end, 0))\n"),
    ("        if block == body_end // BLOCK_COLS:\n",
     "        tokens = next_tokens\n        if block == body_end // BLOCK_COLS:\n"),
]


def _rows_outer(source: str) -> str:
    """The column walk repeated once per row of the request (the source re-read from L2), so that each
    program writes one row at a time: one write stream per program instead of D."""
    start, end = anchor(source, _LOOP), anchor(source, "\n\ndef _check_int32_buffer")
    walk = "".join("    " + line if line.strip() else line for line in source[start:end].splitlines(True))
    walk = replace_every(walk, "tl.static_range(DRAFT)", "tl.static_range(d_outer, d_outer + 1)")
    return source[:start] + "    for d_outer in tl.static_range(DRAFT):\n" + walk + source[end:]


VARIANTS["rows-outer"] = [_rows_outer]
# The grid transposed: neighbouring programs take neighbouring runs of one request's row.
VARIANTS["along-rows"] = [
    ("    req = tl.program_id(0)\n    col_program = tl.program_id(1)\n",
     "    req = tl.program_id(1)\n    col_program = tl.program_id(0)\n"),
    ("        self.grid = (bs, col_programs)\n", "        self.grid = (col_programs, bs)\n"),
]
# ... and one block per program, as the simplest kernel along rows (programs past the batch's max idle).
VARIANTS["along-rows-one-block"] = VARIANTS["along-rows"] + [
    ("    return max(1, min(triton.cdiv(width, BLOCK_COLS), triton.cdiv(4 * sms, bs)))\n",
     "    return triton.cdiv(width, BLOCK_COLS)\n"),
]
_PROLOGUE_START = "    max_seqlen_k = tl.minimum(longest + KV_EXTRA, WIDTH)\n"


def _flat_walk(source: str) -> str:
    """Every program walks the batch's (request, block) items in row-major order, item p, p + P, ...
    (P programs in all, p in launch order): at any moment the grid works on P neighbouring blocks, a
    window sliding along the rows, as one block per program along rows does, with no idle programs.
    Each item redoes its request's prologue (pool index, first row: L1/L2 hits)."""
    start, end = anchor(source, _PROLOGUE_START), anchor(source, _LOOP) + len(_LOOP)
    walk = (
        "    batch_max = tl.minimum(longest + KV_EXTRA, WIDTH)\n"
        "    n_blocks = tl.cdiv(batch_max, BLOCK_COLS)\n"
        "    for item in range(col_program * bs + req, bs * n_blocks, bs * col_programs):\n"
        "        item_req = item // n_blocks\n"
        "        block = item % n_blocks\n"
        "        if ACCEPTED:\n"
        "            item_rows_before = 0\n"
        "            for first_req in range(0, bs, BLOCK_BS):\n"
        "                some_req = first_req + tl.arange(0, BLOCK_BS)\n"
        "                item_rows_before += tl.sum(\n"
        "                    _query_rows(accept_length_ptr, some_req, some_req < item_req, DRAFT, ACCEPTED), 0\n"
        "                )\n"
        "            first_row = item_rows_before.to(tl.int64)\n"
        "            rows = tl.load(accept_length_ptr + item_req).to(tl.int32)\n"
        "            rows = tl.minimum(tl.maximum(rows, 0), DRAFT)\n"
        "        else:\n"
        "            first_row = item_req.to(tl.int64) * DRAFT\n"
        "            rows = DRAFT\n"
        "        pool_row = tl.load(req_pool_indices_ptr + item_req).to(tl.int64)\n"
        "        pool_row = tl.where(pool_row < 0, pool_row + REQ_TO_TOKEN_ROWS, pool_row)\n"
        "        in_range = (pool_row >= 0) & (pool_row < REQ_TO_TOKEN_ROWS)\n"
        "        max_seqlen_k = tl.where(in_range, batch_max, 0)\n"
        "        src_row = req_to_token_ptr + pool_row * REQ_TO_TOKEN_STRIDE\n"
        "        dst_rows = page_table_ptr + first_row * PAGE_TABLE_STRIDE\n"
        "        body_end = (max_seqlen_k // 16) * 16\n"
    )
    return source[:start] + walk + source[end:]


VARIANTS["flat-walk"] = [_flat_walk]
VARIANTS["flat-walk-x4"] = [_flat_walk, ("triton.cdiv(4 * sms, bs)", "triton.cdiv(16 * sms, bs)")]
# ... with runs of a fixed number of blocks, set by the width, not the batch's max: fewer programs idle
# where the batch is short, the launch order kept along rows.
for _blocks in (2, 4, 8):
    VARIANTS[f"along-rows-runs-{_blocks}"] = VARIANTS["along-rows"] + [
        ("    return max(1, min(triton.cdiv(width, BLOCK_COLS), triton.cdiv(4 * sms, bs)))\n",
         f"    return triton.cdiv(width, BLOCK_COLS * {_blocks})\n"),
        ("    run = tl.cdiv(n_blocks, col_programs)\n", "    run = tl.cdiv(tl.cdiv(WIDTH, BLOCK_COLS), col_programs)\n"),
    ]
VARIANTS["warps-8"] = [("num_warps=4", "num_warps=8")]
VARIANTS["prefetch-next+warps-8"] = VARIANTS["prefetch-next"] + VARIANTS["warps-8"]
VARIANTS["scan-program+early-pool-load"] = VARIANTS["scan-program"] + VARIANTS["early-pool-load"]
VARIANTS["scan-last+early-pool-load"] = VARIANTS["scan-last"] + VARIANTS["early-pool-load"]


# The kernel module the variants edit: the final stage's as of commit aec2bdf (see the docstring).
BASE_KERNEL = Path(__file__).with_name("kernel_floor_base.py")
BASE_COMMIT = "aec2bdf"


class VariantDoesNotApply(LookupError):
    """A variant's source edit found no (or more than one) place to apply in the base kernel module: the
    kernel changed under it. Raised, never skipped, so that no variant silently times the unchanged kernel."""


_anchors_used: list[str] | None = None  # set by anchors(): every text an edit looked up


def anchor(source: str, text: str) -> int:
    """Where the one occurrence of `text` in `source` starts; VariantDoesNotApply where there is not exactly one."""
    if _anchors_used is not None:
        _anchors_used.append(text)
    found = source.count(text)
    if found != 1:
        raise VariantDoesNotApply(f"the base kernel module holds {found} copies of {text!r}, not one:"
                                  " update the variant in notebook/kernel_floor.py VARIANTS")
    return source.index(text)


def replace_every(source: str, old: str, new: str) -> str:
    """`source` with every `old` replaced; VariantDoesNotApply where there is none."""
    if _anchors_used is not None:
        _anchors_used.append(old)
    if old not in source:
        raise VariantDoesNotApply(f"the base kernel module holds no {old!r}: update the variant in"
                                  " notebook/kernel_floor.py VARIANTS")
    return source.replace(old, new)


def variant_source(source: str, replacements) -> str:
    """`source` with each of `replacements` applied once: an (old, new) text pair, or a function of the source.
    Every edit must apply where it was written to: VariantDoesNotApply otherwise."""
    for replacement in replacements:
        if callable(replacement):
            source = replacement(source)
            continue
        old, new = replacement
        at = anchor(source, old)
        source = source[:at] + new + source[at + len(old):]
    return source


def anchors(name: str) -> list[str]:
    """The texts of the base kernel module that variant `name`'s edits rely on, in the order they are looked up."""
    global _anchors_used
    _anchors_used = []
    try:
        variant_source(kernel_source(), VARIANTS[name])
        return list(dict.fromkeys(_anchors_used))
    finally:
        _anchors_used = None


def kernel_source() -> str:
    """The kernel module the variants edit (BASE_KERNEL)."""
    return BASE_KERNEL.read_text()


def load_variant(name: str, replacements: list[tuple[str, str]]):
    """The final stage's kernel module with `replacements` applied, imported as a module of its own
    (Triton reads a kernel's source from its file, so the text is written to one)."""
    folder = Path(tempfile.mkdtemp(prefix="kernel-variant-"))
    path = folder / f"variant_{name.replace('-', '_').replace('+', '_')}.py"
    path.write_text(variant_source(kernel_source(), replacements))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def diff(name: str) -> str:
    """The exact change a variant makes, as a unified diff against the base kernel module."""
    import difflib

    original = kernel_source()
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


def driver_memset(bs: int, width: int, length: int, device="cuda") -> dict:
    """The driver's own 2D memset (cuMemsetD2D32Async) of the page-table addresses a replay writes,
    strided as the table is and packed: how fast the card writes that address set when no Triton code
    is involved. Write-only, so compare the two layouts with each other, not with the floor."""
    import ctypes

    cuda = ctypes.CDLL("libcuda.so.1")
    set2d = cuda.cuMemsetD2D32Async
    set2d.argtypes = [ctypes.c_uint64, ctypes.c_size_t, ctypes.c_uint, ctypes.c_size_t, ctypes.c_size_t,
                      ctypes.c_void_p]
    set2d.restype = ctypes.c_int
    calls = {}
    for layout, w in (("strided", width), ("packed", length)):
        table = torch.zeros(bs * D, w, dtype=torch.int32, device=device)

        def call(table=table, pitch=4 * w):
            status = set2d(table.data_ptr(), pitch, 7, length, bs * D, torch.cuda.current_stream().cuda_stream)
            if status:
                raise RuntimeError(f"cuMemsetD2D32Async failed with CUresult {status}")

        calls[f"driver-memset-{layout}"] = call
    return calls


def simplest_kernel(bs: int, page: int, width: int, length: int, req_to_token, pool, device="cuda") -> dict:
    """notebook.broadcast_rows writing the same page-table bytes, strided as the table is and
    packed into a table exactly `length` wide: what the read/write mix costs a kernel that does nothing else."""
    from notebook.broadcast_rows import broadcast_rows, broadcast_rows_tma, fill_rows

    calls = {}
    for layout, w in (("strided", width), ("packed", length)):
        out = launch_buffers(bs, D, page, w, device)
        calls[f"simplest-kernel-{layout}"] = lambda out=out: broadcast_rows(
            pool=pool, req_to_token=req_to_token, page_table=out.page_table_1, real_page_table=out.real_page_table,
            length=length, draft=D, page_size=page)
    for along_rows, name in ((False, "strided"), (True, "along-rows")):
        fill = launch_buffers(bs, D, page, width, device)
        calls[f"simplest-fill-{name}"] = lambda fill=fill, along_rows=along_rows: fill_rows(
            page_table=fill.page_table_1, real_page_table=fill.real_page_table, length=length, draft=D,
            page_size=page, along_rows=along_rows)
    along = launch_buffers(bs, D, page, width, device)
    calls["simplest-kernel-along-rows"] = lambda: broadcast_rows(
        pool=pool, req_to_token=req_to_token, page_table=along.page_table_1, real_page_table=along.real_page_table,
        length=length, draft=D, page_size=page, along_rows=True)
    out = launch_buffers(bs, D, page, width, device)
    col_programs = max(1, min(-(-length // 1024), -(-4 * torch.cuda.get_device_properties(device).multi_processor_count // bs)))
    calls["bulk-store-kernel"] = lambda: broadcast_rows_tma(
        pool=pool, req_to_token=req_to_token, page_table=out.page_table_1, real_page_table=out.real_page_table,
        length=length, draft=D, page_size=page, col_programs=col_programs)
    return calls


def nop_args_kernel(launch, seq_lens, pool) -> dict:
    """An empty kernel with our kernel's parameters on the same grid (tritonbench's nop_with_args), timed
    like the kernel: the part of a small input's time that any launch of this signature pays."""
    from bench.peers import nop_with_args
    from bench.timing import captured_launch, launch_kwargs

    jit_fn, args, kwargs = captured_launch(lambda: launch(seq_lens, pool))
    nop, kwargs = nop_with_args(jit_fn), launch_kwargs(kwargs)
    return {"nop-args": lambda: nop[launch.grid](*args, **kwargs)}


def main(out: str, *args: str) -> None:
    import triton

    from bench.timing import copy_bandwidth, interleaved_kernel_us

    inputs, names = INPUTS, list(args)
    if names[:1] == ["--inputs"]:
        inputs, names = INPUT_SETS[names[1]], names[2:]
    rounds = ROUNDS if inputs is not FIXED_COST else 2 * ROUNDS - 1  # sub-µs differences there
    names = ("final",) + tuple(n for n in names or VARIANTS if n != "final")  # "final": the reference
    modules = {name: load_variant(name, VARIANTS[name]) for name in names}
    bandwidth = copy_bandwidth()
    env = dict(card=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               final_stage=stages.final(), variants_of=f"final stage at {BASE_COMMIT}", copy_bandwidth=bandwidth, rounds=rounds, draft=D)
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
        if inputs is FIXED_COST:
            references = {**nop_args_kernel(launches["final"], seq_lens, pool),
                          **driver_memset(bs, width, min(length, width)),
                          **simplest_kernel(bs, page, width, min(length, width), req_to_token, pool)}
        else:
            references = geometry(bs, width, min(length, width))
        calls = {name: (lambda launch=launch: launch(seq_lens, pool)) for name, launch in launches.items()}
        times = interleaved_kernel_us({**calls, **references}, rounds)
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
