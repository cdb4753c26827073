"""The distilled encoder (kind ``binary-encoder``): a :class:`BinaryEncoder` tied to its teacher.

Saved with :func:`hybnn.artifacts.save_artifact` as kind ``binary-encoder``. Its fingerprint
(SHA-256 of its own weights) is what its code stores record, so a head trained on distilled
codes is tied to this encoder, never to the VAE; the teacher's fingerprint is recorded
beside it (``teacher.fingerprint``) and checked wherever the two are compared.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hybnn.artifacts import load_artifact, save_artifact
from hybnn.encoders.base import ENCODE_BATCH, check_images
from hybnn.errors import ArtifactError, FingerprintMismatch
from hybnn.models.binary_encoder import BinaryEncoder
from hybnn.models.names import BINARY_ENCODER

KIND = BINARY_ENCODER
LABEL = "binary encoder"  # how messages name this kind
MADE = "distilled from"  # how it comes from the encoder it was made from
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class DistilledEncoder:
    """A frozen distilled encoder plus the metadata that identifies it and its teacher."""

    KIND = KIND
    LABEL = LABEL
    MADE = MADE
    model: BinaryEncoder
    fingerprint: str
    meta: dict[str, Any]

    @property
    def latent_bits(self) -> int:
        return self.model.latent_bits

    @property
    def image_size(self) -> tuple[int, int]:
        return self.model.image_size

    @property
    def channels(self) -> int:
        return int(self.model.config["in_channels"])

    @property
    def derived_from(self) -> str:
        return self.teacher_fingerprint

    @property
    def teacher_fingerprint(self) -> str:
        return str(self.meta["teacher"]["fingerprint"])

    def require_teacher(self, fingerprint: str) -> None:
        """Refuse a comparison with a VAE other than the one this encoder was distilled from."""
        if fingerprint != self.teacher_fingerprint:
            raise FingerprintMismatch(
                f"binary encoder {self.fingerprint[:12]} was distilled from encoder "
                f"{self.teacher_fingerprint[:12]}, not from {fingerprint[:12]}"
            )

    def encode(self, images: np.ndarray, batch_size: int = ENCODE_BATCH) -> np.ndarray:
        """Images (N, C, H, W) float32 in [0, 1] -> bool codes (N, latent_bits)."""
        check_images(images, self.channels, self.image_size)
        return encode_images(self.model, images, batch_size)


@torch.no_grad()
def encode_images(model: BinaryEncoder, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Bool codes (N, latent_bits) of images, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model.encode(torch.from_numpy(images[i:i + batch_size]).to(device)).cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    if not out:
        return np.zeros((0, model.latent_bits), dtype=bool)
    return torch.cat(out).numpy()


def save(directory: str | os.PathLike[str], model: BinaryEncoder,
                        teacher_fingerprint: str, extra: dict[str, Any]) -> DistilledEncoder:
    """Save ``model`` as a binary-encoder artifact distilled from ``teacher_fingerprint``."""
    if not _SHA256.match(teacher_fingerprint):
        raise ArtifactError(f"teacher fingerprint {teacher_fingerprint!r} is not a SHA-256")
    teacher = {**extra.get("teacher", {}), "fingerprint": teacher_fingerprint}
    meta = save_artifact(directory, KIND, model.state_dict(), model.config,
                       {**extra, "teacher": teacher, "input_prep": "centered"})
    return DistilledEncoder(model.eval(), meta["fingerprint"], meta)


def load(directory: str | os.PathLike[str], device: str = "cpu",
         threads: int | None = None) -> DistilledEncoder:
    """Load and validate a binary encoder saved by :func:`save`."""
    tensors, meta = load_artifact(directory, KIND)
    teacher = meta.get("teacher")
    if not isinstance(teacher, dict) or not _SHA256.match(str(teacher.get("fingerprint"))):
        raise ArtifactError(f"binary encoder in {directory} does not record its teacher's "
                            "fingerprint")
    try:
        model = BinaryEncoder(**meta["config"])
        model.load_state_dict(tensors, strict=True)
    except (TypeError, KeyError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0]
        raise ArtifactError(f"binary encoder in {directory} does not fit its config: "
                            f"{first}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return DistilledEncoder(model.to(device).eval(), meta["fingerprint"], meta)
