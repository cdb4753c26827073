"""CIFAR-10 from the official *binary version* files, read without pickles.

The folder holds ``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin`` (each
record: 1 label byte, then 3,072 pixel bytes, 1,024 each of red, green and blue, rows of 32)
and ``batches.meta.txt`` (the ten class names, one a line), as unpacked from
``cifar-10-binary.tar.gz`` of https://www.cs.toronto.edu/~kriz/cifar.html.

Only the archive's MD5 (c32a1d4ab5d03f1284b67883e8d87530) is published, not one per file, so
each file is checked by what its format fixes: a whole number of records, at most the
official 10,000 (30,730,000 bytes), labels 0-9, and ten class names.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hybnn.artifacts import read_regular
from hybnn.data.dataset import Dataset
from hybnn.data.labels import LabelSpace
from hybnn.data.names import CIFAR10_PREFIX
from hybnn.errors import DataError

TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
RECORD_BYTES = 1 + 3 * 32 * 32
RECORDS_PER_FILE = 10_000  # in every official file
CLASSES = 10
MAX_META_BYTES = 4096


def is_cifar10_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding (some of) the binary-version files."""
    p = Path(path)
    return p.is_dir() and any((p / name).exists() for name in (*TRAIN_FILES, TEST_FILE))


def read_cifar10(folder: str | os.PathLike[str]) -> Dataset:
    """The 50,000 training and 10,000 test images of ``folder`` (official split kept)."""
    root = Path(folder)
    names = (*TRAIN_FILES, TEST_FILE, META_FILE)
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DataError(f"CIFAR-10 files missing in {root}: {', '.join(missing)}; put the "
                        "binary version there (cifar-10-binary.tar.gz from "
                        "https://www.cs.toronto.edu/~kriz/cifar.html, unpacked: its "
                        "cifar-10-batches-bin folder)")
    parts = [read_batch(root / n) for n in (*TRAIN_FILES, TEST_FILE)]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    test = np.zeros(len(y), bool)
    test[len(y) - len(parts[-1][1]):] = True
    class_names = read_meta(root / META_FILE)
    data = Dataset(f"{CIFAR10_PREFIX}{root}", x, y, CLASSES, test, {"split": "official train/test"})
    data.label_space = LabelSpace.identity(CLASSES, class_names)
    return data


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of one binary batch file."""
    raw = read_regular(path, "CIFAR-10 batch", RECORD_BYTES * RECORDS_PER_FILE, DataError)
    if not raw or len(raw) % RECORD_BYTES:
        raise DataError(f"{path}: {len(raw):,} bytes is not a whole number of CIFAR-10 "
                        f"records of {RECORD_BYTES:,} bytes (truncated or not a batch file; "
                        f"an official one holds {RECORDS_PER_FILE:,})")
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= CLASSES:
        raise DataError(f"{path}: label {int(labels.max())} in a CIFAR-10 file (0-9 expected); "
                        "is it CIFAR-100's?")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def read_meta(path: Path) -> list[str]:
    """The ten class names of ``batches.meta.txt``."""
    raw = read_regular(path, "CIFAR-10 class names", MAX_META_BYTES, DataError)
    names = [line.strip() for line in raw.decode("utf-8", "replace").splitlines()
             if line.strip()]
    if len(names) != CLASSES:
        raise DataError(f"{path}: {len(names)} class names, CIFAR-10 has {CLASSES}")
    return names
