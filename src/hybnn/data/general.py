"""The general data: every 28x28 image source available offline, for a task-independent encoder.

The paper's encoder is trained once on a large general data set and reused for every task;
hybnn's shipped ``general`` encoder is pretrained on the training splits of
:data:`GENERAL_SOURCES`, labels unused. ``digits-28`` is scikit-learn's 8x8 digits resized
to 28x28 (:func:`digits_28`), so the three sources share one image size.
"""

from __future__ import annotations

import numpy as np

from hybnn.data.dataset import Dataset, images_sha256, validate_arrays
from hybnn.data.labels import DIGIT_NAMES, LabelSpace
from hybnn.data.sources import load_source
from hybnn.data.splits import train_test
from hybnn.errors import DataError

GENERAL_SOURCES = ("fashion-mnist", "mnist-5k", "digits-28")
IMAGE_SIZE = 28


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Images (N, H, W) -> (N, size, size) float32 by bilinear interpolation with the corner
    pixels kept in place (``align_corners``): exact and deterministic, a mix of neighbours,
    so values in [0, 1] stay in [0, 1]."""
    if images.ndim != 3:
        raise DataError(f"resize needs images (N, H, W), got shape {images.shape}")

    def weights(n: int) -> np.ndarray:  # (size, n): row i mixes the two source pixels at i
        pos = np.linspace(0.0, n - 1, size)
        low = np.minimum(np.floor(pos).astype(int), n - 2) if n > 1 else np.zeros(size, int)
        frac = pos - low
        w = np.zeros((size, n))
        w[np.arange(size), low] += 1 - frac
        if n > 1:
            w[np.arange(size), low + 1] += frac
        return w

    rows, cols = weights(images.shape[1]), weights(images.shape[2])
    out = np.einsum("ih,nhw,jw->nij", rows, images.astype(np.float64), cols)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def digits_28() -> Dataset:
    """scikit-learn's 1,797 digits, their 17 levels (0-16) scaled to [0, 1] and resized
    from 8x8 to 28x28 (:func:`resize_bilinear`)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = resize_bilinear(d.images / 16.0, IMAGE_SIZE)
    data = Dataset("digits-28", x, d.target.astype(np.int64), 10)
    data.label_space = LabelSpace.identity(10, DIGIT_NAMES)
    return data


def general_source(name: str) -> Dataset:
    """One of :data:`GENERAL_SOURCES` by name."""
    if name not in GENERAL_SOURCES:
        raise DataError(f"unknown general source {name!r}: one of {', '.join(GENERAL_SOURCES)}")
    return load_source(name)


def source_splits(name: str) -> tuple[Dataset, Dataset]:
    """A general source's (train, test) split: the official one where there is one, else
    the seeded stratified split every hybnn command uses (:func:`train_test`)."""
    return train_test(general_source(name))


def training_images(name: str) -> np.ndarray:
    """A general source's training images as float32 (N, 1, 28, 28) in [0, 1]."""
    train = source_splits(name)[0]
    return validate_arrays(train.x, train.y, name)[0]


def general_images(sources: tuple[str, ...] | list[str] = GENERAL_SOURCES
                   ) -> tuple[np.ndarray, list[dict[str, object]]]:
    """The training images of ``sources``, concatenated in that order, and a record of each:
    its name, number of images, shape and dtype and content hash (:func:`images_sha256`)."""
    parts, records = [], []
    for name in sources:
        x = training_images(name)
        parts.append(x)
        records.append({"source": name, "images": len(x), "shape": list(x.shape),
                        "dtype": str(x.dtype), "sha256": images_sha256(x)})
    return np.concatenate(parts), records
