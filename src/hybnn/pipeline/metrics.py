"""Per-class results: the confusion matrix and what it says per class (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hybnn.data.labels import LabelSpace
from hybnn.errors import DataError


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``m[i, j]``: how many samples of true class ``i`` were predicted as ``j``."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise DataError(f"{len(y_true)} labels for {len(y_pred)} predictions")
    for y in (y_true, y_pred):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"class index outside 0..{num_classes - 1}")
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def per_class(matrix: np.ndarray, space: LabelSpace) -> list[dict[str, Any]]:
    """One row per class: index, label, name, samples and accuracy (recall; None if empty)."""
    rows = []
    for i, (label, name) in enumerate(zip(space.labels, space.names, strict=True)):
        n = int(matrix[i].sum())
        rows.append({"index": i, "label": label, "name": name, "samples": n,
                     "accuracy": float(matrix[i, i] / n) if n else None})
    return rows


def per_class_table(rows: list[dict[str, Any]], matrix: Any) -> str:
    """A plain-text table: per-class accuracy, then the confusion matrix (rows: true)."""
    matrix = np.asarray(matrix)
    names = [str(r["name"]) for r in rows]
    width = max(8, *(len(n) for n in names)) if names else 8
    lines = [f"{'class':<{width}}  samples  accuracy"]
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f} %"
        lines.append(f"{r['name']:<{width}}  {r['samples']:>7}  {acc:>8}")
    cell = max(5, *(len(str(v)) for v in matrix.ravel())) if matrix.size else 5
    head = " ".join(f"{n[:cell]:>{cell}}" for n in names)
    lines += ["", "confusion (rows: true, columns: predicted)", f"{'':<{width}} {head}"]
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:<{width}} " + " ".join(f"{int(v):>{cell}}" for v in row))
    return "\n".join(lines)
