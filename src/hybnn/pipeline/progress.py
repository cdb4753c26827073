"""Progress bars that stay quiet when output is not a terminal or when asked to."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled(requested: bool = True) -> bool:
    return requested and not os.environ.get("HYBNN_NO_PROGRESS") and sys.stderr.isatty()


def bar(items: Iterable[T], desc: str, enabled: bool = True, total: int | None = None,
        leave: bool = False) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar on stderr when enabled and attached to a terminal."""
    if not progress_enabled(enabled):
        yield from items
        return
    yield from tqdm(items, desc=desc, total=total, leave=leave, dynamic_ncols=True,
                    file=sys.stderr)
