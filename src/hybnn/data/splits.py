"""Deterministic stratified train/test splits.

Sources with an official test set (MNIST, Fashion-MNIST) use it; the others are split per
class from a seed, so the same seed always gives the same split on every machine.
"""

from __future__ import annotations

import numpy as np

from hybnn.data.dataset import Dataset
from hybnn.data.sources import load_source
from hybnn.data.tasks import select_task
from hybnn.errors import DataError

SPLIT_SEED = 0


def stratified_split(
    y: np.ndarray, test_fraction: float = 0.2, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), stratified by label, reproducible from ``seed``."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        n_test = round(len(idx) * test_fraction)
        if len(idx) > 1:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def train_test(
    data: Dataset, test_fraction: float = 0.2, seed: int = SPLIT_SEED
) -> tuple[Dataset, Dataset]:
    """Split ``data`` into (train, test), using the official test set where there is one."""
    if data.test_mask is not None:
        mask = data.test_mask
        return data.subset(np.flatnonzero(~mask)), data.subset(np.flatnonzero(mask))
    tr, te = stratified_split(data.y, test_fraction, seed)
    return data.subset(tr), data.subset(te)


def load_split(data: str, task: str, split: str) -> Dataset:
    """A data source, restricted to a task and a split (``train``, ``test`` or ``all``)."""
    source = load_source(data)
    if len(source) == 0:
        raise DataError(f"{data}: the data set holds no samples")
    if split == "all":
        part = source
    else:
        train, test = train_test(source)
        part = train if split == "train" else test
    return select_task(part, task)
