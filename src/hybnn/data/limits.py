"""Documented caps on what hybnn reads, checked before anything is decoded or allocated.

Every size a file claims (an IDX header, a ``.npy`` header, a zip member's declared size,
a PNG's width and height, a model config's widths) is compared with these limits first, so
a small hostile file cannot make hybnn allocate gigabytes. They sit far above the data sets
hybnn is made for (full MNIST: 55 M pixels; the paper's head: 200 x 128 weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hybnn.errors import DataError

MAX_IMAGE_PIXELS = 4096 * 4096  # one PNG/JPEG image (Pillow's decompression-bomb limit too)
MAX_ARRAY_ELEMENTS = 2**27  # one array from a file: 134 M items, 512 MiB as float32
MAX_DECOMPRESSED_BYTES = 2**30  # one gzip stream or zip member, after decompression
MAX_INPUT_IMAGES = 100_000  # images in one `predict` call


def check_elements(shape: Sequence[int], itemsize: int, name: str) -> None:
    """Refuse an array of ``shape`` before it is read: too many items or too many bytes."""
    count = math.prod(int(d) for d in shape)  # Python ints: a crafted header cannot wrap
    if count > MAX_ARRAY_ELEMENTS:
        raise DataError(f"{name}: array of shape {tuple(shape)} has {count:,} items, above "
                        f"the limit of {MAX_ARRAY_ELEMENTS:,} (hybnn.data.limits)")
    check_bytes(count * itemsize, name)


def check_bytes(nbytes: int, name: str) -> None:
    if nbytes > MAX_DECOMPRESSED_BYTES:
        raise DataError(f"{name}: {nbytes:,} bytes of data, above the limit of "
                        f"{MAX_DECOMPRESSED_BYTES:,} (hybnn.data.limits)")


def check_pixels(width: int, height: int, name: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{name}: image of {width}x{height} pixels is above the limit of "
                        f"{MAX_IMAGE_PIXELS:,} pixels (hybnn.data.limits)")

# Artifact configs (meta.json): every number (widths, image sides, bits, classes) and the
# length of every list (hidden widths), checked before a module is built.
MAX_CONFIG_VALUE = 65536
MAX_CONFIG_LIST = 64
