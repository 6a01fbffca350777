"""What results are filed under (reports/<machine>/: h100, h200, ... or cpu), the software they ran on, and
the series they measured (series_hash: saved runs are keyed by it, so a report can tell stale data)."""

import platform
import re
from pathlib import Path

PATCHES = Path(__file__).resolve().parents[1] / "patches"


def series_hash(patches: Path = PATCHES) -> str:
    """The series in patches/series order, hashed as harness.fingerprint hashes it (its changes, not
    its headers or positions): what a measurement depends on."""
    from harness.fingerprint import series_hash as hashed

    lines = (patches / "series").read_text().splitlines()
    return hashed(patches, [name for line in lines if (name := line.split("#", 1)[0].strip())])


def machine_name() -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name()
    found = re.search(r"\b([A-Z]\d{2,4})\b", name)
    return found.group(1).lower() if found else re.sub(r"\W+", "-", name.lower()).strip("-")


def environment(device: str) -> dict:
    """Card and versions, stored beside every result measured on `device`."""
    import torch
    import triton

    return {
        "card": torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "series_hash": series_hash(),
    }


if __name__ == "__main__":
    print(machine_name())
