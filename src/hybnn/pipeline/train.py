"""Phase 3: train a classifier (BNN head on codes, or a CNN baseline on images).

One loop serves every model: Adam, cosine learning-rate decay, batch shuffling from a seed
per epoch, latent-weight clipping for binary layers, and an atomic checkpoint after every
epoch. Each epoch reseeds the global RNG from (seed, epoch), so a run resumed from its
checkpoint, even after ``kill -9``, continues exactly as if it had not stopped.

With ``code_noise`` each input bit of a batch of codes is flipped with that probability, a
dropout-like augmentation of the codes (the heads' default, measured in ``TrainConfig``).

Methods such as ReBNN plug in through :class:`Callback`: extra loss terms, hooks after the
backward pass and after each step, and per-epoch metrics written into the history.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hybnn.binary.layers import binary_layers
from hybnn.errors import DataError
from hybnn.hooks import Callback, History
from hybnn.pipeline.adam import adam_step, make_adam
from hybnn.pipeline.checkpoint import run_tag
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.head_step import fused_step_for
from hybnn.pipeline.loop import Schedule, run_epochs


def resolve_device(name: str) -> torch.device:
    """A torch device, with a clear error when CUDA is asked for but absent."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"--device {name} requested but CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DataError(f"unknown device {name!r}") from None


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    n = max(len(y), 1)
    return loss_sum / n, correct / n


@torch.no_grad()
def predict_classes(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Argmax class of every input, in eval mode, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(x), batch_size)]).numpy()


def fit_classifier(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    config: TrainConfig | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    progress: bool = True,
    desc: str = "train",
    fused: bool = True,
) -> History:
    """Train ``model`` with cross-entropy on ``train``; evaluate on ``test`` every epoch.

    ``fused`` lets a plain BNN head train through :mod:`hybnn.pipeline.head_step` (the same
    values and gradients without autograd, 1.4-1.5x faster per epoch on mnist-5k's ten-class
    head in BENCHMARKS.md); callbacks, other models and ``fused=False`` use autograd.
    """
    config = config or TrainConfig()
    if config.batch_size < 1 or config.epochs < 0 or not 0 < config.lr < math.inf:
        raise DataError(f"training needs batch size >= 1, epochs >= 0 and a positive learning "
                        f"rate (got {config.batch_size}, {config.epochs}, {config.lr})")
    x, y = train
    if len(x) != len(y) or len(y) == 0:
        raise DataError(f"training set needs as many labels as inputs (got {len(x)}, {len(y)})")
    if not torch.isfinite(x).all():
        raise DataError("training inputs contain NaN or infinite values")
    if not 0 <= config.code_noise < 0.5:
        raise DataError(f"--code-noise must be a probability in [0, 0.5), got "
                        f"{config.code_noise!r}")
    # +-1 codes? (once per run; images, 4-D, are not looked at)
    signs = bool((x.abs() == 1).all()) if config.code_noise or x.dim() == 2 else False
    if config.code_noise and not signs:
        raise DataError("--code-noise flips the bits of binary codes (inputs of +-1); these "
                        "inputs are not codes: use --code-noise 0")
    device = resolve_device(config.device)
    model.to(device)
    optimizer = make_adam(model, config)
    settings = {k: v for k, v in asdict(config).items() if k != "device"}
    tag = run_tag(model, settings, x, y)
    for cb in callbacks:
        cb.on_train_begin(model)
    n = len(y)
    latent = [layer for _, layer in binary_layers(model)]  # clipped after every step
    for layer in latent:  # and before the first, so the weight STE passes every gradient
        layer.clip_latent_()
    step = fused_step_for(model, x, signs) if fused and not callbacks else None

    def body(epoch: int, batches: Iterator[torch.Tensor]) -> dict[str, Any]:
        # summed on the device: one host sync per epoch, not two per step
        loss_acc = torch.zeros((), device=device)
        correct_acc = torch.zeros((), dtype=torch.long, device=device)
        for idx in batches:
            xb, yb = x[idx].to(device), y[idx].to(device)
            if config.code_noise:
                xb = flip_bits(xb, config.code_noise)
            if step is not None:  # the fused step leaves the gradients in place
                loss, logits = step(xb, yb)
                optimizer_step(model, optimizer, None, callbacks, latent)
            else:
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                optimizer_step(model, optimizer, loss, callbacks, latent)
            with torch.no_grad():
                loss_acc += loss.detach() * len(idx)
                correct_acc += (logits.argmax(1) == yb).sum()
        return {"train_loss": float(loss_acc) / n, "train_acc": int(correct_acc) / n}

    def after(epoch: int, logs: dict[str, Any]) -> None:
        if test is not None:
            logs["test_loss"], logs["test_acc"] = evaluate_classifier(model, *test)
        for cb in callbacks:
            cb.on_epoch_end(model, epoch, logs)

    schedule = Schedule(config.epochs, config.lr, config.batch_size, config.seed,
                        config.schedule)
    history = run_epochs(schedule, n, model, optimizer, body, desc=desc, progress=progress,
                         checkpoint=Path(checkpoint) if checkpoint else None, resume=resume,
                         tag=tag, after=after)
    model.eval()
    return history


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                   objective: torch.Tensor | None, callbacks: Sequence[Callback],
                   latent: Sequence[Any]) -> None:
    """One training step: ``objective`` plus the callbacks' extra loss terms backpropagated
    (None: the gradients are already there), their hooks after the backward pass, Adam, the
    binary layers' latent weights clipped, and the callbacks' step hooks."""
    if objective is not None:
        total = objective
        for cb in callbacks:
            term = cb.extra_loss(model)
            if term is not None:
                total = total + term
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        for cb in callbacks:
            cb.on_after_backward(model)
    adam_step(optimizer)
    for layer in latent:
        layer.clip_latent_()
    for cb in callbacks:
        cb.on_step_end(model)


def flip_bits(codes: torch.Tensor, p: float) -> torch.Tensor:
    """``codes`` (+-1) with each bit flipped independently with probability ``p``."""
    return torch.where(torch.rand(codes.shape, device=codes.device) < p, -codes, codes)
