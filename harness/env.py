"""Process setup every entry point shares: which device Triton code runs on.

Triton reads TRITON_INTERPRET when it is imported, so `triton_device()` must run before anything
imports triton (the conftests, `python -m harness` and `python -m bench.*` call it first).
"""

from __future__ import annotations

import os


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
    return device
