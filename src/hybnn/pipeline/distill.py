"""Distil a binary encoder from the frozen VAE, label-free, on the general data.

The student, a :class:`BinaryEncoder` (``cnn``: fully binary) or a :class:`ResNetEncoder`
(``resnet18``: the binary ResNet-18, optionally started from a `hybnn train --model resnet18`
directory with its classifier replaced), learns to reproduce the teacher's 200 bits with a
per-bit binary cross-entropy: against soft targets ``sigmoid(teacher_logits / T)`` (default;
a confident teacher bit pulls harder than an uncertain one) or against the teacher's hard
bits. Only images are used, never labels. Adam with cosine decay, latent weights clipped to
[-1, 1] after every step, the global RNG reseeded from (seed, epoch) as in phase 1; at the
end the batch-norm statistics are recomputed over the (unshifted) training images.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hybnn.artifacts import require_kind_or_absent, versions
from hybnn.binary.layers import clip_latent_weights
from hybnn.encoders import check_images, distilled
from hybnn.encoders.distilled import DistilledEncoder, encode_images
from hybnn.encoders.vae import VaeEncoder
from hybnn.errors import ArtifactError, DataError
from hybnn.models.binary_encoder import BinaryEncoder, ResNetEncoder
from hybnn.models.binary_resnet import BinaryResNet
from hybnn.models.io import load_model
from hybnn.pipeline.adam import make_adam
from hybnn.pipeline.augment import random_shift
from hybnn.pipeline.checkpoint import CHECKPOINT_NAME, run_tag
from hybnn.pipeline.config import STUDENT_WIDTH, DistillConfig, TrainConfig
from hybnn.pipeline.loop import Schedule, run_epochs
from hybnn.pipeline.train import resolve_device


def bit_agreement(student_bits: np.ndarray, teacher_bits: np.ndarray) -> float:
    """Fraction of identical bits between two (N, B) code arrays (0.5 is chance)."""
    if student_bits.shape != teacher_bits.shape or student_bits.size == 0:
        raise DataError(f"cannot compare codes of shapes {student_bits.shape} and "
                        f"{teacher_bits.shape}")
    return float((student_bits.astype(bool) == teacher_bits.astype(bool)).mean())


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 config: DistillConfig) -> torch.Tensor:
    """Mean per-bit BCE of the student's logits against the teacher's soft or hard bits."""
    if config.target == "soft":
        target = torch.sigmoid(teacher_logits / config.temperature)
    elif config.target == "hard":
        target = (teacher_logits >= 0).to(student_logits.dtype)
    else:
        raise DataError(f"unknown distillation target {config.target!r}; use soft or hard")
    return F.binary_cross_entropy_with_logits(student_logits, target)


def build_student(teacher: VaeEncoder, channels: int, config: DistillConfig,
                  init: str | os.PathLike[str] | None = None
                  ) -> tuple[BinaryEncoder | ResNetEncoder, dict[str, Any] | None]:
    """The untrained student of ``config.student`` for ``teacher``'s images and codes, and
    (``init``, resnet18 only) what it starts from: the weights of a `hybnn train --model
    resnet18` directory (any step or method), all but its classifier, with its width, stem,
    scaling and input preparation. A directory of another model, or of other image channels
    or size than the teacher's, is refused."""
    if config.student == "cnn":
        if init is not None:
            raise DataError("--student-init starts the resnet18 student: add --student resnet18")
        w = config.width or STUDENT_WIDTH["cnn"]
        return BinaryEncoder(teacher.image_size, channels, teacher.latent_bits,
                             (w, 2 * w, 4 * w)), None
    if init is None:
        # the preparation `hybnn train --model resnet18` uses by default (--prep centered)
        return ResNetEncoder(teacher.image_size, channels, teacher.latent_bits,
                             config.width or STUDENT_WIDTH["resnet18"], stem=config.stem or
                             "cifar", prep="centered"), None
    source, meta = load_model(init)
    arch = meta["config"]["arch"]
    if type(source) is not BinaryResNet:
        raise DataError(f"--student-init {init}: a {arch} model; the student starts from a "
                        "binary resnet18 (`hybnn train --model resnet18`)")
    c = source.config
    wanted = {"in_channels": channels, "image_size": list(teacher.image_size),
              "width": config.width or c["width"], "stem": config.stem or c["stem"]}
    diff = [k for k, v in wanted.items() if c[k] != v]
    if diff:
        raise DataError(f"--student-init {init}: its {', '.join(diff)} "
                        f"({', '.join(f'{c[k]}' for k in diff)}) differ from this run's "
                        f"({', '.join(f'{wanted[k]}' for k in diff)})")
    student = ResNetEncoder(teacher.image_size, channels, teacher.latent_bits, c["width"],
                            c["blocks"], c["scaling"], c["stem"], meta.get("prep") or "centered")
    weights = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    missing, unexpected = student.resnet.load_state_dict(weights, strict=False)
    if unexpected or sorted(missing) != ["fc.bias", "fc.weight"]:
        raise ArtifactError(f"--student-init {init}: weights do not fit the student "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    clip_latent_weights(student)  # a step-1 model's real weights become latent ones
    resnet = meta.get("resnet")
    resnet = resnet if isinstance(resnet, dict) else {}
    return student, {"path": str(init), "fingerprint": meta["fingerprint"],
                     "step": resnet.get("step"), "method": resnet.get("method"),
                     "prep": student.config["prep"]}


def train_binary_encoder(teacher: VaeEncoder, images: np.ndarray, config: DistillConfig,
                         test_images: np.ndarray | None = None, progress: bool = True,
                         checkpoint: Path | None = None, resume: bool = False,
                         student: BinaryEncoder | ResNetEncoder | None = None,
                         ) -> tuple[BinaryEncoder | ResNetEncoder, list[dict[str, Any]]]:
    """Train ``student`` (default: :func:`build_student` of ``config``, seeded) to reproduce
    ``teacher``'s codes on ``images``; with ``checkpoint`` saved after every epoch, and
    ``resume`` continues from it.

    ``test_images`` (optional) are only encoded, to record the held-out bit agreement per
    epoch; nothing is selected on them.
    """
    check_images(images, teacher.vae.config["in_channels"], teacher.image_size)
    if teacher.vae.code != "latent":
        raise DataError(f"distillation learns a VAE's latent codes; this teacher's codes come "
                        f"from {teacher.vae.code} (`hybnn recode`): give the encoder it was "
                        "recoded from")
    if len(images) < 2 or config.epochs < 1 or config.batch_size < 2 or (
            config.width is not None and config.width < 1):
        raise DataError("distillation needs >= 2 images, --epochs >= 1, --batch-size >= 2 "
                        "and --width >= 1")
    if not (config.lr > 0 and math.isfinite(config.lr)) or not config.temperature > 0:
        raise DataError("distillation needs a positive finite --lr and --temperature")
    if config.shift < 0:
        raise DataError("--shift must be >= 0")
    device = resolve_device(config.device)
    start: list[torch.Tensor] = []  # a given student's weights identify the run too
    if student is None:
        torch.manual_seed(config.seed)
        student, _ = build_student(teacher, images.shape[1], config)
    else:
        start = [t.detach().clone() for t in student.state_dict().values()]
    student.to(device)
    vae = teacher.vae.to(device).eval()
    opt = make_adam(student, TrainConfig(lr=config.lr))
    x_all = torch.from_numpy(images)
    test_bits = teacher.encode(test_images) if test_images is not None else None
    settings = {k: v for k, v in asdict(config).items() if k != "device"}
    tag = run_tag(student, settings, x_all, *start)

    def body(epoch: int, batches: Iterator[torch.Tensor]) -> dict[str, Any]:
        loss_sum, same, seen = 0.0, 0.0, 0
        for idx in batches:
            xb = x_all[idx]
            if config.shift:
                xb = random_shift(xb, config.shift)
            xb = xb.to(device)
            with torch.no_grad():
                t_logits = vae.logits(xb)
            s_logits = student(xb)
            loss = distill_loss(s_logits, t_logits, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clip_latent_weights(student)
            loss_sum += loss.item() * len(idx)
            same += float(((s_logits >= 0) == (t_logits >= 0)).float().mean()) * len(idx)
            seen += len(idx)
        return {"loss": loss_sum / seen, "train_agreement": same / seen}

    def after(epoch: int, logs: dict[str, Any]) -> None:
        if test_images is not None and test_bits is not None:
            logs["test_agreement"] = bit_agreement(encode_images(student, test_images), test_bits)

    schedule = Schedule(config.epochs, config.lr, config.batch_size, config.seed)
    history = run_epochs(schedule, len(x_all), student, opt, body,
                         desc="distill binary encoder", progress=progress,
                         checkpoint=checkpoint, resume=resume, tag=tag, after=after).epochs
    recalibrate_batch_norm(student, images, config.batch_size)
    if test_images is not None and test_bits is not None and history:
        history[-1]["test_agreement"] = bit_agreement(encode_images(student, test_images),
                                                      test_bits)
    return student.eval(), history


@torch.no_grad()
def recalibrate_batch_norm(model: torch.nn.Module, images: np.ndarray,
                           batch_size: int = 256) -> None:
    """Replace every batch norm's running statistics by their exact averages over ``images``
    (unaugmented) under the final weights.

    The running averages of training trail the last steps' weights (and see shifted images);
    a binary layer's sign threshold is sensitive to them: on mnist-5k this alone raised the
    held-out bit agreement from 82 % to 88 % (soft targets, 10 epochs).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    try:
        for i in range(0, len(images), batch_size):
            model(torch.from_numpy(images[i:i + batch_size]).to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)


def distill(teacher: VaeEncoder, images: np.ndarray, out: str | os.PathLike[str],
            config: DistillConfig, data_info: dict[str, Any],
            test_images: np.ndarray | None = None, progress: bool = True,
            teacher_path: str | None = None, resume: bool = False,
            student_init: str | os.PathLike[str] | None = None) -> DistilledEncoder:
    """Train, save and describe the binary encoder in ``out``; returns the frozen artifact.
    A checkpoint in ``out`` after every epoch lets ``resume=True`` continue an interrupted
    run; it is removed once the encoder is saved. ``student_init``: the resnet18 student
    starts from this `hybnn train --model resnet18` directory (:func:`build_student`)."""
    require_kind_or_absent(out, distilled.KIND)  # before training, not after
    t0 = time.perf_counter()
    checkpoint = Path(out) / CHECKPOINT_NAME
    torch.manual_seed(config.seed)
    student, start = build_student(teacher, images.shape[1], config, student_init)
    student, history = train_binary_encoder(teacher, images, config, test_images, progress,
                                            checkpoint, resume, student)
    agreement = {"train": bit_agreement(encode_images(student, images), teacher.encode(images))}
    if history and "test_agreement" in history[-1]:
        agreement["test"] = history[-1]["test_agreement"]
    encoder = distilled.save(Path(out), student, teacher.fingerprint, {
        "teacher": {"path": teacher_path, "latent_bits": teacher.latent_bits},
        # the width and stem the student has (the defaults, or --student-init's)
        "distill": asdict(replace(config, width=student.config["width"] if isinstance(
            student, ResNetEncoder) else student.config["channels"][0],
            stem=student.config.get("stem"))),
        "student_init": start,
        "data": data_info,
        "bit_agreement": agreement,
        "history": history,
        "train_seconds": time.perf_counter() - t0,
        "versions": versions(),
    })
    checkpoint.unlink(missing_ok=True)
    return encoder
