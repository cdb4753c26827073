"""Bit-packed binary codes on disk: 200 bits -> 25 bytes per sample.

A code store is one safetensors file holding ``codes`` (uint8, N x ceil(bits/8), numpy
``packbits`` order: big-endian within each byte, bit 1 = code +1, bit 0 = code -1, tail bits
zero) and ``labels`` (int64), with a JSON header that records the encoder's fingerprint,
the number of bits, the number of classes, the source, the task and ``payload_sha256``, the
SHA-256 of the codes and labels (:func:`payload_sha256`), verified on load. A store is only
ever read into the model that its encoder fingerprint says it belongs to.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from hybnn.artifacts import FORMAT_VERSION, atomic_write
from hybnn.errors import ArtifactError, FingerprintMismatch

CODES_KIND = "codes"
CHECKSUM_KEY = "payload_sha256"
_HEADER_KEYS = ("kind", "format_version", "num_bits", "encoder_fingerprint", CHECKSUM_KEY)


def pack_code_bits(bits: np.ndarray) -> np.ndarray:
    """(N, B) bool/{0,1} -> (N, ceil(B/8)) uint8, big-endian within each byte."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=1)


def unpack_code_bits(packed: np.ndarray, num_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_code_bits`: (N, ceil(B/8)) uint8 -> (N, B) uint8 in {0, 1}."""
    return np.unpackbits(packed, axis=1, count=num_bits)


def bits_to_signs(bits: np.ndarray) -> torch.Tensor:
    """{0, 1} bits -> ±1 float32 tensor (bit 1 = +1), the BNN head's input."""
    return torch.from_numpy(bits.astype(np.float32) * 2.0 - 1.0)


def payload_sha256(packed: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of a store's payload: the shapes, the packed codes, the labels as int64 LE."""
    digest = hashlib.sha256(f"{packed.shape} {labels.shape}\n".encode())
    digest.update(np.ascontiguousarray(packed, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return digest.hexdigest()


@dataclass
class CodeStore:
    packed: np.ndarray
    labels: np.ndarray
    num_bits: int
    encoder_fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        want = (self.num_bits + 7) // 8
        if (self.num_bits < 1 or self.packed.dtype != np.uint8 or self.packed.ndim != 2
                or self.packed.shape[1] != want):
            raise ArtifactError(
                f"packed codes must be uint8 of shape (N, {want}) for {self.num_bits} bits, "
                f"got {self.packed.dtype} {self.packed.shape}"
            )
        if self.labels.shape != (self.packed.shape[0],):
            raise ArtifactError("code store: labels do not match the number of codes")
        if not np.issubdtype(self.labels.dtype, np.integer) or (
                self.labels.size and self.labels.min() < 0):
            raise ArtifactError("code store: labels must be non-negative integers")
        classes = self.meta.get("num_classes")
        if classes is not None:
            if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
                raise ArtifactError(f"code store: num_classes must be a positive integer, "
                                    f"got {classes!r}")
            if self.labels.size and int(self.labels.max()) >= classes:
                raise ArtifactError(f"code store: label {int(self.labels.max())} is not one of "
                                    f"its {classes} classes")

    @property
    def num_classes(self) -> int:
        """The classes of the store's task: recorded at extraction, else max label + 1."""
        recorded = self.meta.get("num_classes")
        if isinstance(recorded, int):
            return recorded
        return int(self.labels.max()) + 1 if self.labels.size else 0

    def __len__(self) -> int:
        return int(self.packed.shape[0])

    @property
    def bytes_per_sample(self) -> int:
        return int(self.packed.shape[1])

    def bits(self) -> np.ndarray:
        return unpack_code_bits(self.packed, self.num_bits)

    def signs(self) -> torch.Tensor:
        """Codes as a ±1 float tensor (N, num_bits)."""
        return bits_to_signs(self.bits())

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.signs(), torch.from_numpy(self.labels.astype(np.int64))

    def require_encoder(self, fingerprint: str, what: str = "this model") -> None:
        if fingerprint != self.encoder_fingerprint:
            raise FingerprintMismatch(
                f"code store was made by encoder {self.encoder_fingerprint[:12]}, but "
                f"{what} expects encoder {fingerprint[:12]}; re-extract codes with that encoder"
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        header = {
            "kind": CODES_KIND,
            "format_version": FORMAT_VERSION,
            "num_bits": self.num_bits,
            "encoder_fingerprint": self.encoder_fingerprint,
            **self.meta,
            CHECKSUM_KEY: payload_sha256(self.packed, self.labels),
        }
        arrays = {"codes": np.ascontiguousarray(self.packed),
                  "labels": self.labels.astype(np.int64)}
        return atomic_write(path, lambda p: save_file(arrays, str(p),
                                                      metadata={"hybnn": json.dumps(header)}))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CodeStore:
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"code store not found: {path}")
        try:
            arrays = load_file(str(path))
            with safe_open(str(path), framework="numpy") as fh:
                header = json.loads((fh.metadata() or {}).get("hybnn", "null"))
        except (SafetensorError, OSError, ValueError, RecursionError) as exc:
            raise ArtifactError(f"{path} is not a readable code store ({exc})") from None
        if not isinstance(header, dict) or header.get("kind") != CODES_KIND:
            raise ArtifactError(f"{path} is not a hybnn code store")
        if header.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{path}: unsupported code store version "
                                f"{header.get('format_version')}")
        if "codes" not in arrays or "labels" not in arrays:
            raise ArtifactError(f"{path}: code store lacks codes or labels")
        try:
            num_bits, fingerprint = int(header["num_bits"]), str(header["encoder_fingerprint"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{path}: code store header lacks a valid num_bits or "
                                "encoder_fingerprint") from None
        meta = {k: v for k, v in header.items() if k not in _HEADER_KEYS}
        try:
            store = cls(arrays["codes"], arrays["labels"], num_bits, fingerprint, meta)
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: {exc}") from None
        want = header.get(CHECKSUM_KEY)
        if want is None:
            raise ArtifactError(f"{path}: code store has no {CHECKSUM_KEY} (written before "
                                "hybnn checksummed code stores); re-extract it with `hybnn "
                                "extract`")
        if want != payload_sha256(store.packed, store.labels):
            raise ArtifactError(f"{path}: codes or labels do not match the checksum in the "
                                "header (corrupt or modified file)")
        return store
