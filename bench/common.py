"""Benchmark records: one section of BENCHMARKS.md between its ``<!-- NAME:start/end -->``
markers, and the ``--json FILE`` of targets every bench script writes."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Any

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


def target(name: str, value: Any, goal: str, met: bool) -> dict[str, Any]:
    """One entry of a bench script's ``targets``: what was measured against what was asked."""
    return {"name": name, "value": value, "goal": goal, "met": bool(met)}


def write_json(path: str | os.PathLike[str], targets: list[dict[str, Any]],
               **fields: Any) -> Path:
    """The ``--json FILE`` every bench script writes: ``{"machine", "targets", ...}``."""
    record = {"machine": machine_description(), "targets": targets, **fields}
    return atomic_write(path, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
