"""Fixtures of the benchmark suite: device, stage modules, peers, the card's copy bandwidth."""

import pytest

from harness.env import triton_device

DEVICE = triton_device()  # before triton is imported
GPU = DEVICE == "cuda"

from bench.machine import environment as describe  # noqa: E402
from bench.peers import empty_launch, load_upstream_peer  # noqa: E402
from harness import stages  # noqa: E402


@pytest.fixture(scope="session")
def device() -> str:
    return DEVICE


@pytest.fixture(scope="session")
def stage_modules() -> dict:
    """Stages in series order (from the prepared build with NSA_USE_BUILD, see harness.stages)."""
    return {name: stages.load(name) for name in stages.names()}


@pytest.fixture(scope="session")
def environment() -> dict:
    return {**describe(DEVICE), "comparable": GPU}  # CPU timings run Triton through its interpreter: counts only


@pytest.fixture(scope="session")
def copy_bandwidth() -> float | None:
    """Bytes read + written per second by a large device-to-device copy, measured in this run."""
    if not GPU:
        return None
    from bench.timing import copy_bandwidth

    return copy_bandwidth()


@pytest.fixture(scope="session")
def upstream_peer():
    peer, note = load_upstream_peer()
    if peer is None:
        pytest.skip(note)
    return peer


@pytest.fixture(scope="session")
def empty_triton_launch():
    return empty_launch(DEVICE)
