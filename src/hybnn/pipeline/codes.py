"""Bit-packed binary codes on disk: 200 bits -> 25 bytes per sample.

A code store is one safetensors file holding ``codes`` (uint8, N x ceil(bits/8), numpy
``packbits`` order: big-endian within each byte, bit 1 = code +1, bit 0 = code -1, tail bits
zero) and ``labels`` (int64), with a JSON header that records the encoder's fingerprint,
the number of bits, the number of classes, the label space, the source, the task and
``sha256``: the SHA-256 of every other header field and of the codes and labels
(:func:`store_sha256`), verified on load. Every header field the loader uses is then also
checked against the payload (:class:`CodeStore` refuses a store whose ``num_bits`` does not
fit its packed codes, whose labels or ``num_classes`` exceed :data:`MAX_CLASSES`, whose label
space disagrees with its classes), so a forged header with a valid hash is refused as well.
A store is only ever read into the model that its encoder fingerprint says it belongs to.

Format 1 (hybnn before this check) covered the codes and labels alone (``payload_sha256``),
leaving ``num_bits``, ``num_classes`` and the fingerprint unchecked; such a store is refused
with a request to re-run ``hybnn extract``.
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
from safetensors import SafetensorError
from safetensors.numpy import load, save_file

from hybnn.artifacts import MAX_WEIGHTS_BYTES, atomic_write, read_regular
from hybnn.data.labels import LabelSpace
from hybnn.data.limits import MAX_CONFIG_VALUE
from hybnn.errors import ArtifactError, FingerprintMismatch

CODES_KIND = "codes"
CODES_VERSION = 2  # 1: the checksum covered the codes and labels, not the header
CHECKSUM_KEY = "sha256"
_HEADER_KEYS = ("kind", "format_version", "num_bits", "encoder_fingerprint", CHECKSUM_KEY)
# What a model built from a store may be: the caps of a model's config (hybnn.data.limits).
MAX_BITS = MAX_CONFIG_VALUE
MAX_CLASSES = MAX_CONFIG_VALUE


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


def store_sha256(header: dict[str, Any], packed: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of a whole store: every header field but the checksum itself (as sorted,
    compact JSON), then the payload's :func:`payload_sha256`."""
    fields = {k: v for k, v in header.items() if k != CHECKSUM_KEY}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    digest.update(f"\n{payload_sha256(packed, labels)}".encode())
    return digest.hexdigest()


@dataclass
class CodeStore:
    packed: np.ndarray
    labels: np.ndarray
    num_bits: int
    encoder_fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bits = self.num_bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
            raise ArtifactError(f"code store: num_bits must be an integer in 1..{MAX_BITS:,}, "
                                f"got {bits!r}")
        if not isinstance(self.encoder_fingerprint, str) or not self.encoder_fingerprint:
            raise ArtifactError(f"code store: encoder_fingerprint must be a string, got "
                                f"{self.encoder_fingerprint!r}")
        want = (bits + 7) // 8
        if self.packed.dtype != np.uint8 or self.packed.ndim != 2 or self.packed.shape[1] != want:
            raise ArtifactError(
                f"packed codes must be uint8 of shape (N, {want}) for {bits} bits, "
                f"got {self.packed.dtype} {self.packed.shape}"
            )
        tail = (1 << (8 * want - bits)) - 1  # the unused low bits of the last byte
        if tail and self.packed.size and np.any(self.packed[:, -1] & tail):
            raise ArtifactError(f"code store: codes have bits set past their {bits} bits "
                                "(num_bits does not match the packed codes)")
        if self.labels.shape != (self.packed.shape[0],):
            raise ArtifactError("code store: labels do not match the number of codes")
        if not np.issubdtype(self.labels.dtype, np.integer) or (
                self.labels.size and self.labels.min() < 0):
            raise ArtifactError("code store: labels must be non-negative integers")
        top = int(self.labels.max()) if self.labels.size else -1
        if top >= MAX_CLASSES:
            raise ArtifactError(f"code store: label {top} is above the limit of "
                                f"{MAX_CLASSES:,} classes")
        classes = self.meta.get("num_classes")
        if classes is not None:
            if (not isinstance(classes, int) or isinstance(classes, bool)
                    or not 1 <= classes <= MAX_CLASSES):
                raise ArtifactError(f"code store: num_classes must be an integer in "
                                    f"1..{MAX_CLASSES:,}, got {classes!r}")
            if top >= classes:
                raise ArtifactError(f"code store: label {top} is not one of its {classes} "
                                    "classes")
        if self.meta.get("label_space") is not None:
            try:
                LabelSpace.from_json(self.meta["label_space"], self.num_classes)
            except ArtifactError as exc:
                raise ArtifactError(f"code store: {exc}") from None

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
            **self.meta,
            "kind": CODES_KIND,
            "format_version": CODES_VERSION,
            "num_bits": self.num_bits,
            "encoder_fingerprint": self.encoder_fingerprint,
        }
        header[CHECKSUM_KEY] = store_sha256(header, self.packed, self.labels)
        arrays = {"codes": np.ascontiguousarray(self.packed),
                  "labels": self.labels.astype(np.int64)}
        return atomic_write(path, lambda p: save_file(arrays, str(p),
                                                      metadata={"hybnn": json.dumps(header)}))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CodeStore:
        path = Path(path)
        if not path.exists():
            raise ArtifactError(f"code store not found: {path}")
        data = read_regular(path, "code store", MAX_WEIGHTS_BYTES)
        try:
            arrays = load(data)
            table = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
            header = json.loads((table.get("__metadata__") or {}).get("hybnn", "null"))
        except (SafetensorError, ValueError, RecursionError, AttributeError) as exc:
            raise ArtifactError(f"{path} is not a readable code store ({exc})") from None
        if not isinstance(header, dict) or header.get("kind") != CODES_KIND:
            raise ArtifactError(f"{path} is not a hybnn code store")
        version = header.get("format_version")
        if version == 1:
            raise ArtifactError(f"{path}: code store format 1 (an older hybnn) leaves its "
                                "header (num_bits, num_classes, encoder fingerprint) outside "
                                "its checksum; re-extract it with `hybnn extract`")
        if version != CODES_VERSION:
            raise ArtifactError(f"{path}: unsupported code store version {version!r} (this "
                                f"hybnn reads version {CODES_VERSION})")
        if "codes" not in arrays or "labels" not in arrays:
            raise ArtifactError(f"{path}: code store lacks codes or labels")
        num_bits, fingerprint = header.get("num_bits"), header.get("encoder_fingerprint")
        if num_bits is None or fingerprint is None:
            raise ArtifactError(f"{path}: code store header lacks num_bits or "
                                "encoder_fingerprint")
        codes, labels = arrays["codes"], arrays["labels"]
        want = header.get(CHECKSUM_KEY)
        if want is None:
            raise ArtifactError(f"{path}: code store has no {CHECKSUM_KEY}; re-extract it with "
                                "`hybnn extract`")
        # The checksum first (arrays of other dtypes are refused below without hashing them),
        # then every header field against the payload: a forged header may carry a valid hash.
        if codes.dtype == np.uint8 and np.issubdtype(labels.dtype, np.integer):
            try:
                got = store_sha256(header, codes, labels)
            except (TypeError, ValueError, RecursionError):
                got = None
            if want != got:
                raise ArtifactError(f"{path}: header, codes or labels do not match the "
                                    "checksum in the header (corrupt or modified file)")
        meta = {k: v for k, v in header.items() if k not in _HEADER_KEYS}
        try:
            return cls(codes, labels, num_bits, fingerprint, meta)
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: {exc}") from None
