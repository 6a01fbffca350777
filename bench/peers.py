"""Peers and controls measured beside the stages: upstream's later fused kernels, empty Triton launches.

Upstream's `fused_dsa_target_verify_metadata` (sglang >= 0.5.23) is read at run time from a wheel
named by NSA_UPSTREAM_WHEEL (the GPU machine has no network: carry it); it is never vendored.
"""

import importlib.util
import os
import tempfile
import zipfile
from pathlib import Path

import torch
import triton

UPSTREAM_MODULE = "sglang/kernels/ops/attention/dsa/metadata.py"


def load_upstream_kernels():
    """Upstream 0.5.23's metadata module (fused_dsa_{decode,target_verify,draft_extend}_metadata),
    read from the wheel NSA_UPSTREAM_WHEEL names; (None, why) where it cannot run."""
    wheel = os.environ.get("NSA_UPSTREAM_WHEEL")
    if not torch.cuda.is_available():
        return None, "upstream peer skipped: upstream's fused_dsa_* kernels assert CUDA tensors"
    if not wheel or not Path(wheel).exists():
        return None, f"upstream peer skipped: set NSA_UPSTREAM_WHEEL to an sglang>=0.5.23 wheel (got {wheel!r})"
    folder = Path(tempfile.mkdtemp(prefix="sglang-peer-"))
    with zipfile.ZipFile(wheel) as z:
        (folder / "dsa_metadata.py").write_bytes(z.read(UPSTREAM_MODULE))
    spec = importlib.util.spec_from_file_location("sglang_peer_dsa_metadata", folder / "dsa_metadata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, f"upstream peer: {Path(wheel).name}:{UPSTREAM_MODULE}"


def load_upstream_peer():
    """Upstream's target-verify kernel, or (None, why)."""
    module, note = load_upstream_kernels()
    return (module.fused_dsa_target_verify_metadata if module else None), note


def upstream_call(peer, runner, bs: int, draft: int, page_size: int, topk: int, static_width: bool = False):
    """A closure calling upstream's target-verify kernel on `runner`'s captured buffers.

    static_width: max_seqlen_k = the page table's width, as 0.5.23 ships it (`_graph_page_table_width`);
    else the batch's longest kv length, read on the host before the call (a max it does not compute).
    """
    md = runner.backend.decode_cuda_graph_metadata[bs]
    seq_lens, pool = runner.seq_lens[:bs], runner.req_pool_indices[:bs]
    if static_width:
        max_seqlen_k = md.page_table_1.shape[1]
    else:
        max_seqlen_k = int(runner.seq_lens_cpu[:bs].max()) + draft

    def call():
        peer(seq_lens, pool, runner.backend.req_to_token, md.cache_seqlens_int32, md.cu_seqlens_k,
             md.page_table_1, md.nsa_seqlens_expanded, md.nsa_cache_seqlens_int32, md.nsa_cu_seqlens_k,
             md.real_page_table, bs, max_seqlen_k, topk, page_size, draft)

    return call


def mode_peers(upstream, runner, mode: str, bs: int, draft: int, page_size: int, topk: int) -> dict:
    """Upstream 0.5.23's fused kernel of `mode` on `runner`'s captured buffers, name -> call:
    target verify and decode: `upstream-static` (the table's width as max length, as it ships) and
    `upstream-hostmax` (the batch's max read on the host first, not timed); draft extend: `upstream-v1`
    (our semantics: accept_length rows, total and max read on the host first) and `upstream-v2-static` (as
    0.5.23 ships its v2 mode: all D rows of every request at the table's width, more work than v1's rows)."""
    if mode == "target_verify":
        return {name: upstream_call(upstream.fused_dsa_target_verify_metadata, runner, bs, draft, page_size, topk,
                                    static_width=static)
                for name, static in (("upstream-static", True), ("upstream-hostmax", False))}
    md = runner.backend.decode_cuda_graph_metadata[bs]
    seq_lens, pool, r2t = runner.seq_lens[:bs], runner.req_pool_indices[:bs], runner.backend.req_to_token
    host_max = int(runner.seq_lens_cpu[:bs].max())
    calls = {}
    if mode == "decode":
        for name, max_len in (("upstream-static", md.page_table_1.shape[1]), ("upstream-hostmax", host_max)):
            calls[name] = (lambda m=max_len: upstream.fused_dsa_decode_metadata(
                seq_lens, pool, r2t, md.cache_seqlens_int32, md.cu_seqlens_k, md.page_table_1,
                md.nsa_cache_seqlens_int32, md.nsa_cu_seqlens_k, md.real_page_table, bs, m, topk, page_size))
        return calls
    accept = runner.accept_length[:bs]
    full = torch.full((bs,), draft, dtype=torch.int32, device=seq_lens.device)
    v1 = (accept, int(accept.sum()), host_max, False)
    v2 = (full, bs * draft, md.page_table_1.shape[1], True)
    for name, (extend, total, max_k, static) in (("upstream-v1", v1), ("upstream-v2-static", v2)):
        calls[name] = (lambda e=extend, t=total, k=max_k, s=static: upstream.fused_dsa_draft_extend_metadata(
            seq_lens, e, pool, r2t, md.cache_seqlens_int32, md.cu_seqlens_k, md.page_table_1,
            md.nsa_seqlens_expanded, md.nsa_cache_seqlens_int32, md.nsa_cu_seqlens_k, md.real_page_table,
            bs, t, k, topk, page_size, draft, bs * draft, static_extend_len=s))
    return calls


@triton.jit
def _empty_kernel(x):
    pass


def nop_with_args(jit_fn):
    """An empty kernel with `jit_fn`'s parameters (names, constexprs), as tritonbench's nop_with_args:
    launched with the same arguments, it is the host floor of a generic launch of that signature."""
    params = [f"{name}: tl.constexpr" if i in jit_fn.constexprs else name for i, name in enumerate(jit_fn.arg_names)]
    path = Path(tempfile.mkdtemp(prefix="nop-with-args-")) / "nop_with_args.py"
    path.write_text("import triton\nimport triton.language as tl\n\n\n@triton.jit\n"
                    f"def nop_with_args({', '.join(params)}):\n    pass\n")
    spec = importlib.util.spec_from_file_location(path.stem, path)  # Triton reads a kernel's source from its file
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.nop_with_args


def empty_launch(device):
    """The host floor of any Python Triton launch: one program, one argument, no work."""
    dummy = torch.empty(1, device=device)
    return lambda: _empty_kernel[(1,)](dummy)
