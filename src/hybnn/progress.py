"""Progress of long work: a bar on a terminal, a line per finished step in a log.

When stderr is a terminal, :func:`bar` shows a tqdm bar; otherwise (a log file, CI, a
pipe) it writes one line per finished step, ``desc: 3/20 (15 %), 4.2 s``, so a log shows
the run moving. ``--no-progress`` or ``HYBNN_NO_PROGRESS=1`` silences both.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled(requested: bool = True) -> bool:
    """Whether progress is reported at all (asked for, and not silenced by the environment)."""
    return requested and not os.environ.get("HYBNN_NO_PROGRESS")


def bar(items: Iterable[T], desc: str, enabled: bool = True, total: int | None = None,
        leave: bool = False) -> Iterator[T]:
    """Yield ``items`` while reporting progress on stderr (see the module docstring)."""
    if not progress_enabled(enabled):
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=desc, total=total, leave=leave, dynamic_ncols=True,
                        file=sys.stderr)
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for i, item in enumerate(items, 1):
        yield item
        share = f" ({100 * i // total} %)" if total else ""
        print(f"{desc}: {i}/{total or '?'}{share}, {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
