"""The engine file: one safetensors file with a JSON header and a SHA-256 checksum, no pickle.

Like every hybnn artifact the arrays are safetensors tensors (dtypes ``<u8``, ``<i4``,
``<f4``, ``|i1``) and the description is JSON. The safetensors metadata holds two strings:

* ``"hybnn"``: the header, a JSON object with ``kind: "engine"``, ``format_version: 2``, the
  input, the layers (they name their arrays) and the user's metadata;
* ``"fingerprint"``: :func:`fingerprint` of the header string and the arrays.

The fingerprint is a checksum: it detects accidental corruption, it does not say who wrote the
file (anyone can compute it). Readers therefore validate everything else as if it were hostile.
The format is recognised from the content, never from the file name: version-1 files (the
``.hybe`` container, :mod:`hybnn.engine.legacy_hybe`) are still read. Any failure is an
:class:`~hybnn.errors.ArtifactError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from hybnn.artifacts import atomic_write
from hybnn.engine import legacy_hybe
from hybnn.errors import ArtifactError

KIND = "engine"
FORMAT_VERSION = 2
DTYPES = (np.dtype("<u8"), np.dtype("<i4"), np.dtype("<f4"), np.dtype("i1"))
MAX_HEADER = 1 << 24  # bytes of the safetensors JSON header
MAX_FILE_BYTES = 1 << 30


def fingerprint(header: str, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of the header string, then each array by name: name, dtype, shape, bytes.

    Every part is length-prefixed, so no two different contents hash the same input.
    """
    digest = hashlib.sha256()
    parts: list[bytes] = [header.encode("utf-8")]
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        parts += [name.encode("utf-8"), a.dtype.str.encode(), json.dumps(a.shape).encode()]
        parts.append(a.tobytes())
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def encode(
    header: dict[str, Any], arrays: dict[str, np.ndarray], dtypes: tuple[np.dtype, ...] = DTYPES
) -> bytes:
    """Serialize ``header`` (a JSON object) and the named arrays into file bytes."""
    flat = {}
    for name, arr in arrays.items():
        dt = np.dtype(arr.dtype).newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        if dt not in dtypes:
            raise ValueError(f"array {name!r} has unsupported dtype {arr.dtype}")
        flat[name] = np.ascontiguousarray(arr, dtype=dt)
    text = json.dumps(header)
    return st_save(flat, metadata={"hybnn": text, "fingerprint": fingerprint(text, flat)})


def write(
    path: str | os.PathLike[str], header: dict[str, Any], arrays: dict[str, np.ndarray]
) -> Path:
    """Write an engine file atomically (readers never see half a file)."""
    data = encode(header, arrays)
    return atomic_write(path, lambda p: p.write_bytes(data))


def _json(text: str | bytes, what: str, where: str) -> Any:
    try:
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{where} has an unreadable {what}: {exc}") from None


def open_container(data: bytes, where: str, noun: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(safetensors metadata, hybnn header) of file bytes; kind, version and arrays unchecked.

    ``noun`` names what the caller reads ("engine file", "bundle") in the errors.
    """
    if len(data) < 8:
        raise ArtifactError(f"{where} is not a hybnn {noun} ({len(data)} bytes)")
    size = int.from_bytes(data[:8], "little")
    if size > MAX_HEADER or data[8:9] != b"{":
        raise ArtifactError(f"{where} is not a hybnn {noun} (neither safetensors nor .hybe)")
    if 8 + size > len(data):
        raise ArtifactError(f"{where} is truncated: its header needs {8 + size} bytes")
    table = _json(data[8 : 8 + size], "safetensors header", where)
    meta = table.get("__metadata__") if isinstance(table, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("hybnn"), str):
        raise ArtifactError(f"{where} is a safetensors file but not a hybnn {noun}")
    header = _json(meta["hybnn"], "header", where)
    if not isinstance(header, dict):
        raise ArtifactError(f"{where} has a header that is not a JSON object")
    return meta, header


def check_version(header: dict[str, Any], where: str, current: int) -> None:
    """Refuse a ``format_version`` other than ``current`` (newer ones: upgrade hybnn)."""
    version = header.get("format_version")
    if isinstance(version, int) and version > current:
        raise ArtifactError(
            f"{where} has format version {version}, newer than this hybnn reads "
            f"({current}); upgrade hybnn"
        )
    if type(version) is not int or version != current:
        raise ArtifactError(f"{where} has unknown format version {version!r}")


def container_arrays(
    data: bytes, meta: dict[str, Any], where: str, dtypes: tuple[np.dtype, ...] = DTYPES
) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of file bytes and their checksum, verified against ``meta``."""
    try:
        arrays = st_load(data)
    except (SafetensorError, ValueError, TypeError, KeyError) as exc:
        raise ArtifactError(f"{where} has unreadable arrays: {exc}") from None
    if meta.get("fingerprint") != fingerprint(meta["hybnn"], arrays):
        raise ArtifactError(f"{where} is corrupt: SHA-256 checksum mismatch")
    for name, arr in arrays.items():
        if arr.dtype not in dtypes:
            raise ArtifactError(f"{where}: array {name!r} has unsupported dtype {arr.dtype}")
    return arrays, str(meta["fingerprint"])


def decode(
    data: bytes, where: str = "engine file"
) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """Validate file bytes; returns (header, arrays, fingerprint). Raises ArtifactError."""
    if data[: len(legacy_hybe.MAGIC)] == legacy_hybe.MAGIC:
        return legacy_hybe.decode(data, where)
    meta, header = open_container(data, where, "engine file")
    if header.get("kind") != KIND:
        raise ArtifactError(f"{where} does not describe a hybnn engine model")
    check_version(header, where, FORMAT_VERSION)
    arrays, digest = container_arrays(data, meta, where)
    return header, arrays, digest


def read_bytes(path: str | os.PathLike[str], noun: str = "engine file") -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES (FIFOs, devices refused)."""
    path = Path(path)
    try:
        # O_NONBLOCK: a FIFO given as the model must not hang the reader
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ArtifactError(f"{noun} {path} is not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise ArtifactError(
                    f"{noun} {path} has {info.st_size} bytes, more than the "
                    f"{MAX_FILE_BYTES} this hybnn reads"
                )
            data = fh.read(info.st_size + 1)  # one byte more: a file that grows is refused
    except OSError as exc:
        raise ArtifactError(f"cannot read {noun} {path}: {exc.strerror or exc}") from None
    if len(data) > info.st_size:
        raise ArtifactError(f"{noun} {path} changed while it was read")
    return data


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """Read and validate an engine file (at most MAX_FILE_BYTES, a regular file)."""
    return decode(read_bytes(path), str(Path(path)))
