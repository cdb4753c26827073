"""Reader for the IDX format of MNIST-like data sets (raw or gzip-compressed).

Layout: two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian
uint32 sizes, then the data in row-major big-endian order. Everything is validated: magic,
type, dimension count, sizes within :mod:`hybnn.data.limits`, and that the payload holds
exactly prod(sizes) items.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np

from hybnn.artifacts import open_regular
from hybnn.data.limits import check_elements
from hybnn.data.npfiles import Stream
from hybnn.errors import DataError

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX ``raw`` bytes into an array (native byte order)."""
    return _read_idx_stream(io.BytesIO(raw), name)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file; gzip is detected from its magic bytes, not the file name.

    The header is read first and its sizes checked against :mod:`hybnn.data.limits`; then
    exactly the bytes it promises are read (plus one, to detect trailing data), so a small
    gzip stream that inflates to gigabytes is refused after at most the promised size.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise DataError(f"IDX file not found: {path}")
    try:
        with open_regular(path, "IDX file", DataError) as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=raw) as fh:
                    return _read_idx_stream(fh, str(path))  # CRC checked at the end
            return _read_idx_stream(raw, str(path))
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def _read_idx_stream(fh: Stream, name: str) -> np.ndarray:
    head = fh.read(4)
    if len(head) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(head)} bytes)")
    if head[0] != 0 or head[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic number)")
    type_code, ndim = head[2], head[3]
    if type_code not in IDX_TYPES:
        raise DataError(f"{name}: unknown IDX data type 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{name}: IDX file declares zero dimensions")
    sizes = fh.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{name}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(sizes, dtype=">u4"))
    dtype = IDX_TYPES[type_code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: a crafted header cannot overflow
    check_elements(dims, dtype.itemsize, name)
    payload = fh.read(expected + 1)  # one byte more: trailing data is an error too
    actual = len(payload)
    if actual != expected:
        state = "truncated" if actual < expected else "has trailing bytes"
        found = f"found {actual}" if actual < expected else "found more"
        raise DataError(f"{name}: IDX file {state} (dims {dims} need {expected} data bytes, "
                        f"{found})")
    data = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)
