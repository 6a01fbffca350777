"""What the final stage's kernel costs at server start: compile time per captured bs.

The launch object compiles its kernel when it is built, at capture (patch 5): D, topk, the table
width and strides are compile-time constants. bs and the column programs are not (the kernel is not
specialized on them), so only the first captured bs of a mode compiles; until this session each bs
did, 0.2-0.5 s each (notebook/NOTES.md). This measures that cost over sglang's default CUDA-graph
capture list for a GPU of this size, cold (an empty Triton cache) and warm (the cache a previous
start left), and checks the first replay after capture compiles nothing.

    python3 -m notebook.startup OUT.json       (NSA_USE_BUILD=1 on a machine without git)

Each measurement runs in a fresh process (Triton keeps compiled kernels in memory too); cold and
warm share one TRITON_CACHE_DIR, emptied before the cold run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

# A capture list shaped like sglang's default cuda_graph_bs (small sizes one by one, then steps of
# 8) up to 160; speculative runs usually cap it lower.
CAPTURE_BS = [1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128,
              136, 144, 152, 160]
D, PAGE, TOPK, WIDTH = 4, 64, 2048, 163840


def _one_start() -> dict:
    import torch

    from bench.inputs import launch_buffers
    from harness import stages

    kernel = stages.kernel_module(stages.final())
    req_to_token = torch.zeros(max(CAPTURE_BS) + 1, WIDTH, dtype=torch.int32, device="cuda")
    table = torch.zeros(max(CAPTURE_BS) * D, WIDTH, dtype=torch.int32, device="cuda")
    real = torch.zeros(max(CAPTURE_BS) * D, WIDTH // PAGE, dtype=torch.int32, device="cuda")
    per_bs, first_replay = {}, {}
    for bs in reversed(CAPTURE_BS):  # largest first, as sglang captures
        meta = launch_buffers(bs, D, PAGE, WIDTH, "cuda", tables=(table, real))
        seq_lens = torch.ones(bs, dtype=torch.int32, device="cuda")
        pool = torch.zeros(bs, dtype=torch.int32, device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        launch = kernel.CudaGraphMetadataLaunch(meta, req_to_token, D, TOPK, seq_lens, pool)
        torch.cuda.synchronize()
        per_bs[bs] = time.perf_counter() - t0
        t0 = time.perf_counter()
        launch(seq_lens, pool)
        torch.cuda.synchronize()
        first_replay[bs] = time.perf_counter() - t0
    return {"capture_s": per_bs, "first_replay_s": first_replay}


def main(out: str) -> None:
    import torch
    import triton

    cache = tempfile.mkdtemp(prefix="triton-cache-")
    env = dict(os.environ, TRITON_CACHE_DIR=cache)
    result = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "capture_bs": CAPTURE_BS, "draft": D, "page_size": PAGE, "width": WIDTH}
    for run in ("cold", "warm"):
        proc = subprocess.run([sys.executable, "-m", "notebook.startup", "--one"], env=env,
                              capture_output=True, text=True, check=True)
        result[run] = json.loads(proc.stdout.strip().splitlines()[-1])
        capture = result[run]["capture_s"].values()
        first = result[run]["first_replay_s"].values()
        print(f"{run}: capture total {sum(capture):.2f} s over {len(CAPTURE_BS)} bs "
              f"(max {max(capture) * 1e3:.0f} ms at one bs); first replay after capture at most "
              f"{max(first) * 1e3:.2f} ms", flush=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    if sys.argv[1:] == ["--one"]:
        print(json.dumps(_one_start()))
    else:
        main(sys.argv[1])
