"""Classification tasks over a data set: the paper's pair tasks and ``all``.

``"AvB"`` keeps classes A and B and relabels them 0 and 1 (the paper's five tasks are
``0v1 2v3 4v5 6v7 8v9``); ``"all"`` keeps every class.
"""

from __future__ import annotations

import re

import numpy as np

from hybnn.data.dataset import Dataset
from hybnn.errors import DataError

_PAIR = re.compile(r"^(\d+)v(\d+)$")


def task_classes(task: str, num_classes: int) -> list[int]:
    """The original class ids a task keeps, in label order."""
    if task == "all":
        return list(range(num_classes))
    m = _PAIR.match(task)
    if not m:
        raise DataError(f"unknown task {task!r}: use 'all' or a pair like '0v1'")
    a, b = int(m.group(1)), int(m.group(2))
    if a == b or max(a, b) >= num_classes:
        raise DataError(f"task {task!r} needs two different classes below {num_classes}")
    return [a, b]


def select_task(data: Dataset, task: str) -> Dataset:
    """Keep the task's classes and relabel them 0..k-1."""
    classes = task_classes(task, data.num_classes)
    keep = np.isin(data.y, classes)
    sub = data.subset(np.flatnonzero(keep))
    remap = np.full(max(data.num_classes, 1), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    sub.y = remap[sub.y]
    sub.num_classes = len(classes)
    sub.label_space = data.label_space.select(classes)
    if len(sub) == 0:
        raise DataError(f"{data.name}: no samples for task {task!r}")
    return sub
