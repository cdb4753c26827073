"""Data: IDX reader, named sources, tasks, deterministic splits and input preparation.

Names are imported on first use, so :mod:`hybnn.data.names` is usable without numpy.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "Dataset": "dataset", "read_idx": "idx", "PREPS": "names", "PAPER_TASKS": "names",
    "prepare": "prep", "BUILTIN_SOURCES": "sources", "load_idx_pair": "sources",
    "load_npz": "sources", "load_source": "sources", "read_inputs": "inputs",
    "load_split": "splits", "stratified_split": "splits", "train_test": "splits",
    "select_task": "tasks", "task_classes": "tasks",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"hybnn.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'hybnn.data' has no attribute {name!r}")
