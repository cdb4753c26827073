"""Write one section of BENCHMARKS.md between its ``<!-- NAME:start/end -->`` markers."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from hybnn.artifacts import atomic_write


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

    cpu = cpu_model()

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def write_section(name: str, body: str, path: str | os.PathLike[str] = "BENCHMARKS.md") -> Path:
    """Replace (or append) the section ``name`` of the Markdown file at ``path``."""
    path = Path(path)
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + block + "\n")
    return atomic_write(path, lambda p: p.write_text(text))
