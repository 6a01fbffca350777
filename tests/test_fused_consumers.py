"""Do sglang 0.5.15 - 0.5.16's consumers read a page-table row past its live prefix?

The patched fused kernels write each row of `page_table_1` / `real_page_table` only over its live
prefix; 0.5.15, 0.5.15.post1 and 0.5.16 write every column up to the width. Here each release's
own consumer code, read from its wheel, runs on CPU on the tables of both writers:

- the writer as shipped (upstream's kernel from the wheel): full-width rows, the clean tables;
- the patched kernel writing into tables filled with poison (negative, huge, random ids) first:
  after it, every column past a live prefix still holds poison.

The consumers executed are the graph path's torch/Triton readers of those tables: the indexer's
`_mask_init_and_local_tokens` (0.5.16 on), the top-k dispatch `DSATopKBackend.topk_transform` with
the torch backend (`_topk_unfused`) and the page-table transforms of `transform_index.py`
(decode and the expanded prefill form that target verify and draft extend use). Their outputs are
compared whole (rtol 0, atol 0, strides too). The logits handed to the top-k are poisoned past each
row's length on the poisoned side as well: a paged-MQA kernel that loads a page past the live
prefix (DeepGEMM on SM100 loads block-table entries in pairs) changes only those columns.

0.5.17, whose docstring makes live prefixes the contract, is run the same way as the control.
The CUDA-only readers (DeepGEMM, the fused top-k kernels, FlashMLA, FA3, TRT-LLM) are cited in
fused/CONSUMERS.md, not executed. A negative control shows that the comparison sees a reader that
ignores the lengths.
"""

from __future__ import annotations

import ast
import enum
import random
import tomllib
import typing
import zipfile
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fused import cases, track
from fused.cases import Case

RELEASES = ("0.5.15", "0.5.15.post1", "0.5.16")
CONTROL = "0.5.17"

# Where each consumer lives in the wheels (0.5.16 moved the Triton kernels under sglang/kernels/).
DSA = "sglang/srt/layers/attention/dsa"
TRANSFORM_INDEX = {
    "0.5.15": f"{DSA}/transform_index.py",
    "0.5.15.post1": f"{DSA}/transform_index.py",
    "0.5.16": "sglang/kernels/ops/attention/dsa/transform_index.py",
    "0.5.17": "sglang/kernels/ops/attention/dsa/transform_index.py",
}
TOPK_BACKEND = f"{DSA}/dsa_topk_backend.py"
INDEXER = f"{DSA}/dsa_indexer.py"
BACKEND = "sglang/srt/layers/attention/dsa_backend.py"

TOPK = 2048  # dsa_index_topk of DeepSeek V3.2 / GLM-5; the transform kernels assert it
WIDTH = 4160  # 65 pages of 64: rows past 2048 take the real top-k, not the "first length" path
NEXT_N = 3
# A model's index_init_tokens / index_local_tokens (0 for DeepSeek V3.2, which skips the masking):
# nonzero, so that the masking, which writes +inf at columns 0-2 even on a row of length 1, runs.
INIT_AND_LOCAL_TOKENS = SimpleNamespace(num_init_tokens=3, num_local_tokens=2)
PADDING_ROWS = 2  # sglang's graph runner pads a batch with seq_len 1 (DSA's fill value), pool row 0


def wheel(version: str) -> Path:
    """The release's wheel; the test is skipped, saying how to fetch it, when it is not cached."""
    wheels = sorted((track.WHEEL_CACHE / f"sglang-{version}").glob("sglang-*.whl"))
    if not wheels:
        pytest.skip(
            f"no sglang {version} wheel in {track.WHEEL_CACHE}: "
            f"python -c \"from harness.releases import fetch_wheel; fetch_wheel('{version}')\""
        )
    return wheels[0]


def wheel_text(version: str, path: str) -> str:
    with zipfile.ZipFile(wheel(version)) as archive:
        return archive.read(path).decode()


def wheel_definitions(version: str, path: str, names: set[str]) -> dict:
    """The top-level functions and classes `names` of a wheel file, executed as shipped in a
    namespace of their own: the rest of the file (its sglang imports) is not loaded. `compile`
    inherits this module's `from __future__ import annotations`, as the wheels' files have it:
    annotations stay text."""
    tree = ast.parse(wheel_text(version, path))
    picked = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    assert {n.name for n in picked} == names, f"{version} {path}: {names - {n.name for n in picked}} missing"
    env_off = SimpleNamespace(get=lambda: False)  # SGLANG_DSA_FUSE_TOPK & co.: the unfused dispatch
    namespace = {
        "torch": torch,
        "envs": SimpleNamespace(SGLANG_DSA_FUSE_TOPK=env_off, SGLANG_OPT_USE_TOPK_V2=env_off),
        **{name: getattr(enum, name) for name in ("Enum", "IntEnum", "auto")},
        **{name: getattr(typing, name) for name in ("Callable", "Dict", "List", "Optional", "Tuple")},
    }
    module = ast.Module(body=picked, type_ignores=[])
    exec(compile(module, f"<sglang {version} {path}>", "exec"), namespace)
    return namespace


def wheel_method(version: str, path: str, cls: str, name: str):
    """A method of a wheel class, executed as shipped, as a plain function of (self, ...)."""
    tree = ast.parse(wheel_text(version, path))
    owner = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    method = next((n for n in owner.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if method is None:
        return None
    namespace = {"torch": torch, "Optional": typing.Optional}
    code = compile(ast.Module(body=[method], type_ignores=[]), f"<sglang {version} {cls}>", "exec")
    exec(code, namespace)
    return namespace[name]


@cache
def consumers(version: str) -> SimpleNamespace:
    topk = wheel_definitions(version, TOPK_BACKEND, {"TopkTransformMethod", "DSATopKBackend", "_topk_unfused"})
    transform = track.load(
        wheel_text(version, TRANSFORM_INDEX[version]), "transform_index_" + version.replace(".", "_")
    )
    return SimpleNamespace(
        topk_backend=topk["DSATopKBackend"].TORCH,
        paged=topk["TopkTransformMethod"].PAGED,
        mask_init_and_local_tokens=wheel_method(version, INDEXER, "Indexer", "_mask_init_and_local_tokens"),
        transform=transform,
        # 0.5.15's forward_extend passes four arguments; later ones say the table is expanded
        prefill_call_expanded="page_table_is_expanded=" in wheel_text(version, BACKEND),
    )


# --- the tables of both writers -------------------------------------------------------------------


def graph_case(mode: str, seed: int) -> Case:
    """A captured batch: real requests at the 64/128/2048 edges, then the runner's padding rows."""
    rng = random.Random(seed)
    top = WIDTH - NEXT_N  # target verify's rows are live over seq_len + next_n columns
    real = [5, 63, 64, 65, 129, 2047, 2048, 2049, rng.randint(2050, top), top]
    if mode == "draft_extend":
        real = [max(n, NEXT_N) for n in real]  # seq_lens already hold the draft tokens
    seq = tuple(real + [1] * PADDING_ROWS)
    if mode == "decode":
        return Case(mode, seq, WIDTH, topk=TOPK, seed=seed)
    if mode == "target_verify":
        return Case(mode, seq, WIDTH, next_n=NEXT_N, topk=TOPK, seed=seed)
    # dsa_backend's call: static extend lengths, every request its next_n rows
    extend = (NEXT_N,) * len(seq)
    return Case(mode, seq, WIDTH, next_n=NEXT_N, extend_lens=extend, static_extend_len=True, topk=TOPK, seed=seed)


def graph_inputs(case: Case) -> tuple[dict, dict]:
    inputs, outputs = cases.make_inputs(case)
    inputs["req_pool_indices"][case.bs - PADDING_ROWS :] = 0
    return inputs, outputs


def poison(outputs: dict, seed: int) -> None:
    """Fill both page tables (and the guard row behind each) with random ids in [-2^31, 2^31)."""
    g = torch.Generator().manual_seed(seed)
    for name in ("page_table_1", "real_page_table"):
        table = outputs[name]._base
        table.copy_(torch.randint(-(2**31), 2**31 - 1, table.shape, generator=g, dtype=torch.int32))


def written_tables(version: str, mode: str, seed: int) -> tuple[dict, dict]:
    """(outputs of `version`'s kernel as shipped, outputs of the patched kernel over poison)."""
    wheel(version)  # the kernel and the readers come from it
    case = graph_case(mode, seed)
    inputs, shipped = graph_inputs(case)
    with track.interpreter_bool_masks():
        cases.call(track.upstream_module(version), case, inputs, shipped, track.page_size_arg(version))
        _, patched = graph_inputs(case)
        poison(patched, seed)
        cases.call(track.patched_module(), case, inputs, patched, "physical_page_size")
    return shipped, patched


# --- the consumer chain ------------------------------------------------------------------------


def lengths_of(mode: str, outputs: dict, rows: int) -> torch.Tensor:
    """What the indexer hands the top-k as lengths (Indexer._get_topk_paged)."""
    if mode == "decode":
        return outputs["cache_seqlens"][:rows]
    return outputs["seqlens_expanded"][:rows]


def logits_for(rows: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, WIDTH, generator=torch.Generator().manual_seed(seed))


def poison_past_lengths(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """What a paged-MQA kernel that read a stale page could have left past each row's length."""
    cols = torch.arange(logits.shape[1])
    past = cols[None, :] >= lengths[:, None]
    garbage = torch.tensor([float("inf"), float("nan"), 3.0e38, -1.0])[cols % 4].expand_as(logits)
    return torch.where(past, garbage, logits)


def consume(version: str, mode: str, outputs: dict, logits: torch.Tensor) -> dict:
    """The graph path's readers of the tables, called as `version`'s dsa_backend calls them."""
    c = consumers(version)
    rows = logits.shape[0]
    lengths = lengths_of(mode, outputs, rows)
    logits = logits.clone()
    if c.mask_init_and_local_tokens is not None:  # 0.5.16 on; a model's index_{init,local}_tokens
        c.mask_init_and_local_tokens(INIT_AND_LOCAL_TOKENS, logits, lengths)
    topk = c.topk_backend.topk_transform(
        logits=logits, lengths=lengths, topk=TOPK, topk_transform_method=c.paged, attn_metadata=None
    )
    page_table_1 = outputs["page_table_1"]
    if mode == "decode":  # forward_decode
        gathered = c.transform.transform_index_page_table_decode(
            page_table=page_table_1, topk_indices=topk, page_size=1
        )
    else:  # forward_extend, target verify / draft extend: one query row per page-table row
        kwargs = dict(page_table=page_table_1, topk_indices=topk, extend_lens_cpu=[1] * rows, page_size=1)
        if c.prefill_call_expanded:
            cu_seqlens_q = torch.arange(rows + 1, dtype=torch.int32)  # metadata.cu_seqlens_q: one row each
            kwargs.update(output_num_tokens=rows, page_table_is_expanded=True, cu_seqlens_q=cu_seqlens_q)
        gathered = c.transform.transform_index_page_table_prefill(**kwargs)
    return {"topk_indices": topk, "page_table_1[topk]": gathered}


def assert_same(version: str, mode: str, clean: dict, poisoned: dict) -> None:
    for name in clean:
        torch.testing.assert_close(
            poisoned[name],
            clean[name],
            rtol=0,
            atol=0,
            check_stride=True,
            msg=lambda m: f"{version} {mode} {name}: {m}",
        )


# --- tests ---------------------------------------------------------------------------------------

# One release x mode in the fast tier (an interpreted kernel pair each, a few seconds); the rest slow.
FAST = ("0.5.16", "decode")


def tiered(pairs):
    return [pytest.param(*pair, marks=[] if pair == FAST else [pytest.mark.slow]) for pair in pairs]


@pytest.mark.parametrize("version, mode", tiered((v, m) for v in RELEASES + (CONTROL,) for m in cases.MODES))
def test_consumers_read_nothing_past_the_live_prefix(version, mode):
    shipped, patched = written_tables(version, mode, seed=len(mode))
    # Not vacuous: the patched tables still hold poison where the shipped kernel wrote ids.
    assert not torch.equal(patched["page_table_1"], shipped["page_table_1"])
    rows = graph_case(mode, 0).rows
    for name in ("cache_seqlens", "seqlens_expanded"):  # the lengths the readers are bounded by
        if name in shipped:
            torch.testing.assert_close(patched[name], shipped[name], rtol=0, atol=0)
    logits = logits_for(rows, seed=rows)
    clean = consume(version, mode, shipped, logits)
    poisoned = consume(version, mode, patched, poison_past_lengths(logits, lengths_of(mode, patched, rows)))
    assert_same(version, mode, clean, poisoned)


@pytest.mark.parametrize("version, mode", tiered((v, "decode") for v in RELEASES))
def test_the_comparison_sees_a_reader_that_ignores_the_lengths(version, mode):
    """Negative control: a reader of the first 2048 columns of every row, whatever its length."""
    shipped, patched = written_tables(version, mode, seed=1)
    transform = consumers(version).transform
    rows = shipped["page_table_1"].shape[0]
    everything = torch.arange(TOPK, dtype=torch.int32).expand(rows, TOPK).contiguous()
    read = [
        {
            "page_table_1[:, :2048]": transform.transform_index_page_table_decode(
                page_table=tables["page_table_1"], topk_indices=everything, page_size=1
            )
        }
        for tables in (shipped, patched)
    ]
    with pytest.raises(AssertionError, match="page_table_1"):
        assert_same(version, mode, *read)


@pytest.mark.parametrize("version", RELEASES + (CONTROL,))
def test_top_k_indices_stay_below_each_rows_length(version):
    """What every gather relies on, on the top-k alone: -1 or an index below the row's length, on
    rows empty, short (padding: 1), at the page edges and past the top-k (2048)."""
    c = consumers(version)
    lengths = torch.tensor([0, 1, 2, 63, 64, 2047, 2048, 2049, 3000, WIDTH], dtype=torch.int32)
    logits = poison_past_lengths(logits_for(len(lengths), seed=7), lengths)
    if c.mask_init_and_local_tokens is not None:
        c.mask_init_and_local_tokens(INIT_AND_LOCAL_TOKENS, logits, lengths)
    topk = c.topk_backend.topk_transform(
        logits=logits, lengths=lengths, topk=TOPK, topk_transform_method=c.paged, attn_metadata=None
    )
    valid = topk >= 0
    assert ((topk == -1) | valid).all()
    assert (topk < lengths[:, None]).where(valid, True).all()
    assert torch.equal(valid.sum(1), lengths.clamp(max=TOPK))  # every live column up to 2048 a candidate


# The graph path's functions that hand the tables and their lengths to the readers, and the readers
# themselves, unchanged by the release that made live prefixes the contract: sglang PR #31981
# (0.5.17) added the early exit and the docstring to the writers and left these as they were in
# 0.5.16 (what it did change elsewhere is listed in fused/CONSUMERS.md).
UNCHANGED_IN_0_5_17 = {
    BACKEND: [
        "DeepseekSparseAttnBackend._apply_cuda_graph_metadata",
        "DeepseekSparseAttnBackend._build_forward_metadata_cuda_graph",
        "DeepseekSparseAttnBackend._graph_page_table_width",
        "DeepseekSparseAttnBackend._get_fused_topk_page_table",
        "DeepseekSparseAttnBackend._pad_topk_indices",
        "DeepseekSparseAttnBackend.get_cuda_graph_seq_len_fill_value",
        "DeepseekSparseAttnBackend._build_paged_mqa_schedule_2d_ctx_lens",
        "DeepseekSparseAttnBackend._forward_fa3",
        "DeepseekSparseAttnBackend._forward_flashmla_kv",
    ],
    INDEXER: ["Indexer._get_topk_paged", "Indexer._mask_init_and_local_tokens"],
    TOPK_BACKEND: ["DSATopKBackend.topk_func", "_topk_unfused"],
    f"{DSA}/dsa_backend_mtp_precompute.py": [
        "DeepseekSparseAttnBackendMTPPrecomputeMixin._precompute_decode_mode",
        "DeepseekSparseAttnBackendMTPPrecomputeMixin._precompute_target_verify_mode",
    ],
    "transform_index": [
        "transform_index_page_table_decode",
        "transform_index_page_table_prefill",
        "transform_index_page_table_decode_kernel",
        "transform_index_page_table_decode_fast",
        "transform_index_page_table_prefill_fast",
    ],
}


def definitions(version: str, path: str) -> dict[str, str]:
    """Qualified name -> normalized text (ast.unparse: comments and layout do not count)."""
    found = {}

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef):
                found[prefix + child.name] = ast.unparse(child)
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")

    walk(ast.parse(wheel_text(version, path)), "")
    return found


@pytest.mark.parametrize("path", UNCHANGED_IN_0_5_17)
def test_the_readers_0_5_17_declared_bounded_are_0_5_16s(path):
    old, new = (definitions(v, TRANSFORM_INDEX[v] if path == "transform_index" else path) for v in ("0.5.16", CONTROL))
    changed = [name for name in UNCHANGED_IN_0_5_17[path] if old[name] != new[name]]
    assert not changed, f"{path}: {changed} differ between 0.5.16 and {CONTROL}"


def test_the_verdicts_name_every_full_width_release_and_cite_only_public_things():
    """fused/consumers.toml feeds the cover letter: one verdict per release that writes full width."""
    verdicts = tomllib.loads((track.TRACK_DIR / "consumers.toml").read_text())["release"]
    full_width = [r["version"] for r in track.table()["release"] if not r["live_prefix_contract"]]
    assert sorted(verdicts) == sorted(full_width) == sorted(RELEASES)
    for version, verdict in verdicts.items():
        assert isinstance(verdict["live_prefix_safe"], bool) and verdict["evidence"]
        summary = verdict["summary"]
        assert f"sglang {version} " in summary and "\n" not in summary
        for private in ("tests/", "test_", "issue", "session", "NOTES.md", "fused/"):
            assert private not in summary, (version, private)
