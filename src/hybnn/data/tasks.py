"""Classification tasks over a data set (spelled as :mod:`hybnn.data.task_spec` says)."""

from __future__ import annotations

import numpy as np

from hybnn.data.dataset import Dataset
from hybnn.data.task_spec import task_classes
from hybnn.errors import DataError

__all__ = ["select_task", "task_classes"]


def select_task(data: Dataset, task: str) -> Dataset:
    """Keep the task's classes and relabel them 0..k-1."""
    classes = task_classes(task, data.num_classes, data.label_space.names)
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
