"""The frozen encoder artifact: a trained binary-latent VAE, saved with its fingerprint.

:func:`load_code_encoder` opens either kind of encoder that makes codes: this VAE, or a
binary encoder distilled from one (:mod:`hybnn.pipeline.binary_encoder`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from hybnn.artifacts import declared_kind, load_bundle, save_bundle
from hybnn.errors import ArtifactError, DataError
from hybnn.models.fold import fold_batch_norms
from hybnn.models.names import BINARY_ENCODER
from hybnn.models.vae import BinaryLatentVAE
from hybnn.models.weights import build_checked

ENCODER_KIND = "encoder"
# Images per forward pass when encoding: at 256 the encoder's activations stay in cache;
# 512 measured ~1.3x slower per image on 1 and 2 threads (AMD EPYC, torch 2.13 CPU).
ENCODE_BATCH = 256


class CodeEncoder(Protocol):
    """Anything that turns images into codes and names itself by a fingerprint."""

    fingerprint: str
    meta: dict[str, Any]

    @property
    def latent_bits(self) -> int: ...

    def encode(self, images: np.ndarray, batch_size: int = ENCODE_BATCH) -> np.ndarray: ...


@dataclass
class Encoder:
    """A frozen VAE plus the metadata that identifies it."""

    vae: BinaryLatentVAE
    fingerprint: str
    meta: dict[str, Any]
    _folded: nn.Sequential | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def latent_bits(self) -> int:
        """Bits of a code (the VAE's :attr:`~BinaryLatentVAE.code_bits`)."""
        return self.vae.code_bits

    @property
    def image_size(self) -> tuple[int, int]:
        return self.vae.image_size

    @torch.inference_mode()
    def encode(self, images: np.ndarray, batch_size: int = ENCODE_BATCH) -> np.ndarray:
        """Images (N, C, H, W) float32 in [0, 1] -> bool codes (N, latent_bits).

        Runs the VAE's code layers (:meth:`BinaryLatentVAE.code_net`: the encoder, or its
        first conv blocks) with their batch norms folded into the convolutions (built once:
        the encoder is frozen), the code being ``output >= 0`` (for the latent, as in
        :meth:`BinaryLatentVAE.encode`).
        """
        check_images(images, self.vae.config["in_channels"], self.image_size)
        if self._folded is None:
            self.vae.eval()
            self._folded = fold_batch_norms(self.vae.code_net())
        device = next(self.vae.parameters()).device
        net = self._folded.to(device)
        out = [(net(torch.from_numpy(images[i:i + batch_size]).to(device)) >= 0).cpu()
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


def code_fingerprint(weights_fingerprint: str, code: str) -> str:
    """What codes made by an encoder name: its weights file's SHA-256 for the latent codes
    (every encoder before `hybnn recode`), else the SHA-256 of that and the code layer, so
    one set of weights read at two layers makes two code identities."""
    if code == "latent":
        return weights_fingerprint
    return hashlib.sha256(f"{weights_fingerprint}/code={code}".encode()).hexdigest()


def save_encoder(directory: str | os.PathLike[str], vae: BinaryLatentVAE,
                 extra: dict[str, Any]) -> Encoder:
    meta = save_bundle(directory, ENCODER_KIND, vae.state_dict(), vae.config, extra)
    return Encoder(vae.eval(), code_fingerprint(meta["fingerprint"], vae.code), meta)


def load_encoder(directory: str | os.PathLike[str], device: str = "cpu") -> Encoder:
    tensors, meta = load_bundle(directory, ENCODER_KIND)
    if not isinstance(meta.get("config"), dict):
        raise ArtifactError(f"encoder in {directory}: metadata lacks a config")
    vae = build_checked(BinaryLatentVAE, meta["config"], tensors, f"encoder {directory}")
    for p in vae.parameters():
        p.requires_grad_(False)
    return Encoder(vae.to(device).eval(), code_fingerprint(meta["fingerprint"], vae.code), meta)


def recode_encoder(encoder: Encoder, code: str, directory: str | os.PathLike[str]) -> Encoder:
    """``encoder``'s VAE, unchanged, saved to ``directory`` with its codes taken from layer
    ``code`` (:data:`~hybnn.models.vae.CODE_LAYERS`): a new artifact whose codes name a new
    fingerprint (:func:`code_fingerprint`); ``recoded_from`` records the source's. No
    training, no data."""
    try:  # the VAE records ``code`` in its config unless it is the latent
        vae = BinaryLatentVAE(**{**encoder.vae.config, "code": code})
    except ValueError as exc:
        raise DataError(str(exc)) from None
    vae.load_state_dict(encoder.vae.state_dict())
    keep = {k: v for k, v in encoder.meta.items()
            if k not in ("kind", "format_version", "hybnn_version", "fingerprint", "config")}
    source = encoder.meta.get("recoded_from", encoder.fingerprint)
    return save_encoder(directory, vae, {**keep, "recoded_from": source})


def load_code_encoder(directory: str | os.PathLike[str], device: str = "cpu") -> CodeEncoder:
    """The VAE encoder or the distilled binary encoder in ``directory``, by its kind."""
    if declared_kind(directory) == BINARY_ENCODER:
        from hybnn.pipeline.binary_encoder import load_binary_encoder

        return load_binary_encoder(directory, device)
    return load_encoder(directory, device)
