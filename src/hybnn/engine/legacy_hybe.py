"""Reader of version-1 engine files: the home-made ``.hybe`` container (read only).

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic b"HYBNNENG"
    8       4     format version (uint32) = 1
    12      4     header length H (uint32)
    16      8     payload length P (uint64)
    24      32    SHA-256 of bytes [56, end): header, padding and payload
    56      H     header: UTF-8 JSON object
    ...           zero padding to a multiple of 64
    ...     P     payload: arrays, each at a 64-byte aligned offset

The header's ``"arrays"`` maps each array name to ``{"offset", "nbytes", "dtype", "shape"}``
(offset relative to the payload). :func:`decode` checks the magic, the version, the exact file
size, the checksum and every array's bounds, and returns the header in version 2's form.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from typing import Any

import numpy as np

from hybnn.errors import ArtifactError

MAGIC = b"HYBNNENG"
VERSION = 1
PREAMBLE = struct.Struct("<8sIIQ32s")
ALIGN = 64
DTYPES: dict[str, np.dtype[Any]] = {
    "<u8": np.dtype("<u8"),
    "<i4": np.dtype("<i4"),
    "<f4": np.dtype("<f4"),
    "|i1": np.dtype("i1"),
}
MAX_HEADER = 1 << 24


def _pad(n: int) -> int:
    return -n % ALIGN


def decode(data: bytes, where: str) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """Validate version-1 file bytes: (header, arrays, SHA-256 hex), or ArtifactError."""
    if len(data) < PREAMBLE.size:
        raise ArtifactError(f"{where} is truncated ({len(data)} bytes)")
    magic, version, hlen, plen, digest = PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise ArtifactError(f"{where} is not a hybnn engine file (bad magic)")
    if version != VERSION:
        raise ArtifactError(f"{where}: .hybe container version {version} is not supported")
    if hlen > MAX_HEADER:
        raise ArtifactError(f"{where} has an implausible header length {hlen}")
    start = PREAMBLE.size + hlen + _pad(PREAMBLE.size + hlen)
    expected = start + plen
    if len(data) < expected:
        raise ArtifactError(f"{where} is truncated: {len(data)} bytes, expected {expected}")
    if len(data) > expected:
        raise ArtifactError(f"{where} has {len(data) - expected} unexpected trailing bytes")
    if hashlib.sha256(memoryview(data)[PREAMBLE.size :]).digest() != digest:
        raise ArtifactError(f"{where} is corrupt: SHA-256 checksum mismatch")
    try:
        header = json.loads(data[PREAMBLE.size : PREAMBLE.size + hlen].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{where} has an unreadable header: {exc}") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{where}: header must be a JSON object")
    if header.get("format") != "hybnn-engine":
        raise ArtifactError(f"{where}: header does not describe a hybnn engine model")
    arrays = _arrays(header.pop("arrays", None), memoryview(data)[start:], where)
    header.update(kind="engine", format_version=VERSION)
    return header, arrays, digest.hex()


def _arrays(table: Any, payload: memoryview, where: str) -> dict[str, np.ndarray]:
    if not isinstance(table, dict):
        raise ArtifactError(f"{where}: header has no array table")
    out = {}
    for name, spec in table.items():
        try:
            dt = DTYPES[spec["dtype"]]
            shape = tuple(_size(s) for s in spec["shape"])
            offset, nbytes = _size(spec["offset"]), _size(spec["nbytes"])
            if offset % ALIGN:
                raise ValueError("misaligned")
            if nbytes != math.prod(shape) * dt.itemsize:  # Python ints: no overflow
                raise ValueError("size does not match shape")
            if offset + nbytes > len(payload):
                raise ValueError("out of bounds")
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: bad array entry {name!r} ({exc})") from None
        out[name] = np.frombuffer(
            payload, dtype=dt, count=nbytes // dt.itemsize, offset=offset
        ).reshape(shape)
    return out


def _size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a size")
    return value
