"""Client partitions of a labelled data set: IID, Dirichlet(α) non-IID, k classes per client.

A partition is drawn in two steps, both from the seed alone:

1. *class shares*: a (classes x clients) matrix whose row c says which fraction of class c
   each client gets — uniform (``iid``), drawn from Dirichlet(α·1) per class
   (``dirichlet``; small α = skewed), or split evenly among the clients that hold the class
   (``classes``: client i holds k classes, assigned round-robin over a seeded permutation,
   so with clients·k ≥ classes every class is held by someone).
2. *cut*: each class's samples are shuffled (seeded) and cut in those proportions.

The same shares cut the train and the test split, so a client's held-out data follows its
own training distribution. Dirichlet shares are redrawn (deterministically) until every
client holds at least ``min_size`` training samples.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hybnn.data import load_source, select_task, train_test
from hybnn.data.dataset import Dataset
from hybnn.errors import DataError
from hybnn.federated.config import SCHEMES, FedConfig

MAX_REDRAWS = 100


def class_shares(num_classes: int, num_clients: int, scheme: str = "iid", alpha: float = 0.5,
                 classes_per_client: int = 1, seed: int = 0) -> np.ndarray:
    """(classes, clients) matrix; each row sums to 1, or is all zero for a class no one holds."""
    if num_clients < 1:
        raise DataError(f"need at least one client, got {num_clients}")
    rng = np.random.default_rng([seed, 7919])
    if scheme == "iid":
        return np.full((num_classes, num_clients), 1.0 / num_clients)
    if scheme == "dirichlet":
        if not alpha > 0:
            raise DataError(f"Dirichlet alpha must be > 0, got {alpha}")
        return rng.dirichlet(np.full(num_clients, float(alpha)), size=num_classes)
    if scheme == "classes":
        k = int(classes_per_client)
        if not 1 <= k <= num_classes:
            raise DataError(f"classes per client must be in 1..{num_classes}, got {k}")
        order = rng.permutation(num_classes)
        held = np.zeros((num_classes, num_clients))
        for i in range(num_clients):
            for j in range(k):
                held[order[(i * k + j) % num_classes], i] = 1.0
        rows = held.sum(axis=1, keepdims=True)
        return np.divide(held, rows, out=np.zeros_like(held), where=rows > 0)
    raise DataError(f"unknown partition {scheme!r}; choose one of {', '.join(SCHEMES)}")


def cut(labels: np.ndarray, shares: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Sorted sample indices of each client, cutting every class in its row's proportions."""
    num_classes, num_clients = shares.shape
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        np.random.default_rng([seed, 104729, c]).shuffle(idx)
        order = np.roll(np.arange(num_clients), -c)  # spread rounding over the clients
        bounds = np.round(np.cumsum(shares[c][order]) * len(idx)).astype(int)
        bounds[-1] = len(idx) if shares[c].sum() > 0 else 0
        start = 0
        for i, end in zip(order, bounds, strict=True):
            parts[i].append(idx[start:end])
            start = end
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def partition(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    num_clients: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    classes_per_client: int = 1,
    seed: int = 0,
    min_size: int = 2,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train indices per client, test indices per client), reproducible from ``seed``."""
    for attempt in range(MAX_REDRAWS):
        shares = class_shares(num_classes, num_clients, scheme, alpha, classes_per_client,
                              seed + 1_000_003 * attempt)
        train = cut(train_labels, shares, seed)
        sizes = [len(p) for p in train]
        if min(sizes) >= min_size:
            return train, cut(test_labels, shares, seed + 1)
        if scheme != "dirichlet":
            break
    raise DataError(
        f"partition {scheme!r} leaves a client with {min(sizes)} training samples "
        f"(sizes {sizes}, need >= {min_size}); use fewer clients, a larger alpha or more data"
    )


@lru_cache(maxsize=4)
def task_splits(data: str, task: str) -> tuple[Dataset, Dataset]:
    """(train, test) of ``task`` on source ``data``, labels relabelled 0..k-1."""
    train, test = train_test(load_source(data))
    return select_task(train, task), select_task(test, task)


def partition_indices(cfg: FedConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train rows, test rows) of every client of ``cfg``'s federation on ``cfg.data``."""
    return _indices(cfg.data, cfg.task, cfg.clients, cfg.partition, cfg.alpha,
                    cfg.classes_per_client, cfg.seed)


@lru_cache(maxsize=8)
def _indices(data: str, task: str, clients: int, scheme: str, alpha: float, k: int,
             seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    train, test = task_splits(data, task)
    return partition(train.y, test.y, train.num_classes, clients, scheme, alpha, k, seed)
