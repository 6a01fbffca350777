"""What results are filed under (reports/<machine>/: h100, h200, ... or cpu) and the software they ran on."""

import platform
import re


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
    }


if __name__ == "__main__":
    print(machine_name())
