"""The notebook's scripts on CPU (Triton's interpreter): every kernel variant applies where it was written
to or fails loudly, and writes what the final kernel writes; the simplest kernels write the same bytes."""

import pytest
import torch

from bench.inputs import launch_buffers, poison
from harness.env import triton_device
from notebook import kernel_floor

pytestmark = pytest.mark.skipif(triton_device() == "cuda", reason="CPU checks; on a GPU run the scripts themselves")


@pytest.mark.parametrize("name", [n for n in kernel_floor.VARIANTS if n != "final"])
def test_kernel_variant_writes_what_the_final_kernel_writes(name):
    final, variant = kernel_floor.load_variant("final", []), kernel_floor.load_variant(name, kernel_floor.VARIANTS[name])
    for bs, page, width, longest in [(3, 64, 2100, 2050), (2, 1, 1100, 700)]:
        req_to_token = torch.randint(0, 1 << 30, (bs + 2, width), dtype=torch.int32)
        seq_lens = torch.tensor([longest - 7 * i for i in range(bs)], dtype=torch.int32)
        pool = torch.randperm(bs + 2)[:bs].to(torch.int32)
        written = []
        for module in (final, variant):
            buffers = poison(launch_buffers(bs, 4, page, width, "cpu"), seed=bs)
            module.CudaGraphMetadataLaunch(buffers, req_to_token, 4, 2048, seq_lens, pool)(seq_lens, pool)
            written.append(buffers)
        for field, want in vars(written[0]).items():
            if isinstance(want, torch.Tensor):
                torch.testing.assert_close(getattr(written[1], field), want, rtol=0, atol=0, check_stride=True)


def test_every_variant_is_an_applicable_diff():
    for name in kernel_floor.VARIANTS:
        assert (kernel_floor.diff(name) == "") == (name == "final")


@pytest.mark.parametrize("name", [n for n in kernel_floor.VARIANTS if n != "final"])
def test_a_kernel_edit_under_a_variant_makes_it_fail_loudly(name, monkeypatch):
    """Each text a variant's edits rely on, taken out of the kernel (as a kernel edit would), makes loading
    the variant raise: no variant silently times the unchanged kernel."""
    source = kernel_floor.kernel_source()
    needed = kernel_floor.anchors(name)
    assert needed, f"{name} edits nothing it looks up"
    for text in needed:
        edited = source.replace(text, "")
        monkeypatch.setattr(kernel_floor, "kernel_source", lambda edited=edited: edited)
        with pytest.raises(kernel_floor.VariantDoesNotApply, match="update the variant"):
            kernel_floor.load_variant(name, kernel_floor.VARIANTS[name])


def test_a_variant_whose_text_is_missing_fails_loudly_instead_of_timing_the_kernel_unchanged():
    missing = [("    this line is in no kernel\n", "    nor is this one\n")]
    with pytest.raises(kernel_floor.VariantDoesNotApply, match="holds 0 copies"):
        kernel_floor.load_variant("planted", missing)


@pytest.mark.parametrize("page", [1, 64])
def test_simplest_kernel_writes_the_page_table_bytes_the_final_kernel_writes(page):
    from notebook.broadcast_rows import broadcast_rows

    bs, draft, width, length = 3, 4, 2200, 2100
    final = kernel_floor.load_variant("final", [])
    req_to_token = torch.randint(0, 1 << 30, (bs + 2, width), dtype=torch.int32)
    seq_lens = torch.full((bs,), length - draft, dtype=torch.int32)
    pool = torch.randperm(bs + 2)[:bs].to(torch.int32)
    ours, simplest = launch_buffers(bs, draft, page, width, "cpu"), launch_buffers(bs, draft, page, width, "cpu")
    final.CudaGraphMetadataLaunch(ours, req_to_token, draft, 2048, seq_lens, pool)(seq_lens, pool)
    broadcast_rows(pool=pool, req_to_token=req_to_token, page_table=simplest.page_table_1,
                   real_page_table=simplest.real_page_table, length=length, draft=draft, page_size=page)
    torch.testing.assert_close(simplest.page_table_1, ours.page_table_1, rtol=0, atol=0, check_stride=True)
    torch.testing.assert_close(simplest.real_page_table, ours.real_page_table, rtol=0, atol=0, check_stride=True)


def test_bulk_store_probe_writes_the_page_table_bytes_and_nothing_past_the_length():
    from notebook.broadcast_rows import broadcast_rows, broadcast_rows_tma

    bs, draft, width, length, page = 3, 4, 2200, 2100, 64
    req_to_token = torch.randint(0, 1 << 30, (bs + 2, width), dtype=torch.int32)
    pool = torch.randperm(bs + 2)[:bs].to(torch.int32)
    plain, bulk = (poison(launch_buffers(bs, draft, page, width, "cpu"), seed=1) for _ in range(2))
    broadcast_rows(pool=pool, req_to_token=req_to_token, page_table=plain.page_table_1,
                   real_page_table=plain.real_page_table, length=length, draft=draft, page_size=page)
    broadcast_rows_tma(pool=pool, req_to_token=req_to_token, page_table=bulk.page_table_1,
                       real_page_table=bulk.real_page_table, length=length, draft=draft, page_size=page, col_programs=3)
    torch.testing.assert_close(bulk.page_table_1, plain.page_table_1, rtol=0, atol=0, check_stride=True)
    torch.testing.assert_close(bulk.real_page_table, plain.real_page_table, rtol=0, atol=0, check_stride=True)


def test_fill_probe_writes_the_same_addresses_and_nothing_else():
    from notebook.broadcast_rows import fill_rows

    bs, draft, width, length, page = 3, 4, 2200, 2100, 64
    filled, stale = (poison(launch_buffers(bs, draft, page, width, "cpu"), seed=2) for _ in range(2))
    fill_rows(page_table=filled.page_table_1, real_page_table=filled.real_page_table, length=length, draft=draft,
              page_size=page)
    pages = -(-length // page)
    want_table = stale.page_table_1.clone()
    want_table[:, :length] = torch.arange(length, dtype=torch.int32)
    want_pages = stale.real_page_table.clone()
    want_pages[:, :pages] = torch.arange(pages, dtype=torch.int32)
    torch.testing.assert_close(filled.page_table_1, want_table, rtol=0, atol=0, check_stride=True)
    torch.testing.assert_close(filled.real_page_table, want_pages, rtol=0, atol=0, check_stride=True)


@pytest.mark.parametrize("along_rows", [False, True])
def test_simplest_kernels_write_the_same_whichever_order_their_grid_takes(along_rows):
    from notebook.broadcast_rows import broadcast_rows, fill_rows

    bs, draft, width, length, page = 3, 2, 2200, 2100, 64
    req_to_token = torch.randint(0, 1 << 30, (bs + 2, width), dtype=torch.int32)
    pool = torch.randperm(bs + 2)[:bs].to(torch.int32)
    written = []
    for order in (False, along_rows):
        out = poison(launch_buffers(bs, draft, page, width, "cpu"), seed=3)
        broadcast_rows(pool=pool, req_to_token=req_to_token, page_table=out.page_table_1,
                       real_page_table=out.real_page_table, length=length, draft=draft, page_size=page, along_rows=order)
        filled = poison(launch_buffers(bs, draft, page, width, "cpu"), seed=3)
        fill_rows(page_table=filled.page_table_1, real_page_table=filled.real_page_table, length=length, draft=draft,
                  page_size=page, along_rows=order)
        written.append((out, filled))
    for a, b in zip(*written):
        for field in ("page_table_1", "real_page_table"):
            torch.testing.assert_close(getattr(b, field), getattr(a, field), rtol=0, atol=0, check_stride=True)
