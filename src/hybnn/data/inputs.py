"""User inputs to ``predict``: PNG/JPEG images (grayscale) or ``.npy``/``.npz`` arrays.

Each file is read within :mod:`hybnn.data.limits` (an image's size is checked before it
is decoded) and validated on its own: uint8 pixels and float arrays in [0, 1] may be mixed
in one call, as long as every input has the same channels, height and width.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybnn.data.dataset import validate_arrays
from hybnn.data.limits import MAX_IMAGE_PIXELS, MAX_INPUT_IMAGES, check_pixels
from hybnn.data.npfiles import read_npy, read_npz
from hybnn.errors import DataError


def read_inputs(paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Images (N, C, H, W) float32 in [0, 1] and a name per image, from image/array files."""
    arrays: list[np.ndarray] = []
    names: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise DataError(f"input not found: {path}")
        arr = _read_one(path)
        if arr.ndim < 2:
            raise DataError(f"{path}: an input must have 2-4 dimensions, got shape {arr.shape}")
        if arr.ndim == 2 and path.suffix.lower() != ".npy":
            arr = arr[None]  # one (H, W) image; a 2-D .npy holds flat images (N, H*W)
        if len(names) + len(arr) > MAX_INPUT_IMAGES:
            raise DataError(f"more than {MAX_INPUT_IMAGES:,} images in one call "
                            "(hybnn.data.limits); split the inputs")
        x, _ = validate_arrays(arr, np.zeros(len(arr), dtype=np.int64), str(path))
        if arrays and x.shape[1:] != arrays[0].shape[1:]:
            raise DataError(f"inputs differ in shape: {names[0]} is {_shape(arrays[0])}, "
                            f"{path} is {_shape(x)}")
        arrays.append(x)
        names += [str(path)] if len(x) == 1 else [f"{path}[{i}]" for i in range(len(x))]
    if not names:
        raise DataError("no images to classify: the inputs hold zero images")
    return np.concatenate(arrays), names


def _read_one(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return read_npy(path)
    if suffix == ".npz":
        return read_npz(path, ["x"])["x"]
    return _read_image(path)


def _read_image(path: Path) -> np.ndarray:
    """A grayscale image, its size checked before its pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow refuses bombs above twice this
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                check_pixels(width, height, str(path))
                return np.asarray(img.convert("L"))
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image or array file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: image refused as a decompression bomb ({exc})") from None
    except (ValueError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None


def _shape(x: np.ndarray) -> str:
    return "x".join(map(str, x.shape[1:]))
