"""The distilled encoder (kind ``binary-encoder``): a student network tied to its teacher.

Saved with :func:`hybnn.artifacts.save_artifact` as kind ``binary-encoder``; ``student`` in its
metadata names the network (:data:`STUDENTS`: ``cnn``, a :class:`BinaryEncoder`, what an
artifact without the field holds; ``resnet18``, a :class:`ResNetEncoder`). Its fingerprint
(SHA-256 of its own weights) is what its code stores record, so a head trained on distilled
codes is tied to this encoder, never to the VAE; the teacher's fingerprint is recorded
beside it (``teacher.fingerprint``) and checked wherever the two are compared.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hybnn.artifacts import load_artifact, save_artifact
from hybnn.encoders.base import ENCODE_BATCH, check_images
from hybnn.errors import ArtifactError, FingerprintMismatch
from hybnn.models.binary_encoder import BinaryEncoder, ResNetEncoder
from hybnn.models.names import BINARY_ENCODER
from hybnn.models.weights import build_checked

KIND = BINARY_ENCODER
LABEL = "binary encoder"  # how messages name this kind
MADE = "distilled from"  # how it comes from the encoder it was made from
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
Student = BinaryEncoder | ResNetEncoder
STUDENTS: dict[str, Callable[..., Student]] = {"cnn": BinaryEncoder, "resnet18": ResNetEncoder}


def student_name(model: Student) -> str:
    """The name :data:`STUDENTS` gives ``model``'s network."""
    return next(name for name, cls in STUDENTS.items() if type(model) is cls)


@dataclass
class DistilledEncoder:
    """A frozen distilled encoder plus the metadata that identifies it and its teacher."""

    KIND = KIND
    LABEL = LABEL
    MADE = MADE
    model: Student
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
def encode_images(model: Student, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
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


def save(directory: str | os.PathLike[str], model: Student, teacher_fingerprint: str,
         extra: dict[str, Any]) -> DistilledEncoder:
    """Save ``model`` as a binary-encoder artifact distilled from ``teacher_fingerprint``."""
    if not _SHA256.match(teacher_fingerprint):
        raise ArtifactError(f"teacher fingerprint {teacher_fingerprint!r} is not a SHA-256")
    teacher = {**extra.get("teacher", {}), "fingerprint": teacher_fingerprint}
    prep = model.config.get("prep", "centered")  # the cnn student centres its input
    meta = save_artifact(directory, KIND, model.state_dict(), model.config,
                         {**extra, "teacher": teacher, "student": student_name(model),
                          "input_prep": prep})
    return DistilledEncoder(model.eval(), meta["fingerprint"], meta)


def load(directory: str | os.PathLike[str], device: str = "cpu",
         threads: int | None = None) -> DistilledEncoder:
    """Load and validate a binary encoder saved by :func:`save`."""
    tensors, meta = load_artifact(directory, KIND)
    teacher = meta.get("teacher")
    if not isinstance(teacher, dict) or not _SHA256.match(str(teacher.get("fingerprint"))):
        raise ArtifactError(f"binary encoder in {directory} does not record its teacher's "
                            "fingerprint")
    student = meta.get("student", "cnn")  # written before the choice: the cnn
    cls = STUDENTS.get(student) if isinstance(student, str) else None
    if cls is None:
        raise ArtifactError(f"binary encoder in {directory} records the student {student!r}; "
                            f"this hybnn knows {', '.join(STUDENTS)}")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise ArtifactError(f"binary encoder in {directory} records no config of its network")
    model = build_checked(cls, config, tensors, f"binary encoder in {directory}")
    for p in model.parameters():
        p.requires_grad_(False)
    return DistilledEncoder(model.to(device).eval(), meta["fingerprint"], meta)
