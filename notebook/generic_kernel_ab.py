"""Did making the fused kernel generic (issue 9) cost anything? The final stage's kernel against the
same stage before that change, interleaved, on one GPU.

Issue 9 changed the final kernel in three ways that touch its hot path: the length scan loops over
chunks of the batch (with carries) instead of one block, every program finds the longest request
with that loop too, and each program wraps and range-checks its pool index. Prediction: no change
beyond noise at bs <= 256 (one scan chunk at D=4; the pool-index check is two scalar compares per
program).

    python3 -m notebook.generic_kernel_ab <before kernel .py> <after kernel .py> [out.json]

Both files are kernel modules holding TargetVerifyMetadataLaunch with the graph-stage API.
Timing: triton.testing.do_bench median of the bare launch, A and B alternated for ROUNDS rounds;
the table gives the median and IQR of the rounds' medians, and the ratio after / before.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys

import torch
import triton
import triton.testing

from bench.inputs import launch_buffers

ROUNDS = 15
D, PAGE, TOPK = 4, 64, 2048
INPUTS = [(bs, width, 65536) for width in (65600, 163840) for bs in (1, 32, 128, 256)]


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quartiles(xs):
    q = statistics.quantiles(xs, n=4)
    return q[1], q[2] - q[0]


def main(before_path: str, after_path: str, out: str | None = None) -> None:
    kernels = {"before": load(before_path, "kernel_before"), "after": load(after_path, "kernel_after")}
    rows = []
    for bs, width, length in INPUTS:
        req_to_token = torch.randint(0, 1 << 30, (bs + 8, width), dtype=torch.int32, device="cuda")
        seq_lens = torch.full((bs,), length - D, dtype=torch.int32, device="cuda")
        pool = torch.randperm(bs + 8, device="cuda")[:bs].to(torch.int32)
        launches, outputs = {}, {}
        for name, kernel in kernels.items():
            meta = launch_buffers(bs, D, PAGE, width, "cuda")
            launches[name] = kernel.TargetVerifyMetadataLaunch(meta, req_to_token, D, TOPK, seq_lens, pool)
            launches[name](seq_lens, pool)
            outputs[name] = meta
        for field in vars(outputs["before"]):
            a, b = getattr(outputs["before"], field), getattr(outputs["after"], field)
            if isinstance(a, torch.Tensor):
                torch.testing.assert_close(b, a, rtol=0, atol=0, check_stride=True)
        times = {name: [] for name in kernels}
        for _ in range(ROUNDS):
            for name, launch in launches.items():
                times[name].append(triton.testing.do_bench(lambda: launch(seq_lens, pool), warmup=5, rep=40) * 1e3)
        (b_med, b_iqr), (a_med, a_iqr) = quartiles(times["before"]), quartiles(times["after"])
        rows.append(dict(bs=bs, width=width, length=length, before_us=b_med, before_iqr=b_iqr,
                         after_us=a_med, after_iqr=a_iqr, ratio=a_med / b_med))
        print(f"bs {bs:4} width {width:6}: before {b_med:7.1f} (IQR {b_iqr:4.1f})  after {a_med:7.1f} "
              f"(IQR {a_iqr:4.1f}) us  after/before {a_med / b_med:.3f}", flush=True)
    env = dict(card=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               rounds=ROUNDS, draft=D, page_size=PAGE)
    print(env)
    if out:
        with open(out, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:])
