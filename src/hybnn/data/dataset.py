"""The in-memory data set every source returns, with its validation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from hybnn.data.labels import LabelSpace
from hybnn.errors import DataError

MAX_CLASSES = 65536


@dataclass
class Dataset:
    """Images ``x`` as float32 (N, C, H, W) in [0, 1] and integer labels ``y`` (N,).

    ``num_classes`` <= 0 means "infer from the labels".

    ``test_mask`` marks the source's official test samples when it has them (MNIST,
    Fashion-MNIST); otherwise splits are drawn from a seed (see :mod:`hybnn.data.splits`).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int = 0
    test_mask: np.ndarray | None = None
    info: dict[str, object] = field(default_factory=dict)
    # What each label index means; left empty, indices are the labels, named by number.
    label_space: LabelSpace = field(default_factory=lambda: LabelSpace((), ()))

    def __post_init__(self) -> None:
        self.x, self.y = validate_arrays(self.x, self.y, self.name)
        if self.num_classes <= 0:
            self.num_classes = int(self.y.max()) + 1 if self.y.size else 0
        if self.y.size and int(self.y.max()) >= self.num_classes:
            raise DataError(f"{self.name}: label {int(self.y.max())} >= {self.num_classes} classes")
        if self.test_mask is not None and self.test_mask.shape != self.y.shape:
            raise DataError(f"{self.name}: test mask does not match the number of samples")
        if not len(self.label_space):
            self.label_space = LabelSpace.identity(self.num_classes)
        if len(self.label_space) != self.num_classes:
            raise DataError(f"{self.name}: {len(self.label_space)} class names for "
                            f"{self.num_classes} classes")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x.shape[2]), int(self.x.shape[3])

    def subset(self, index: np.ndarray) -> Dataset:
        mask = None if self.test_mask is None else self.test_mask[index]
        return Dataset(self.name, self.x[index], self.y[index], self.num_classes, mask, self.info,
                       self.label_space)


def model_images(images: object, input_shape: tuple[int, int, int],
                 name: str = "images") -> np.ndarray:
    """``images`` as a model of input ``(C, H, W)`` takes them: C-contiguous float32 NCHW in
    [0, 1]. Takes what ``hybnn predict`` takes: uint8 pixels 0-255 (scaled by 1/255) or
    floats in [0, 1], shaped (N, C, H, W), (N, H, W) or (H, W) for one-channel models, or
    (C, H, W) for one image."""
    x = np.asarray(images)
    c, h, w = input_shape
    if x.ndim == 2 and c == 1 and x.shape == (h, w):
        x = x[None, None]
    elif x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
        x = x[:, None]
    elif x.ndim == 3 and x.shape == (c, h, w):
        x = x[None]
    accepted = f"(N, {c}, {h}, {w})" + (f", (N, {h}, {w}) or ({h}, {w})" if c == 1 else
                                         f" or ({c}, {h}, {w})")
    if x.ndim != 4 or x.shape[1:] != (c, h, w):
        raise DataError(f"{name} must have shape {accepted}, got {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{name} must be uint8 pixels 0-255 or floats in [0, 1], got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):  # NaN fails both
        raise DataError(f"{name} of float type must lie in [0, 1] (no NaN); found "
                        f"{np.nanmin(x):.3g}..{np.nanmax(x):.3g}: pass uint8 pixels, or scale "
                        "the floats to [0, 1] first")
    return x


def validate_arrays(x: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, dtypes, ranges and NaN; return (float32 NCHW images in [0, 1], int64 labels).

    Accepted images: (N, H, W), (N, C, H, W), or (N, H*W) with a square H*W; uint8 in [0, 255]
    (scaled by 1/255) or floats already in [0, 1].
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{name}: labels must be one-dimensional, got shape {y.shape}")
    if x.ndim == 0:
        raise DataError(f"{name}: images must have 2-4 dimensions, got a scalar")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{name}: {x.shape[0]} images but {y.shape[0]} labels")
    if x.ndim == 2:
        side = round(x.shape[1] ** 0.5)
        if side * side != x.shape[1]:
            raise DataError(f"{name}: flat images of {x.shape[1]} pixels are not square")
        x = x.reshape(-1, 1, side, side)
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise DataError(f"{name}: images must have 2-4 dimensions, got shape {x.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or _integral_floats(y)):
        raise DataError(f"{name}: labels must be integers, got {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{name}: negative label {int(y.min())}")
    if y.size and y.max() >= MAX_CLASSES:
        raise DataError(f"{name}: label {int(y.max())} is out of range (at most "
                        f"{MAX_CLASSES} classes)")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{name}: images contain NaN or infinite values")
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise DataError(
                f"{name}: float images must lie in [0, 1] (found {x.min():.3g}..{x.max():.3g}); "
                "store uint8 pixels or scale them first"
            )
    else:
        raise DataError(f"{name}: images must be uint8 or float, got {x.dtype}")
    return np.ascontiguousarray(x), y


def _integral_floats(y: np.ndarray) -> bool:
    return (
        np.issubdtype(y.dtype, np.floating)
        and bool(np.isfinite(y).all())
        and bool((y == np.round(y)).all())
    )


def images_sha256(x: np.ndarray) -> str:
    """SHA-256 of an image array's dtype, shape and bytes: what an artifact records of the
    data it was trained on, so another data set under the same name is told apart."""
    x = np.ascontiguousarray(x)
    digest = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    digest.update(x.tobytes())
    return digest.hexdigest()
