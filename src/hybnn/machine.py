"""The machine a result was measured on, recorded beside it (results.json, BENCHMARKS.md)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    """CPU model, core count and Python/torch versions, for the record beside a result."""
    import torch

    return (f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}")
