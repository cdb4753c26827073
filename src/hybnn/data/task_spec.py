"""How a task is spelled, parsed without numpy (the CLI checks ``--task`` before loading data).

* ``all``: every class;
* ``AvB``: classes A and B, relabelled 0 and 1 (the paper's five tasks are
  ``0v1 2v3 4v5 6v7 8v9``);
* a comma list of two or more classes, each a class number or a class name:
  ``0,2,7`` or ``T-shirt/top,Pullover,Coat``, relabelled 0..k-1 in the order given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hybnn.errors import DataError

_PAIR = re.compile(r"^(\d+)v(\d+)$")


def task_classes(task: str, num_classes: int, names: Sequence[str] = ()) -> list[int]:
    """The original class ids (indices of the source's label space) a task keeps, in label
    order; ``names`` are the source's class names, for a list that names classes."""
    if task == "all":
        return list(range(num_classes))
    m = _PAIR.match(task)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if a == b or max(a, b) >= num_classes:
            raise DataError(f"task {task!r} needs two different classes below {num_classes}")
        return [a, b]
    if "," not in task:
        raise DataError(f"unknown task {task!r}: use 'all', a pair like '0v1' or a list of "
                        "classes like '0,2,7'")
    classes = [_class(item.strip(), num_classes, names, task) for item in task.split(",")]
    if len(set(classes)) != len(classes):
        raise DataError(f"task {task!r} names a class twice")
    return classes


def _class(item: str, num_classes: int, names: Sequence[str], task: str) -> int:
    if item in names:
        return list(names).index(item)
    if item.isdigit() and int(item) < num_classes:
        return int(item)
    known = f"; class names: {', '.join(names[:20])}" if names else ""
    raise DataError(f"task {task!r}: {item!r} is not a class of this data (numbers "
                    f"0..{num_classes - 1}{known})")
