"""The fused-era track (sglang 0.5.15 - 0.5.23), executed on CPU through the Triton interpreter.

- the release table (fused/RELEASES.toml) says what each wheel's module holds;
- the reference (fused/reference.py) equals upstream's own kernels, from every wheel, on the
  contract: length and cumsum buffers whole, page tables on each row's live prefix;
- the patched kernels (fused/base + fused/patches) equal the reference on every buffer whole:
  nothing written past a row's live prefix or past the entries the contract names;
- planted kernel bugs are caught; upstream's refusals stay refusals, raised before any write;
- the grid does not depend on the table width and bs is not a compile-time constant.
"""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from triton.runtime.jit import JITFunction

from fused import cases, track
from fused.cases import Case

OURS_ARG = "physical_page_size"
BIG_WIDTHS = (65600, 163840, 1_000_003)
LENGTH_PROFILES = ("equal", "uniform", "one_long", "mod_edges")


@pytest.fixture(autouse=True)
def _interpreter_masks():
    with track.interpreter_bool_masks():
        yield


def lengths(profile: str, bs: int, width: int, seed: int = 0) -> tuple[int, ...]:
    """Context lengths (seq_lens) for one batch, at most `width`."""
    rng = random.Random(seed)
    if profile == "equal":
        return (width // 2,) * bs
    if profile == "uniform":
        return tuple(rng.randint(1, width) for _ in range(bs))
    if profile == "one_long":
        return (width,) + tuple(rng.randint(1, min(width, 4096)) for _ in range(bs - 1))
    edges = [0, 1, 63, 64, 65, 127, 128, 129, 191, 192, 193, width - 1, width]
    return tuple(min(edges[(i + seed) % len(edges)], width) for i in range(bs))


def run_ours(case: Case) -> None:
    cases.run_and_check(track.patched_module(), case, OURS_ARG, live_prefix_only=False)


def run_upstream(version: str, case: Case) -> None:
    module = track.upstream_module(version)
    cases.run_and_check(module, case, track.page_size_arg(version), live_prefix_only=True)


def draft_case(seq_lens, width, max_extend, *, static, total_len=None, seed=0, **kw) -> Case:
    rng = random.Random(seed)
    bs = len(seq_lens)
    extend = (max_extend,) * bs if static else tuple(rng.randint(0, max_extend) for _ in range(bs))
    return Case(
        "draft_extend",
        tuple(seq_lens),
        width,
        next_n=max_extend,
        extend_lens=extend,
        static_extend_len=static,
        total_len=total_len,
        seed=seed,
        **kw,
    )


# --- the release table ------------------------------------------------------------------------


@pytest.mark.parametrize("version", track.versions())
def test_release_table_says_what_the_wheel_holds(version):
    entry = track.release(version)
    source = track.upstream_source(version)  # raises on a sha256 other than the table's
    tree = ast.parse(source)
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    for name, params in track.table()["signatures"].items():
        args = functions[name].args
        names = [a.arg for a in args.args]
        want = [p.split("=")[0].replace("<page_size_arg>", entry["page_size_arg"]) for p in params]
        assert names == want, name
        optional = [p.split("=")[0] for p in params if "=" in p]
        assert names[len(names) - len(args.defaults) :] == optional, name
    assert ("kv_len" in source) == entry["early_exit"]
    contract = " ".join(track.table()["contract"]["text"].split())
    assert (contract in " ".join(source.split())) == entry["live_prefix_contract"]
    assert ("row.to(tl.int64)" in source) == entry["int64_row_offsets"]


def test_a_version_outside_the_track_is_one_line_naming_the_track():
    with pytest.raises(track.TrackError) as error:
        track.release("0.5.12")
    assert "\n" not in str(error.value) and "0.5.15 - 0.5.23" in str(error.value)


def test_base_is_the_newest_release_file_and_the_series_applies():
    assert track.base_source() == track.upstream_source(track.table()["track"]["base_version"])
    assert track.patched_source() != track.base_source()


def test_patched_module_is_lint_clean(tmp_path):
    path = tmp_path / "metadata.py"
    path.write_text(track.patched_source())
    bin_dir = Path(sys.executable).parent
    for tool in (["black", "--check", "-q"], ["isort", "--profile", "black", "--check", "-q"], ["ruff", "check", "-q"]):
        result = subprocess.run([str(bin_dir / tool[0]), *tool[1:], str(path)], capture_output=True, text=True)
        assert result.returncode == 0, (tool[0], result.stdout, result.stderr)


# --- the reference against upstream's kernels, every release ------------------------------------


def reference_cases() -> list[Case]:
    """Small widths: upstream launches a program per 128 columns of every row."""
    return [
        Case("decode", lengths("mod_edges", 7, 193), 193),
        Case("decode", lengths("uniform", 7, 193, seed=1), 193, page_size=1),
        Case("decode", lengths("mod_edges", 5, 193, seed=3), 193, page_table_1=False),
        Case("target_verify", lengths("mod_edges", 5, 193), 193, next_n=3, paged_mqa_ctx_lens=True),
        Case("target_verify", lengths("uniform", 3, 193, seed=2), 193, next_n=2, page_size=1),
        draft_case(lengths("mod_edges", 5, 193), 193, 3, static=True),
        draft_case(lengths("mod_edges", 6, 193, seed=4), 193, 4, static=False, seed=4),
    ]


@pytest.mark.parametrize("version", track.versions())
@pytest.mark.parametrize("case", reference_cases(), ids=lambda c: f"{c.mode}-ps{c.page_size}")
def test_reference_equals_upstream(version, case):
    run_upstream(version, case)


def test_the_check_sees_writes_past_the_live_prefix():
    """0.5.15 writes every column up to the width: the whole-buffer check must say so."""
    case = Case("decode", (5, 70), 193)
    inputs, outputs = cases.make_inputs(case)
    cases.call(track.upstream_module("0.5.15"), case, inputs, outputs, "real_page_size")
    want = cases.expected(case, inputs, outputs)
    cases.check(case, outputs, want, live_prefix_only=True)
    with pytest.raises(AssertionError, match="page_table_1"):
        cases.check(case, outputs, want, live_prefix_only=False)


def distinct_texts() -> list[str]:
    """The first release of each distinct module text (the others hold the same bytes)."""
    firsts = {}
    for entry in track.table()["release"]:
        firsts.setdefault(entry["module_sha256"], entry["version"])
    return list(firsts.values())


@pytest.mark.slow
@pytest.mark.parametrize("version", distinct_texts())
@pytest.mark.parametrize("mode", cases.MODES)
def test_reference_equals_upstream_matrix(version, mode):
    for bs in (1, 7, 33):
        for profile in LENGTH_PROFILES:
            for page_size in (1, 64):
                width = 193 if bs > 1 else 1000
                seq = lengths(profile, bs, width, seed=bs)
                if mode == "decode":
                    run_upstream(version, Case(mode, seq, width, page_size=page_size))
                elif mode == "target_verify":
                    for next_n in (1, 4, 8):
                        run_upstream(
                            version, Case(mode, seq, width, page_size=page_size, next_n=next_n, paged_mqa_ctx_lens=True)
                        )
                else:
                    for static in (True, False):
                        run_upstream(version, draft_case(seq, width, 4, static=static, page_size=page_size, seed=bs))


# --- the patched kernels against the reference: every buffer whole ------------------------------


EVERY_BS = [
    pytest.param(mode, bs, marks=[pytest.mark.slow] if bs == 256 and mode != "target_verify" else [])
    for mode in cases.MODES
    for bs in (0, 1, 7, 128, 256)
]


@pytest.mark.parametrize("mode, bs", EVERY_BS)
def test_ours_every_bs(mode, bs):
    seq = lengths("mod_edges", bs, 193, seed=bs)
    if mode == "decode":
        run_ours(Case(mode, seq, 193))
    elif mode == "target_verify":
        run_ours(Case(mode, seq, 193, next_n=2, paged_mqa_ctx_lens=True))
    else:
        run_ours(draft_case(seq, 193, 3, static=bs % 2 == 0, seed=bs))


@pytest.mark.parametrize("mode, static", [("decode", False), ("target_verify", False), ("draft_extend", True), ("draft_extend", False)])
def test_ours_past_the_first_chunk(monkeypatch, mode, static):
    """Chunks narrowed so that a batch of 13 spans several of them: the length scan's carries,
    the work items counted over every chunk, runs that start past the first one."""
    module = track.patched_module()
    monkeypatch.setattr(module, "_SCAN_CHUNK", 16)
    monkeypatch.setattr(module, "_BLOCK_REQS", 4)
    monkeypatch.setattr(module, "_SMALL_BS", 2)
    seq = lengths("mod_edges", 13, 2100, seed=11)
    if mode == "decode":
        run_ours(Case(mode, seq, 2100))
    elif mode == "target_verify":
        run_ours(Case(mode, seq, 2100, next_n=2, paged_mqa_ctx_lens=True))
    else:
        run_ours(draft_case(seq, 2100, 3, static=static, seed=11))


@pytest.mark.parametrize("next_n", range(1, 9))
@pytest.mark.parametrize("page_size", [1, 64])
def test_ours_target_verify_every_next_n(next_n, page_size):
    seq = lengths("mod_edges", 9, 193, seed=next_n)
    run_ours(Case("target_verify", seq, 193, page_size=page_size, next_n=next_n, paged_mqa_ctx_lens=next_n % 2 == 1))


@pytest.mark.parametrize("profile", LENGTH_PROFILES)
@pytest.mark.parametrize("mode", cases.MODES)
def test_ours_length_profiles(mode, profile):
    seq = lengths(profile, 13, 1000, seed=len(profile))
    if mode == "decode":
        run_ours(Case(mode, seq, 1000, page_table_1=profile != "equal"))
    elif mode == "target_verify":
        run_ours(Case(mode, seq, 1000, next_n=4))
    else:
        run_ours(draft_case(seq, 1000, 4, static=profile in ("equal", "one_long")))


@pytest.mark.parametrize("width", BIG_WIDTHS)
@pytest.mark.parametrize("mode", cases.MODES)
def test_ours_wide_tables(mode, width):
    """Two rows: a full one (offsets past 2^20 at the widest) and a short one; decode at 163840
    without page_table_1 (work items of 1024 pages then, so the full row spans three)."""
    seq = (width, 129)
    if mode == "decode":
        run_ours(Case(mode, seq, width, page_table_1=width != 163840))
    elif mode == "target_verify":
        run_ours(Case(mode, seq, width, next_n=2, page_size=1))
    else:
        run_ours(draft_case(seq, width, 2, static=False, seed=width))


@pytest.mark.parametrize("static", [True, False])
@pytest.mark.parametrize("fill", ["whole", "partial", "none"])
def test_ours_draft_extend_fill(static, fill):
    seq = lengths("mod_edges", 6, 193, seed=7)
    full = draft_case(seq, 193, 4, static=static, seed=11)
    total = {"whole": None, "partial": full.draft_total_len() - 5, "none": 0}[fill]
    run_ours(draft_case(seq, 193, 4, static=static, seed=11, total_len=total))


def test_ours_draft_extend_padded_rows_get_zero_lengths():
    """DP-padded requests (seq_len 1, below their qo_len) get 0, as upstream clamps them."""
    run_ours(draft_case((1, 1, 300), 400, 4, static=True))


@pytest.mark.slow
@pytest.mark.parametrize("width", BIG_WIDTHS)
@pytest.mark.parametrize("profile", LENGTH_PROFILES)
def test_ours_wide_matrix(width, profile):
    for bs in (1, 4):
        seq = lengths(profile, bs, width, seed=bs)
        if profile == "mod_edges":
            seq = (width - 65,) + seq
        run_ours(Case("decode", seq, width, page_table_1=bs == 1))
        run_ours(Case("target_verify", seq, width, next_n=3, paged_mqa_ctx_lens=True))
        run_ours(draft_case(seq, width, 3, static=bs == 1, seed=bs))


@pytest.mark.slow
def test_upstream_at_a_width_past_2_20():
    """Short rows only: upstream launches 7813 programs per row at this width, and the interpreter
    runs each (about a minute); full rows at this width, every release, run in fused/gpu_check.py."""
    run_upstream("0.5.23", Case("decode", (1000, 129), 1_000_003))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(cases.MODES),
    seq=st.lists(st.integers(0, 700), min_size=0, max_size=9),
    width=st.integers(1, 700),
    page_size=st.sampled_from([1, 16, 64]),
    next_n=st.integers(1, 8),
    static=st.booleans(),
    cut=st.integers(0, 6),
    seed=st.integers(0, 2**16),
)
def test_fuzz_ours_against_reference(mode, seq, width, page_size, next_n, static, cut, seed):
    seq = tuple(min(s, width) for s in seq)
    if mode == "draft_extend":
        case = draft_case(seq, width, next_n, static=static, seed=seed, page_size=page_size)
        total = max(case.draft_total_len() - cut, 0) if cut else None
        if total == 0 and case.bs and static:
            total = None
        case = draft_case(seq, width, next_n, static=static, seed=seed, page_size=page_size, total_len=total)
    else:
        case = Case(
            mode, seq, width, page_size=page_size, next_n=next_n, seed=seed, paged_mqa_ctx_lens=mode == "target_verify"
        )
    run_ours(case)


# --- planted bugs ---------------------------------------------------------------------------------

# (what the bug does, text in the patched module, its replacement)
PLANTED_BUGS = [
    ("drops the last partial 16 columns", "tail < live_len", "tail < live_len - 1"),
    ("writes one column past the live prefix", "tail < live_len", "tail <= live_len"),
    ("ignores the width", "tl.minimum(live_len, max_seqlen_k)", "tl.minimum(live_len, max_seqlen_k + 64)"),
    ("drops the last partial page", "tl.cdiv(live_len, physical_page_size)", "live_len // physical_page_size"),
    (
        "loses the last item of every program's run",
        "((copier + 1).to(tl.int64) * n_items + copiers - 1) // copiers",
        "((copier + 1).to(tl.int64) * n_items + copiers - 1) // copiers - 1",
    ),
    (
        "a program's first row counts blocks, not rows",
        "first_row = tl.sum(tl.where(before, qo_len, 0), 0)",
        "first_row = tl.sum(tl.where(before, blocks, 0), 0)",
    ),
    ("forgets the cumsum carry between scan chunks", "dsa_before += tl.sum(req_total, 0)", "dsa_before += 0"),
    ("verify copies one draft row too few", "rows = next_n", "rows = next_n - 1"),
    (
        "paged_mqa_ctx_lens without the draft tokens",
        "cache_seq[:, None] + tl.zeros_like(offs_row)",
        "seq[:, None] + tl.zeros_like(offs_row)",
    ),
    ("draft extend drops the partial fill cut", "tl.minimum(qo_len, total_len - first_row)", "qo_len"),
    (
        "padded draft rows go negative",
        "tl.maximum(seq[:, None] - qo_len[:, None] + offs_row + 1, 0)",
        "seq[:, None] - qo_len[:, None] + offs_row + 1",
    ),
    (
        "decode lengths clamp at topk - 1",
        "dsa_seq = tl.minimum(seq, dsa_index_topk)",
        "dsa_seq = tl.minimum(seq, dsa_index_topk - 1)",
    ),
]


def bug_catchers() -> list[Case]:
    """Cheapest first; the 70 x 8 rows span two scan chunks of 64 requests."""
    seq = lengths("mod_edges", 13, 193, seed=5)
    return [
        Case("decode", seq, 193, topk=64),
        Case("target_verify", seq, 193, next_n=3, paged_mqa_ctx_lens=True),
        draft_case((1, 1, 100, 150), 193, 3, static=True),
        draft_case(seq, 193, 4, static=False, seed=3, total_len=20),
        Case("decode", (2100,), 2100),
        Case("target_verify", lengths("equal", 70, 4), 4, next_n=8),
    ]


@pytest.mark.parametrize("bug", PLANTED_BUGS, ids=[b[0] for b in PLANTED_BUGS])
def test_planted_bug_is_caught(bug):
    _, text, replacement = bug
    source = track.without_cuda_asserts(track.patched_source())
    # Compare ignoring the formatting ast.unparse chose.
    assert source.count(text) == 1, f"the patched module holds {text!r} {source.count(text)} times, not once"
    mutant = track.load(source.replace(text, replacement), "fused_mutant")
    for case in bug_catchers():
        try:
            cases.run_and_check(mutant, case, OURS_ARG, live_prefix_only=False)
        except AssertionError:
            return
    pytest.fail(f"no case catches: {bug[0]}")


# --- refusals, grid, compilation --------------------------------------------------------------


@pytest.mark.parametrize(
    "case, why",
    [
        (Case("decode", (5, 9), 193, page_size=1, page_table_1=False), "page size 1 without page_table_1"),
        (draft_case((5, 9), 193, 2, static=True, total_len=5), "total_len past max_total_len"),
    ],
)
def test_upstream_refusals_stay_before_any_write(case, why):
    for module in (track.patched_module(), track.upstream_module("0.5.23")):
        inputs, outputs = cases.make_inputs(case)
        with pytest.raises(AssertionError):
            cases.call(module, case, inputs, outputs, OURS_ARG)
        for name, buffer in outputs.items():
            if buffer is not None:
                assert (buffer == cases.SENTINEL).all(), (why, name)


def test_paged_mqa_ctx_lens_of_the_wrong_shape_is_refused_before_any_write():
    case = Case("target_verify", (5, 9), 193, next_n=2, paged_mqa_ctx_lens=True)
    inputs, outputs = cases.make_inputs(case)
    outputs["paged_mqa_ctx_lens_2d"] = torch.full((2, 3), cases.SENTINEL, dtype=torch.int32)
    with pytest.raises(AssertionError):
        cases.call(track.patched_module(), case, inputs, outputs, OURS_ARG)
    assert all((b == cases.SENTINEL).all() for b in outputs.values() if b is not None)


def test_grid_does_not_depend_on_the_width(monkeypatch):
    module = track.patched_module()
    grids = []
    kernel = module._fused_dsa_metadata_kernel

    class Recorder:
        def __getitem__(self, grid):
            grids.append(grid)
            return kernel[grid]

    monkeypatch.setattr(module, "_fused_dsa_metadata_kernel", Recorder())
    for width in (193, 1_000_003):
        for mode in cases.MODES:
            case = (
                draft_case((100, 5), width, 2, static=True)
                if mode == "draft_extend"
                else Case(mode, (100, 5), width, next_n=2)
            )
            run_ours(case)
    assert len(grids) == 6 and grids[:3] == grids[3:]


def test_one_long_request_is_spread_over_the_programs(monkeypatch):
    """The page-table stores of each program, counted: none copies more than its even share of the
    (request, column block) items, though one request holds most of the batch's columns."""
    from triton.runtime import interpreter

    module = track.patched_module()
    block_n, programs = module._BLOCK_N, module._grid(torch.device("cpu"), 33)[0]
    copiers = programs - 1  # program 0 writes the length buffers
    case = Case("target_verify", lengths("one_long", 33, 20000, seed=3), 20000, next_n=2)
    inputs, outputs = cases.make_inputs(case)
    stored = [0] * programs
    store = interpreter.InterpreterBuilder.create_masked_store

    def counting_store(self, ptrs, value, mask, *rest):
        stored[self.grid_idx[0]] += int(mask.data.sum())
        return store(self, ptrs, value, mask, *rest)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_masked_store", counting_store)
    cases.call(module, case, inputs, outputs, OURS_ARG)
    cases.check(case, outputs, cases.expected(case, inputs, outputs), live_prefix_only=False)

    live = [min(n + case.next_n, case.width) for n in case.seq_lens]
    items = sum(-(-n // block_n) for n in live)
    assert -(-live[0] // block_n) > items // copiers  # the long request alone exceeds a share
    # An item: up to block_n columns, their pages and a tail of < 16, in each of the next_n rows.
    per_item = case.next_n * (block_n + 16 + block_n // case.page_size)
    lengths_written = sum(b.numel() for name, b in outputs.items() if b is not None and "page_table" not in name)
    share = -(-items // copiers) * per_item
    assert stored[0] <= lengths_written, stored
    assert max(stored[1:]) <= share, stored


def test_bs_and_the_width_are_runtime_arguments():
    """One compiled kernel per mode serves every bs and width: neither is a constexpr nor
    specialized on its value."""
    interpreted = track.patched_module()._fused_dsa_metadata_kernel
    # What triton.jit builds on a GPU, from the same function and options.
    kernel = JITFunction(interpreted.fn, **interpreted.kwargs)
    constexprs = {p.name for p in kernel.params if p.is_constexpr}
    runtime = {"bs", "total_len", "max_seqlen_k"}
    assert runtime <= {p.name for p in kernel.params} - constexprs
    assert runtime <= set(kernel.do_not_specialize)


# Compiled for sm_90 with no GPU (Triton's front end and LLVM only), in a process without the
# interpreter: target verify's PTX, given the specialization a launch gets for 16-byte-aligned rows.
_PTX_STORES = """
import importlib.util, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

spec = importlib.util.spec_from_file_location("patched", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
kernel = module._fused_dsa_metadata_kernel
names = [p.name for p in kernel.params]
const = {n: 1 for n in names if n.endswith(("_stride", "_stride_1"))}
const.update(dsa_index_topk=2048, physical_page_size=64, next_n=4, MODE=1, STATIC_EXTEND_LEN=False,
             HAS_REAL_PAGE_TABLE=True, HAS_PAGED_MQA_CTX_LENS=False, HAS_PAGE_TABLE_1=True,
             BLOCK_BS=128, SMALL_BS=32, BLOCK_REQS=module._BLOCK_REQS, SMALL_REQS=32, BLOCK_ROWS=4,
             BLOCK_N=module._BLOCK_N, BLOCK_PAGES=16)
pointers = names[:12]
sig = {n: "constexpr" if n in const else "*i32" if n in pointers else "i32" for n in names}
sig.update(seq_lens="*i64", req_pool_indices="*i64")
out = {}
for aligned_rows in (False, True):
    aligned = pointers + ["req_to_token_stride_0"]
    aligned += ["page_table_stride_0", "real_page_table_stride_0"] if aligned_rows else []
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    source = ASTSource(kernel, sig, {(names.index(n),): v for n, v in const.items()}, attrs)
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["ptx"]
    out[str(aligned_rows)] = ptx.count("st.global.v4.b32")
print(json.dumps(out))
"""


def test_aligned_rows_get_16_byte_stores(tmp_path):
    """The row strides are not excluded from Triton's alignment specialization: a table whose rows
    are 16-byte aligned (163840 and 65600 wide) is written with 16-byte stores, other tables not."""
    import json
    import os

    path = tmp_path / "metadata.py"
    path.write_text(track.patched_source())
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", _PTX_STORES, str(path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    stores = json.loads(result.stdout.strip().splitlines()[-1])
    assert stores["False"] == 0 and stores["True"] > 0, stores
    interpreted = track.patched_module()._fused_dsa_metadata_kernel
    kernel = JITFunction(interpreted.fn, **interpreted.kwargs)
    assert not {"page_table_stride_0", "real_page_table_stride_0"} & set(kernel.do_not_specialize)


# --- the GPU script's plumbing, on CPU ------------------------------------------------------------


def test_gpu_check_equality_runs_every_release_on_cpu():
    from fused import gpu_check

    few = [Case("target_verify", (5, 130), 193, next_n=2, paged_mqa_ctx_lens=True), Case("decode", (64, 0), 193)]
    results = gpu_check.check_equality("cpu", few, gpu_check.implementations(cpu=True))
    assert set(results) == set(track.versions()) | {"patched"}
    assert all(r == {"cases": 2, "failures": []} for r in results.values()), results


@pytest.mark.parametrize("mode", cases.MODES)
def test_gpu_check_bench_launches_on_cpu(mode):
    """Each benchmarked launch once, interpreted, and the live-prefix floor's byte count."""
    from fused import gpu_check

    upstream = track.upstream_module(gpu_check.BENCH_VERSION)
    bench = gpu_check.Bench(
        mode, 2, 300, [200, 3], upstream, track.patched_module(), gpu_check.make_empty_kernel(), "cpu"
    )
    for launch in bench.launches.values():
        launch()
    rows = 1 if mode == "decode" else gpu_check.DRAFT
    kv = [n + (gpu_check.DRAFT if mode == "target_verify" else 0) for n in (200, 3)]
    assert bench.floor_bytes == 4 * sum(n + rows * (n + -(-n // 64)) for n in kv)


@pytest.mark.parametrize("version", track.versions())
def test_patched_kernels_derived_for_every_release(version):
    """The patched base under each release's parameter names equals the reference (every buffer)."""
    module = track.load(track.without_cuda_asserts(track.derived_source(version)), "fused_derived")
    arg = track.page_size_arg(version)
    seq = lengths("mod_edges", 5, 193, seed=2)
    for case in (
        Case("decode", seq, 193),
        Case("target_verify", seq, 193, next_n=2, paged_mqa_ctx_lens=True),
        draft_case(seq, 193, 3, static=False, seed=1),
    ):
        cases.run_and_check(module, case, arg, live_prefix_only=False)
