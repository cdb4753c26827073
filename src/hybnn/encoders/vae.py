"""The VAE encoder (kind ``encoder``): a trained binary-latent VAE, frozen, with its fingerprint.

Its codes are the latent's bits, or (``hybnn recode``) the bits of an earlier layer.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hybnn.artifacts import load_artifact, save_artifact
from hybnn.encoders.base import ENCODE_BATCH, check_images
from hybnn.errors import ArtifactError, DataError
from hybnn.models.bn_fold import fold_batch_norms
from hybnn.models.vae import BinaryLatentVAE
from hybnn.models.weights import build_checked

KIND = "encoder"
LABEL = "VAE encoder"  # how messages name this kind
MADE = "recoded from"  # how it comes from the encoder it was made from


@dataclass
class VaeEncoder:
    """A frozen VAE plus the metadata that identifies it."""

    KIND = KIND
    LABEL = LABEL
    MADE = MADE
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

    @property
    def channels(self) -> int:
        return int(self.vae.config["in_channels"])

    @property
    def derived_from(self) -> str | None:
        """The fingerprint of the encoder this one was recoded from, if any."""
        source = self.meta.get("recoded_from")
        return str(source) if source else None

    @torch.inference_mode()
    def encode(self, images: np.ndarray, batch_size: int = ENCODE_BATCH) -> np.ndarray:
        """Images (N, C, H, W) float32 in [0, 1] -> bool codes (N, latent_bits).

        Runs the VAE's code layers (:meth:`BinaryLatentVAE.code_net`: the encoder, or its
        first conv blocks) with their batch norms folded into the convolutions (built once:
        the encoder is frozen), the code being ``output >= 0`` (for the latent, as in
        :meth:`BinaryLatentVAE.encode`).
        """
        check_images(images, self.channels, self.image_size)
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


def code_fingerprint(weights_fingerprint: str, code: str) -> str:
    """What codes made by an encoder name: its weights file's SHA-256 for the latent codes
    (every encoder before `hybnn recode`), else the SHA-256 of that and the code layer, so
    one set of weights read at two layers makes two code identities."""
    if code == "latent":
        return weights_fingerprint
    return hashlib.sha256(f"{weights_fingerprint}/code={code}".encode()).hexdigest()


def save(directory: str | os.PathLike[str], vae: BinaryLatentVAE,
         extra: dict[str, Any]) -> VaeEncoder:
    """Save ``vae`` (frozen from here on) as a VAE encoder artifact with ``extra`` metadata."""
    meta = save_artifact(directory, KIND, vae.state_dict(), vae.config, extra)
    return VaeEncoder(vae.eval(), code_fingerprint(meta["fingerprint"], vae.code), meta)


def load(directory: str | os.PathLike[str], device: str = "cpu",
         threads: int | None = None) -> VaeEncoder:
    """The VAE encoder in ``directory`` on ``device`` (torch runs it on its own threads)."""
    tensors, meta = load_artifact(directory, KIND)
    if not isinstance(meta.get("config"), dict):
        raise ArtifactError(f"encoder in {directory}: metadata lacks a config")
    vae = build_checked(BinaryLatentVAE, meta["config"], tensors, f"encoder {directory}")
    for p in vae.parameters():
        p.requires_grad_(False)
    return VaeEncoder(vae.to(device).eval(), code_fingerprint(meta["fingerprint"], vae.code), meta)


def recode(encoder: VaeEncoder, code: str, directory: str | os.PathLike[str]) -> VaeEncoder:
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
    return save(directory, vae, {**keep, "recoded_from": source})
