"""The engine file: one self-checking file, no pickle.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic b"HYBNNENG"
    8       4     format version (uint32, currently 1)
    12      4     header length H (uint32)
    16      8     payload length P (uint64)
    24      32    SHA-256 of bytes [56, end): header, padding and payload
    56      H     header: UTF-8 JSON object
    ...           zero padding to a multiple of 64
    ...     P     payload: arrays, each at a 64-byte aligned offset

The header's ``"arrays"`` maps each array name to ``{"offset", "nbytes", "dtype", "shape"}``
(offset relative to the payload; dtype one of ``<u8``, ``<i4``, ``<f4``, ``|i1``); everything
else in the header (input, layers, metadata) refers to arrays by name. A reader checks the
magic, the version, the exact file size, the checksum and every array's bounds before using
anything; any failure is an :class:`~hybnn.errors.ArtifactError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from hybnn.artifacts import atomic_write
from hybnn.errors import ArtifactError

MAGIC = b"HYBNNENG"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct("<8sIIQ32s")
ALIGN = 64
DTYPES = {
    "<u8": np.dtype("<u8"),
    "<i4": np.dtype("<i4"),
    "<f4": np.dtype("<f4"),
    "|i1": np.dtype("i1"),
}
MAX_HEADER = 1 << 24


def _pad(n: int) -> int:
    return -n % ALIGN


def encode(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialize ``header`` (without "arrays") and the named arrays into file bytes."""
    table: dict[str, dict[str, Any]] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, arr in arrays.items():
        dt = np.dtype(arr.dtype).newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        key = dt.str
        if key not in DTYPES:
            raise ValueError(f"array {name!r} has unsupported dtype {arr.dtype}")
        data = np.ascontiguousarray(arr, dtype=dt).tobytes()
        table[name] = {
            "offset": offset,
            "nbytes": len(data),
            "dtype": key,
            "shape": list(arr.shape),
        }
        chunks += [data, b"\0" * _pad(len(data))]
        offset += len(data) + _pad(len(data))
    head = json.dumps({**header, "arrays": table}, sort_keys=False).encode("utf-8")
    body = head + b"\0" * _pad(PREAMBLE.size + len(head)) + b"".join(chunks)
    digest = hashlib.sha256(body).digest()
    return PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(head), offset, digest) + body


def write(
    path: str | os.PathLike[str], header: dict[str, Any], arrays: dict[str, np.ndarray]
) -> Path:
    """Write an engine file atomically (readers never see half a file)."""
    data = encode(header, arrays)
    return atomic_write(path, lambda p: p.write_bytes(data))


def decode(
    data: bytes, where: str = "engine file"
) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """Validate file bytes; returns (header, arrays, sha256 hex). Raises ArtifactError."""
    if len(data) < PREAMBLE.size:
        if data[: len(MAGIC)] != MAGIC[: len(data)]:
            raise ArtifactError(f"{where} is not a hybnn engine file (bad magic)")
        raise ArtifactError(f"{where} is truncated ({len(data)} bytes)")
    magic, version, hlen, plen, digest = PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise ArtifactError(f"{where} is not a hybnn engine file (bad magic)")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{where} has format version {version}, newer than this hybnn reads "
            f"({FORMAT_VERSION}); upgrade hybnn"
        )
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{where} has unknown format version {version}")
    if hlen > MAX_HEADER:
        raise ArtifactError(f"{where} has an implausible header length {hlen}")
    start = PREAMBLE.size + hlen + _pad(PREAMBLE.size + hlen)
    expected = start + plen
    if len(data) < expected:
        raise ArtifactError(f"{where} is truncated: {len(data)} bytes, expected {expected}")
    if len(data) > expected:
        raise ArtifactError(f"{where} has {len(data) - expected} unexpected trailing bytes")
    body = memoryview(data)[PREAMBLE.size :]
    if hashlib.sha256(body).digest() != digest:
        raise ArtifactError(f"{where} is corrupt: SHA-256 checksum mismatch")
    try:
        header = json.loads(bytes(data[PREAMBLE.size : PREAMBLE.size + hlen]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{where} has an unreadable header: {exc}") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{where}: header must be a JSON object")
    arrays = _arrays(header.get("arrays"), memoryview(data)[start:], where)
    return header, arrays, digest.hex()


def _arrays(table: Any, payload: memoryview, where: str) -> dict[str, np.ndarray]:
    if not isinstance(table, dict):
        raise ArtifactError(f"{where}: header has no array table")
    out = {}
    for name, spec in table.items():
        try:
            dt = DTYPES[spec["dtype"]]
            shape = tuple(int(s) for s in spec["shape"])
            offset, nbytes = int(spec["offset"]), int(spec["nbytes"])
            if any(s < 0 for s in shape) or offset < 0 or offset % ALIGN:
                raise ValueError("negative or misaligned")
            if nbytes != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
                raise ValueError("size does not match shape")
            if offset + nbytes > len(payload):
                raise ValueError("out of bounds")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ArtifactError(f"{where}: bad array entry {name!r} ({exc})") from None
        out[name] = np.frombuffer(
            payload, dtype=dt, count=nbytes // dt.itemsize, offset=offset
        ).reshape(shape)
    return out


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """Read and validate an engine file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read engine file {path}: {exc.strerror or exc}") from None
    return decode(data, str(path))
