"""User inputs to ``predict``: PNG/JPEG images (grayscale) or ``.npy``/``.npz`` arrays.

Each file is read within :mod:`hybnn.data.limits` (an image's size is checked before it
is decoded) and validated on its own: uint8 pixels and float arrays in [0, 1] may be mixed
in one call, as long as every input has the same channels, height and width. Images are
read at their full depth (a 16-bit PNG is scaled by 1/65535, not squashed to 8 bits): see
:func:`gray_pixels` for every Pillow mode. Only regular files are read (a FIFO is refused
at once).
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hybnn.artifacts import open_regular
from hybnn.data.dataset import validate_arrays
from hybnn.data.limits import MAX_IMAGE_PIXELS, MAX_INPUT_IMAGES, check_pixels
from hybnn.data.npfiles import read_npy, read_npz
from hybnn.errors import DataError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


def read_inputs(paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Images (N, C, H, W) float32 in [0, 1] and a name per image, from image/array files."""
    arrays: list[np.ndarray] = []
    names: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
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
    return read_gray_image(path)


# What Pillow's decoders raise for hostile bytes (a TIFF tag of the wrong type: TypeError).
_IMAGE_ERRORS = (ValueError, OSError, SyntaxError, TypeError, IndexError, KeyError, EOFError,
                 struct.error, ArithmeticError, RuntimeError)


def read_gray_image(path: Path) -> np.ndarray:
    """A grayscale image (H, W), its size checked before its pixels are decoded: uint8, or
    float32 in [0, 1] for deeper ones (:func:`gray_pixels`)."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow refuses bombs above twice this
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_regular(path, "input", DataError) as fh, Image.open(fh) as img:
                width, height = img.size
                check_pixels(width, height, str(path))
                return gray_pixels(img, str(path))
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image or array file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: image refused as a decompression bomb ({exc})") from None
    except _IMAGE_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None


def gray_pixels(img: PILImage, name: str) -> np.ndarray:
    """One grayscale plane of a Pillow image at its full depth: uint8 pixels, or float32 in
    [0, 1] for deeper ones (16-bit: value / 65535), so no mode is silently squashed.

    Colour (RGB, CMYK, YCbCr, HSV, LAB) becomes ITU-R 601-2 luma, a palette its colours'
    luma; alpha is dropped (the gray or colour values are read as stored, as for RGBA).
    Mode ``I`` (32-bit integers) is read as 16-bit values and refused above 65535; mode ``F``
    (floats) must already lie in [0, 1].
    """
    mode = img.mode
    if mode in ("1", "L", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV"):
        return np.asarray(img.convert("L"))
    if mode in ("LA", "La"):
        return np.asarray(img.convert("LA"))[..., 0]  # La: un-premultiplied first
    if mode == "LAB":  # Pillow converts LAB to RGB only
        return np.asarray(img.convert("RGB").convert("L"))
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.float32) / np.float32(65535)
    if mode == "I":
        pixels = np.asarray(img, dtype=np.int64)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise DataError(f"{name}: 32-bit integer image with values "
                            f"{pixels.min()}..{pixels.max()}; hybnn reads integer images of "
                            "at most 16 bits (0..65535)")
        return (pixels / 65535.0).astype(np.float32)
    if mode == "F":
        pixels = np.asarray(img, dtype=np.float32)
        if not np.isfinite(pixels).all() or (
                pixels.size and (pixels.min() < 0.0 or pixels.max() > 1.0)):
            raise DataError(f"{name}: floating-point image with values outside [0, 1] "
                            "(or NaN); save its pixels scaled to [0, 1]")
        return pixels
    raise DataError(f"{name}: image mode {mode!r} is not supported; save it as 8- or 16-bit "
                    "grayscale or RGB")


def _shape(x: np.ndarray) -> str:
    return "x".join(map(str, x.shape[1:]))
