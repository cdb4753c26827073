"""A forger's tools for the engine tests: both containers' writers, and re-stamping a file.

The checksum of an engine file is no signature: anyone can recompute it. These helpers do
what an attacker would, so tests can show that a forged file with a valid checksum is still
refused with a clear error, never a crash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load

from hybnn.engine import format as fmt
from hybnn.engine import legacy_hybe as v1


def encode_v1(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """A version-1 ``.hybe`` file: the writer hybnn used before safetensors (kept for tests)."""
    table: dict[str, dict[str, Any]] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, arr in arrays.items():
        dt = np.dtype(arr.dtype).newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        data = np.ascontiguousarray(arr, dtype=dt).tobytes()
        table[name] = {"offset": offset, "nbytes": len(data), "dtype": dt.str,
                       "shape": list(arr.shape)}
        chunks += [data, b"\0" * v1._pad(len(data))]
        offset += len(data) + v1._pad(len(data))
    v1_header = {k: v for k, v in header.items() if k not in ("kind", "format_version")}
    head = json.dumps({"format": "hybnn-engine", **v1_header, "arrays": table}).encode()
    body = head + b"\0" * v1._pad(v1.PREAMBLE.size + len(head)) + b"".join(chunks)
    digest = hashlib.sha256(body).digest()
    return v1.PREAMBLE.pack(v1.MAGIC, 1, len(head), offset, digest) + body


def encode(header: dict[str, Any], arrays: dict[str, np.ndarray], legacy: bool = False) -> bytes:
    """A file of either container holding exactly ``header`` and ``arrays``, validly stamped."""
    return encode_v1(header, arrays) if legacy else fmt.encode(header, arrays)


def restamp(data: bytes) -> bytes:
    """Recompute the checksum of (mutated) file bytes in place; unparseable bytes stay as they are.

    Nothing but the checksum changes, so every other byte of a mutation reaches the validation.
    """
    if data[:8] == v1.MAGIC:
        if len(data) < v1.PREAMBLE.size:
            return data
        return data[:24] + hashlib.sha256(data[v1.PREAMBLE.size :]).digest() + data[56:]
    try:
        size = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + size])["__metadata__"]
        old, new = meta["fingerprint"], fmt.fingerprint(meta["hybnn"], st_load(data))
    except Exception:  # the loader must refuse whatever this cannot parse
        return data
    raw = data[8 : 8 + size]
    if not isinstance(old, str) or len(old) != len(new) or raw.count(old.encode()) != 1:
        return data
    return data[:8] + raw.replace(old.encode(), new.encode()) + data[8 + size :]


def contents(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, arrays) of valid file bytes, as plain copies a test may edit."""
    header, arrays, _ = fmt.decode(data)
    return json.loads(json.dumps(header)), {k: np.array(v) for k, v in arrays.items()}
