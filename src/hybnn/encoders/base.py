"""What every code encoder is: the :class:`CodeEncoder` protocol, and what identifies one.

A code encoder turns images into fixed-width binary codes and names itself by a fingerprint;
a head trained on its codes records that fingerprint, and :func:`require_same_encoder` refuses
to pair the head with any other encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hybnn.errors import DataError, FingerprintMismatch

# Images per forward pass when encoding: at 256 the encoder's activations stay in cache;
# 512 measured ~1.3x slower per image on 1 and 2 threads (AMD EPYC, torch 2.13 CPU).
ENCODE_BATCH = 256


@runtime_checkable
class CodeEncoder(Protocol):
    """Anything that turns images into codes and names itself by a fingerprint.

    ``KIND`` is the artifact kind its directory declares; ``LABEL`` how messages name it.
    ``derived_from`` is the fingerprint of the encoder it was made from (the VAE a distilled
    or int8 encoder comes from, the source of a recoded VAE), or None; ``MADE`` says how
    (``"quantized from"``)."""

    KIND: str
    LABEL: str
    MADE: str
    fingerprint: str
    meta: dict[str, Any]

    @property
    def latent_bits(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def image_size(self) -> tuple[int, int]: ...

    @property
    def derived_from(self) -> str | None: ...

    def encode(self, images: np.ndarray, batch_size: int = ENCODE_BATCH) -> np.ndarray:
        """Images (N, C, H, W) float32 in [0, 1] -> bool codes (N, latent_bits)."""
        ...


@dataclass(frozen=True)
class EncoderIdentity:
    """What a deployed artifact records of its encoder. ``fingerprint`` is the one the head's
    codes name; ``quantized_from`` the float VAE's, for an int8 encoder."""

    fingerprint: str
    latent_bits: int
    channels: int
    image_size: tuple[int, int]
    data: Any = None
    pretrain: Any = None
    quantized_from: str | None = None

    @classmethod
    def of(cls, encoder: CodeEncoder) -> EncoderIdentity:
        quantized = encoder.derived_from if encoder.KIND == "int8-encoder" else None
        return cls(encoder.fingerprint, encoder.latent_bits, encoder.channels,
                   encoder.image_size, encoder.meta.get("data"), encoder.meta.get("pretrain"),
                   quantized)


@dataclass(frozen=True)
class EncoderGraph:
    """An encoder as ONNX bytes, its precision and (int8) how it was calibrated."""

    onnx: bytes
    precision: str
    quantization: dict[str, Any] | None = None


def check_images(images: np.ndarray, channels: int, size: tuple[int, int]) -> None:
    want = (channels, *size)
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise DataError(
            f"encoder expects images of shape (N, {', '.join(map(str, want))}), "
            f"got {tuple(images.shape)}"
        )


def require_same_encoder(trained_on: object, encoder: CodeEncoder, model: object,
                         encoder_dir: object) -> None:
    """Refuse ``encoder`` for a model whose metadata says it was trained on codes of the
    encoder with fingerprint ``trained_on``; say so when ``encoder`` was made from that one."""
    if trained_on == encoder.fingerprint:
        return
    want = str(trained_on)
    hint = ""
    if encoder.derived_from is not None and want == encoder.derived_from:
        hint = (f" ({encoder_dir} was {encoder.MADE} that encoder, but makes other codes: "
                f"extract codes with {encoder_dir} and train the head on them, or use the "
                "encoder the head was trained with)")
    raise FingerprintMismatch(
        f"model {model} was trained on codes of encoder {want[:12]}, but {encoder_dir} is "
        f"{encoder.LABEL} {encoder.fingerprint[:12]}{hint}")
