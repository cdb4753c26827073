"""What every bench script writes: its section of BENCHMARKS.md between the
``<!-- NAME:start/end -->`` markers, and the ``--json FILE`` of its targets."""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybnn.artifacts import atomic_write
from hybnn.machine import machine_description


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


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int
                ) -> dict[str, tuple[float, float]]:
    """(median, fastest) seconds per call of each function after one warm-up call,
    repetitions interleaved in random order: on a shared machine other jobs only ever add
    time, so the fastest is the better estimate of each variant alone, the median of what a
    user sees."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    order = list(fns)
    for _ in range(rounds):
        random.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}
