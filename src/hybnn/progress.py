"""Progress of long work: a bar on a terminal, a line per finished step in a log.

When stderr is a terminal, :func:`bar` shows a tqdm bar; otherwise (a log file, CI, a
pipe) it writes one line per finished step, ``desc: 3/20 (15 %), 4.2 s``, so a log shows
the run moving. Training reports each epoch as one line with its loss and accuracy
(:class:`EpochReport`), kept above the bar on a terminal. ``--no-progress`` or
``HYBNN_NO_PROGRESS=1`` silences both.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

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


# What an epoch line shows, in this order: (history key, label, as a percentage).
EPOCH_FIELDS = (("train_loss", "loss", False), ("loss", "loss", False),
                ("train_acc", "acc", True), ("test_loss", "test loss", False),
                ("test_acc", "test acc", True), ("rec", "rec", False), ("kl", "kl", False),
                ("train_agreement", "bits agree", True),
                ("test_agreement", "test bits agree", True))


def epoch_line(desc: str, logs: dict[str, Any], epochs: int) -> str:
    """``desc: epoch 3/20  loss 0.4123  acc 91.20 %  test acc 90.10 %  0.8 s``."""
    parts = [f"{desc}: epoch {logs['epoch']}/{epochs}"]
    shown: set[str] = set()
    for key, label, percent in EPOCH_FIELDS:
        value = logs.get(key)
        if isinstance(value, (int, float)) and label not in shown:
            shown.add(label)
            parts.append(f"{label} {100 * value:.2f} %" if percent else f"{label} {value:.4f}")
    if isinstance(logs.get("seconds"), (int, float)):
        parts.append(f"{logs['seconds']:.1f} s")
    return "  ".join(parts)


class EpochReport:
    """One line per finished epoch with its loss and accuracy (kept on a terminal, above a
    bar of the epochs left; written as it is to a log), or nothing when silenced."""

    def __init__(self, desc: str, epochs: int, start: int = 0, enabled: bool = True) -> None:
        self.desc, self.epochs = desc, epochs
        self.enabled = progress_enabled(enabled)
        self._bar: Any = None
        if self.enabled and sys.stderr.isatty() and start < epochs:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=epochs, initial=start, desc=desc, leave=False,
                             dynamic_ncols=True, file=sys.stderr)

    def epoch(self, logs: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = epoch_line(self.desc, logs, self.epochs)
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
            self._bar.update(1)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
