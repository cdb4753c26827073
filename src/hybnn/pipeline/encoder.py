"""The frozen encoder artifact: a trained binary-latent VAE, saved with its fingerprint.

:func:`load_code_encoder` opens either kind of encoder that makes codes: this VAE, or a
binary encoder distilled from one (:mod:`hybnn.pipeline.binary_encoder`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from hybnn.artifacts import declared_kind, load_bundle, save_bundle
from hybnn.errors import ArtifactError, DataError
from hybnn.models.names import BINARY_ENCODER
from hybnn.models.vae import BinaryLatentVAE
from hybnn.models.weights import build_checked

ENCODER_KIND = "encoder"


class CodeEncoder(Protocol):
    """Anything that turns images into codes and names itself by a fingerprint."""

    fingerprint: str
    meta: dict[str, Any]

    @property
    def latent_bits(self) -> int: ...

    def encode(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray: ...


@dataclass
class Encoder:
    """A frozen VAE plus the metadata that identifies it."""

    vae: BinaryLatentVAE
    fingerprint: str
    meta: dict[str, Any]

    @property
    def latent_bits(self) -> int:
        return self.vae.latent_bits

    @property
    def image_size(self) -> tuple[int, int]:
        return self.vae.image_size

    @torch.no_grad()
    def encode(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Images (N, C, H, W) float32 in [0, 1] -> bool codes (N, latent_bits)."""
        check_images(images, self.vae.config["in_channels"], self.image_size)
        self.vae.eval()
        device = next(self.vae.parameters()).device
        out = [self.vae.encode(torch.from_numpy(images[i:i + batch_size]).to(device)).cpu()
               for i in range(0, len(images), batch_size)]
        if not out:
            return np.zeros((0, self.latent_bits), dtype=bool)
        return torch.cat(out).numpy()


def check_images(images: np.ndarray, channels: int, size: tuple[int, int]) -> None:
    want = (channels, *size)
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise DataError(
            f"encoder expects images of shape (N, {', '.join(map(str, want))}), "
            f"got {tuple(images.shape)}"
        )


def save_encoder(directory: str | os.PathLike[str], vae: BinaryLatentVAE,
                 extra: dict[str, Any]) -> Encoder:
    meta = save_bundle(directory, ENCODER_KIND, vae.state_dict(), vae.config, extra)
    return Encoder(vae.eval(), meta["fingerprint"], meta)


def load_encoder(directory: str | os.PathLike[str], device: str = "cpu") -> Encoder:
    tensors, meta = load_bundle(directory, ENCODER_KIND)
    if not isinstance(meta.get("config"), dict):
        raise ArtifactError(f"encoder in {directory}: metadata lacks a config")
    vae = build_checked(BinaryLatentVAE, meta["config"], tensors, f"encoder {directory}")
    for p in vae.parameters():
        p.requires_grad_(False)
    return Encoder(vae.to(device).eval(), meta["fingerprint"], meta)


def load_code_encoder(directory: str | os.PathLike[str], device: str = "cpu") -> CodeEncoder:
    """The VAE encoder or the distilled binary encoder in ``directory``, by its kind."""
    if declared_kind(directory) == BINARY_ENCODER:
        from hybnn.pipeline.binary_encoder import load_binary_encoder

        return load_binary_encoder(directory, device)
    return load_encoder(directory, device)
