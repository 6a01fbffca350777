"""Process setup every entry point shares: which device Triton code runs on.

Triton reads TRITON_INTERPRET when it is imported, so `triton_device()` must run before anything
imports triton (the conftests, `python -m harness` and `python -m bench.*` call it first).
"""

from __future__ import annotations

import os
from types import SimpleNamespace


def triton_device(default: str = "cuda") -> str:
    """NSA_DEVICE, else `default`; "cpu" where no GPU is present, with Triton through its interpreter.

    Only a CPU run gets the interpreter: set globally it would push a GPU run's launches through it.
    """
    device = "cpu"
    if os.environ.get("NSA_DEVICE", default) == "cuda":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
        adapt_torch_cuda_to_cpu()
    return device


# What the product's kernel module reads of torch.cuda, answered for CPU tensors. The module is
# written for CUDA, as sglang ships it; these stand-ins are the harness's, installed by
# `adapt_torch_cuda_to_cpu()` (every stage the harness loads) and never used for a CUDA device.
CPU_MULTIPROCESSORS = 128  # sizes the launch grid only: any count gives the same buffers


def adapt_torch_cuda_to_cpu() -> None:
    """Let the kernel module run on CPU tensors: `torch.cuda.get_device_properties(cpu device)`
    answers a `CPU_MULTIPROCESSORS`-SM device, and where CUDA is absent
    `torch.cuda.is_current_stream_capturing()` answers False (no stream captures there; the
    harness's CPU graph says True while it captures, `harness.cuda_graph.recorder`).
    Idempotent; calls for CUDA devices reach torch unchanged."""
    import torch

    properties = torch.cuda.get_device_properties
    if getattr(properties, "adapted_to_cpu", False):
        return

    def get_device_properties(device=None):
        if isinstance(device, (str, torch.device)) and torch.device(device).type == "cpu":
            return SimpleNamespace(multi_processor_count=CPU_MULTIPROCESSORS)
        return properties(device)

    get_device_properties.adapted_to_cpu = True
    torch.cuda.get_device_properties = get_device_properties
    if not torch.cuda.is_available():
        torch.cuda.is_current_stream_capturing = lambda: False
