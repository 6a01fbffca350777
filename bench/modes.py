"""Decode and draft extend (issue 10): the replays patches 0006-0007 fuse, against baseline and upstream.

    python3 -m bench.modes OUT.json        (GPU; NSA_USE_BUILD=1 on a machine without git)
    python3 -m bench.modes --table OUT.json   (the markdown table of a saved run)

Inputs: sglang's graph-runner buffers at a 163840-wide table (DeepSeek V3.2's 160k context), page
64, D=4, seq_lens uniform in [D, 64k], draft extend's accept lengths uniform in [1, D], bs 1-256.
  host (µs of one call, the queue drained before it, interleaved rounds, median and quartiles):
    baseline      sglang 0.5.6's whole replay of the mode (its host reads and device syncs included)
    final         the final stage's whole replay (one launch, or nothing once recorded)
  kernel (GPU µs, triton.testing.do_bench median per round, interleaved):
    final         the final stage's launch object, launched bare
    upstream-*    upstream 0.5.23's fused kernel of the mode, called bare on the same buffers:
      decode          fused_dsa_decode_metadata; -static: max_len = the table width, as it ships;
                      -hostmax: the batch's max read on the host first (not timed)
      draft extend    fused_dsa_draft_extend_metadata; -v1: our semantics (accept_length rows,
                      total and max read on the host first, not timed); -v2-static: as 0.5.23
                      ships it, the v2 mode: all D rows of every request and the table width,
                      which is more work than v1's rows, so it is listed, not compared.
"""

from __future__ import annotations

import json
import sys

from harness.env import triton_device

DEVICE = triton_device()  # before triton is imported

import torch  # noqa: E402

from bench.peers import load_upstream_kernels  # noqa: E402
from bench.timing import interleaved_host_us, interleaved_kernel_us  # noqa: E402
from harness import stages  # noqa: E402
from harness.runner import Batch  # noqa: E402
from harness.scenarios import Scenario  # noqa: E402

WIDTH, PAGE, DRAFT, TOPK, MAX_LEN = 163840, 64, 4, 2048, 65536
BATCH_SIZES = (1, 32, 128, 256)
KERNEL_ROUNDS, HOST_ROUNDS = 5, 200


def runner_for(module, mode: str, bs: int, width: int = WIDTH):
    scenario = Scenario(num_draft_tokens=DRAFT, page_size=PAGE, index_topk=TOPK, mode=mode,
                        context_len=width, capture_bs=(bs,), pool_size=bs + 8, seed=bs)
    g = torch.Generator().manual_seed(bs)
    lens = torch.randint(DRAFT, min(MAX_LEN, width) + 1, (bs,), generator=g, dtype=torch.int32)
    pool = torch.randperm(bs + 8, generator=g)[:bs].to(torch.int32)
    accept = torch.randint(1, DRAFT + 1, (bs,), generator=g, dtype=torch.int32) if mode == "draft_extend" else None
    batch = Batch(pool.to(DEVICE), lens.to(DEVICE), None if accept is None else accept.to(DEVICE))
    runner = scenario.runner(module, DEVICE)
    runner.replay(batch)  # compiled, caches warm
    runner.prepare(batch)
    return runner


def upstream_kernels(upstream, runner, mode: str, bs: int) -> dict:
    md = runner.backend.decode_cuda_graph_metadata[bs]
    seq_lens, pool, r2t = runner.seq_lens[:bs], runner.req_pool_indices[:bs], runner.backend.req_to_token
    host_max = int(runner.seq_lens_cpu[:bs].max())
    calls = {}
    if mode == "decode":
        for name, max_len in (("upstream-static", md.page_table_1.shape[1]), ("upstream-hostmax", host_max)):
            calls[name] = (lambda m=max_len: upstream.fused_dsa_decode_metadata(
                seq_lens, pool, r2t, md.cache_seqlens_int32, md.cu_seqlens_k, md.page_table_1,
                md.nsa_cache_seqlens_int32, md.nsa_cu_seqlens_k, md.real_page_table, bs, m, TOPK, PAGE))
        return calls
    accept = runner.accept_length[:bs]
    full = torch.full((bs,), DRAFT, dtype=torch.int32, device=DEVICE)
    v1 = (accept, int(accept.sum()), host_max, False)
    v2 = (full, bs * DRAFT, md.page_table_1.shape[1], True)
    for name, (extend, total, max_k, static) in (("upstream-v1", v1), ("upstream-v2-static", v2)):
        calls[name] = (lambda e=extend, t=total, k=max_k, s=static: upstream.fused_dsa_draft_extend_metadata(
            seq_lens, e, pool, r2t, md.cache_seqlens_int32, md.cu_seqlens_k, md.page_table_1,
            md.nsa_seqlens_expanded, md.nsa_cache_seqlens_int32, md.nsa_cu_seqlens_k, md.real_page_table,
            bs, t, k, TOPK, PAGE, DRAFT, bs * DRAFT, static_extend_len=s))
    return calls


def measure(mode: str, bs: int, baseline, final, upstream, width: int = WIDTH) -> dict:
    base_runner, final_runner = runner_for(baseline, mode, bs, width), runner_for(final, mode, bs, width)
    launches = final_runner.backend.decode_launches if mode == "decode" else final_runner.backend.draft_extend_launches
    launch = launches[bs]
    host = {"baseline": lambda: base_runner.replay_metadata(bs), "final": lambda: final_runner.replay_metadata(bs)}
    kernels = {"final": lambda: launch(*launch.static_inputs)}
    if upstream is not None:
        kernels.update(upstream_kernels(upstream, final_runner, mode, bs))
    gpu = DEVICE == "cuda"
    rounds, warmup = (HOST_ROUNDS, 10) if gpu else (3, 1)
    timed = interleaved_host_us(host, rounds, warmup=warmup)
    # Interleaved, each final call pays for what the baseline call before it left behind (caches,
    # allocator): +18-37 µs on the H100 (notebook.draft_extend_host). Alone is its own cost.
    timed["final-alone"] = interleaved_host_us({"final": host["final"]}, rounds, warmup=warmup)["final"]
    return dict(mode=mode, bs=bs, draft=DRAFT, page_size=PAGE, width=width, host=timed,
                kernel=interleaved_kernel_us(kernels, KERNEL_ROUNDS) if gpu else {})


def table(path: str) -> str:
    run = json.load(open(path))
    env, rows = run["environment"], run["rows"]
    names = sorted({k for r in rows for k in r["kernel"]}, key=lambda n: (n != "final", n))
    head = ["mode", "bs", "host baseline µs", "host final µs", "host final alone µs"] + [
        f"kernel {n} µs" for n in names]
    fmt = lambda s: f"{s['us']:.1f} [{s['q1']:.1f}, {s['q3']:.1f}]" if s else "-"  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["mode"], r["bs"], fmt(r["host"]["baseline"]), fmt(r["host"]["final"]),
                 fmt(r["host"].get("final-alone"))]
        cells += [fmt(r["kernel"].get(n)) for n in names]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    note = (f"{env['card']}, torch {env['torch']}, triton {env['triton']}; median [q1, q3]; final stage "
            f"`{env['final_stage']}`; width {rows[0]['width'] if rows else '-'}, page {PAGE}, D {DRAFT}.")
    return "\n".join(lines) + "\n\n" + note


def main(out: str) -> None:
    import triton

    gpu = DEVICE == "cuda"
    baseline, final = stages.load(stages.BASELINE), stages.load(stages.final())
    upstream, note = load_upstream_kernels()
    env = dict(card=torch.cuda.get_device_name() if gpu else "cpu", torch=torch.__version__,
               triton=triton.__version__, final_stage=stages.final(), peer=note, comparable=gpu)
    print(env, flush=True)
    rows = []
    plan = [(m, bs) for m in ("decode", "draft_extend") for bs in BATCH_SIZES] if gpu else [("decode", 2), ("draft_extend", 2)]
    for mode, bs in plan:
        row = measure(mode, bs, baseline, final, upstream, WIDTH if gpu else 320)
        rows.append(row)
        print(mode, bs, {k: round(v["us"], 1) for k, v in row["host"].items()},
              {k: round(v["us"], 1) for k, v in row["kernel"].items()}, flush=True)
        with open(out, "w") as f:  # after every input: a run cut short keeps its rows
            json.dump({"environment": env, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        print(table(sys.argv[2]))
    else:
        main(sys.argv[1])
