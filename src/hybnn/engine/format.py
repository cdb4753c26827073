"""The engine file: one safetensors file with a JSON header and a SHA-256 checksum, no pickle.

Like every hybnn artifact the arrays are safetensors tensors (dtypes ``<u8``, ``<i4``,
``<f4``, ``|i1``) and the description is JSON. The safetensors metadata holds two strings:

* ``"hybnn"``: the header, a JSON object with ``kind: "engine"``, ``format_version: 2``, the
  input, the layers (they name their arrays) and the user's metadata; or ``format_version: 3``
  and a ``"graph"`` of nodes instead of the layers (:mod:`hybnn.engine.graph`);
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
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from hybnn.artifacts import atomic_write, open_regular, read_regular
from hybnn.engine import legacy_hybe
from hybnn.errors import ArtifactError

KIND = "engine"
EXPORT_KINDS = (KIND, "bundle")  # what `hybnn export` writes (a bundle: hybnn.bundle.format)
FORMAT_VERSION = 2  # a chain of binary layers
GRAPH_VERSION = 3  # a graph of binary and float32 nodes (hybnn.engine.graph)
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
    """Write an engine file atomically (readers never see half a file); an existing file
    is replaced only if it is an earlier export (:func:`require_replaceable`)."""
    data = encode(header, arrays)
    require_replaceable(path, "engine file")
    return atomic_write(path, lambda p: p.write_bytes(data))


def require_replaceable(path: str | os.PathLike[str], noun: str) -> None:
    """Refuse to write over ``path`` unless it is absent or a file ``hybnn export`` wrote
    (an engine file of either version, or a bundle): a code store, an image or any other
    file is never replaced by an export."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    found = _declared_kind(path)
    if found not in EXPORT_KINDS:
        raise ArtifactError(f"refusing to overwrite {path} with a {noun}: it is {found}, not "
                            "a hybnn engine file or bundle (remove it or choose another --out)")


def _declared_kind(path: Path) -> str:
    """The ``kind`` a container file declares, or a phrase saying what else it is."""
    if path.is_dir():
        return "a directory"
    try:
        with open_regular(path, "file") as fh:
            head = fh.read(8)
            if head == legacy_hybe.MAGIC:
                return KIND
            size = int.from_bytes(head, "little") if len(head) == 8 else 0
            data = head + fh.read(min(size, MAX_HEADER))
        _, header = open_container(data, str(path), "artifact")
    except (ArtifactError, OSError):
        return "not a hybnn artifact"
    kind = header.get("kind")
    return kind if kind in EXPORT_KINDS else f"a hybnn {str(kind)[:40]!r} file"


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


def check_version(
    header: dict[str, Any], where: str, current: int, older: tuple[int, ...] = ()
) -> None:
    """Refuse a ``format_version`` other than ``current`` or one of ``older`` (newer ones:
    upgrade hybnn)."""
    version = header.get("format_version")
    if isinstance(version, int) and version > current:
        raise ArtifactError(
            f"{where} has format version {version}, newer than this hybnn reads "
            f"({current}); upgrade hybnn"
        )
    if type(version) is not int or version not in (current, *older):
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
    check_version(header, where, GRAPH_VERSION, (FORMAT_VERSION,))
    arrays, digest = container_arrays(data, meta, where)
    return header, arrays, digest


def read_bytes(path: str | os.PathLike[str], noun: str = "engine file") -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES (FIFOs, devices refused)."""
    return read_regular(path, noun, MAX_FILE_BYTES)


def read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """Read and validate an engine file (at most MAX_FILE_BYTES, a regular file)."""
    return decode(read_bytes(path), str(Path(path)))
