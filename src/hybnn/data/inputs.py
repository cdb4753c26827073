"""User inputs to ``predict``: PNG/JPEG images (grayscale) or ``.npy``/``.npz`` arrays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybnn.data.dataset import validate_arrays
from hybnn.errors import DataError


def read_inputs(paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Images from PNG/JPEG files (grayscale) or arrays from .npy/.npz (key ``x``)."""
    arrays, names = [], []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise DataError(f"input not found: {path}")
        suffix = path.suffix.lower()
        try:
            if suffix == ".npy":
                arr = np.load(path, allow_pickle=False)
            elif suffix == ".npz":
                with np.load(path, allow_pickle=False) as npz:
                    if "x" not in npz.files:
                        raise DataError(f"{path}: .npz input needs an array named x")
                    arr = npz["x"]
            else:
                from PIL import Image, UnidentifiedImageError

                try:
                    with Image.open(path) as img:
                        arr = np.asarray(img.convert("L"))[None]
                except UnidentifiedImageError:
                    raise DataError(f"{path}: not an image or array file") from None
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: cannot read input ({exc})") from None
        if arr.ndim == 2 and suffix != ".npy":
            arr = arr[None]
        arrays.append(arr)
        names += [str(path)] if len(arr) == 1 else [f"{path}[{i}]" for i in range(len(arr))]
    x = np.concatenate([a.reshape(len(a), *a.shape[1:]) for a in arrays]) if arrays else None
    if x is None:
        raise DataError("no inputs given")
    x, _ = validate_arrays(x, np.zeros(len(x), dtype=np.int64), "input")
    return x, names
