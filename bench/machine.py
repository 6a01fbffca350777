"""The name results are filed under: reports/<machine>/ (h100, h200, ... or cpu)."""

import re


def machine_name() -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name()
    found = re.search(r"\b([A-Z]\d{2,4})\b", name)
    return found.group(1).lower() if found else re.sub(r"\W+", "-", name.lower()).strip("-")


if __name__ == "__main__":
    print(machine_name())
