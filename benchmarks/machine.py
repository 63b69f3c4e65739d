"""The machine a benchmark ran on, as its JSON records it (imported by the scripts beside it)."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def machine_state(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    """CPUs, PyTorch's threads, the load average when the benchmark started (`os.getloadavg()` then),
    the platform and torch's version."""
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_at_start": [round(x, 2) for x in load_at_start],
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
