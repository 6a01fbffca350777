"""Fixtures of the benchmark suite: device, stage modules, peers, the card's copy bandwidth."""

import os
import platform

import pytest
import torch

GPU = torch.cuda.is_available() and os.environ.get("NSA_DEVICE", "cuda") != "cpu"
if not GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import triton  # noqa: E402

from bench.peers import empty_launch, load_upstream_peer  # noqa: E402
from harness.loader import load_built  # noqa: E402

DEVICE = "cuda" if GPU else "cpu"


@pytest.fixture(scope="session")
def device() -> str:
    return DEVICE


@pytest.fixture(scope="session")
def stage_modules() -> dict:
    """Stages in series order. With NSA_USE_BUILD (GPU machines, no git) from `make bench-prepare`'s build."""
    if os.environ.get("NSA_USE_BUILD"):
        return load_built()
    from harness import stages

    return {name: stages.load(name) for name in stages.names()}


@pytest.fixture(scope="session")
def environment() -> dict:
    return {
        "card": torch.cuda.get_device_name() if GPU else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "comparable": GPU,  # CPU timings run Triton through its interpreter: counts only
    }


@pytest.fixture(scope="session")
def copy_bandwidth() -> float | None:
    """Bytes read + written per second by a large device-to-device copy, measured in this run."""
    if not GPU:
        return None
    from bench.timing import device_us

    src = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * src.numel() / (device_us(lambda: dst.copy_(src), 20) * 1e-6)


@pytest.fixture(scope="session")
def upstream_peer():
    peer, note = load_upstream_peer()
    if peer is None:
        pytest.skip(note)
    return peer


@pytest.fixture(scope="session")
def empty_triton_launch():
    return empty_launch(DEVICE)
