"""Fixtures of the benchmark suite: upstream's kernels, the card's copy bandwidth, the environment stored
with every result (card, versions, the series' hash)."""

import pytest

from bench import replay_operator as op  # first: sets up the interpreter where there is no GPU
from bench.machine import environment as describe

GPU = op.GPU


@pytest.fixture(scope="session")
def environment() -> dict:
    return {**describe(op.DEVICE), "comparable": GPU}  # CPU timings run Triton through its interpreter: counts only


@pytest.fixture(scope="session")
def copy_bandwidth() -> float | None:
    """Bytes read + written per second by a large device-to-device copy, measured in this run."""
    if not GPU:
        return None
    from bench.timing import copy_bandwidth

    return copy_bandwidth()


@pytest.fixture(scope="session")
def upstream():
    """Upstream 0.5.23's metadata kernels (NSA_UPSTREAM_WHEEL), or None where they cannot run."""
    return op.upstream()[0]


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Every saved run carries the hash of the series it measured: `make report` tells stale runs by it."""
    from bench.machine import series_hash

    output_json["series_hash"] = series_hash()
