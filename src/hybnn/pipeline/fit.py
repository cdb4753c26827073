"""Phase 3 entry points: train the BNN head on code stores, or a CNN baseline on images.

Both return the trained model and its history and, given ``out``, save the model artifact
(``hybnn.models.io``) with everything needed to reuse it: task, input preparation, encoder
fingerprint, training config, history and versions. A checkpoint is written to
``out/checkpoint.pt`` every epoch, so ``resume=True`` continues an interrupted run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybnn.artifacts import require_kind_or_absent, versions
from hybnn.binary.summary import deployed_bytes
from hybnn.data.dataset import Dataset
from hybnn.data.labels import LabelSpace
from hybnn.data.prep import prepare
from hybnn.errors import DataError
from hybnn.hooks import Callback, History
from hybnn.models.binary_cnn import BinaryCNN
from hybnn.models.bnn_head import BNNHead
from hybnn.models.float_cnn import FloatCNN
from hybnn.models.io import MODEL_KIND, save_model
from hybnn.pipeline.checkpoint import CHECKPOINT_NAME
from hybnn.pipeline.codes import CodeStore
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.train import fit_classifier
from hybnn.plots import plot_curves

IMAGE_ARCHS = {"bcnn": BinaryCNN, "fpcnn": FloatCNN}



def train_head(
    train: CodeStore,
    test: CodeStore | None,
    config: TrainConfig,
    hidden: Sequence[int] = (128,),
    scaling: str = "none",
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> tuple[BNNHead, History]:
    """Train a :class:`BNNHead` on packed codes (never on images)."""
    if out is not None:
        require_kind_or_absent(out, MODEL_KIND)  # before training, not after
    if test is not None:
        test.require_encoder(train.encoder_fingerprint, "the training code store")
    num_classes = train.num_classes  # the store refuses labels beyond its recorded classes
    if len(train) == 0 or num_classes < 2:
        raise DataError(f"training needs codes of at least 2 classes, got {len(train)} "
                        f"codes of {num_classes} class(es)")
    if test is not None and test.labels.size and int(test.labels.max()) >= num_classes:
        raise DataError(f"test codes have label {int(test.labels.max())}, but the training "
                        f"codes (task {train.meta.get('task')}) have {num_classes} classes")
    torch.manual_seed(config.seed)
    model = BNNHead(train.num_bits, num_classes, hidden, scaling)
    history = fit_classifier(
        model, train.tensors(), test.tensors() if test is not None else None, config,
        _checkpoint(out), resume, list(callbacks), progress, desc="train BNN head",
    )
    if out is not None:
        save_trained(out, model, history, config, {
            "encoder_fingerprint": train.encoder_fingerprint,
            "task": train.meta.get("task"),
            "source": train.meta.get("source"),
            "label_space": _head_labels(train, num_classes),
            **(extra or {}),
        })
    return model, history


def _head_labels(train: CodeStore, num_classes: int) -> dict[str, Any]:
    """The label space the codes carry (numbered indices for stores written before 0.2)."""
    return LabelSpace.from_json(train.meta.get("label_space"), num_classes).to_json()


def image_tensors(data: Dataset, prep: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(prepare(data.x, prep)), torch.from_numpy(data.y.astype(np.int64))


def build_image_model(arch: str, data: Dataset, scaling: str = "none") -> nn.Module:
    if arch == "bcnn":
        return BinaryCNN(data.image_size, data.x.shape[1], data.num_classes, scaling=scaling)
    if arch == "fpcnn":
        return FloatCNN(data.image_size, data.x.shape[1], data.num_classes)
    raise ValueError(f"unknown image model {arch!r}; choose one of {', '.join(IMAGE_ARCHS)}")


def train_image_model(
    arch: str,
    train: Dataset,
    test: Dataset | None,
    prep: str,
    config: TrainConfig,
    scaling: str = "none",
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> tuple[nn.Module, History]:
    """Train a baseline CNN (``bcnn`` binary, ``fpcnn`` full precision) on prepared images."""
    if out is not None:
        require_kind_or_absent(out, MODEL_KIND)  # before training, not after
    torch.manual_seed(config.seed)
    model = build_image_model(arch, train, scaling)
    history = fit_classifier(
        model, image_tensors(train, prep), image_tensors(test, prep) if test else None,
        config, _checkpoint(out), resume, list(callbacks), progress, desc=f"train {arch}",
    )
    if out is not None:
        save_trained(out, model, history, config, {"prep": prep, "source": train.name,
                                            "label_space": train.label_space.to_json(),
                                            **(extra or {})})
    return model, history


def _checkpoint(out: str | os.PathLike[str] | None) -> Path | None:
    return Path(out) / CHECKPOINT_NAME if out is not None else None


def save_trained(out: str | os.PathLike[str], model: nn.Module, history: History,
                 config: TrainConfig, extra: dict[str, Any]) -> None:
    """Save a trained classifier with its config, history, size and versions, and its
    curves (every trainer's artifact)."""
    save_model(out, model, train_config=asdict(config), history=history.epochs,
               deployed_bytes=deployed_bytes(model), versions=versions(), **extra)
    write_curves(history, Path(out))


def write_curves(history: History, out: Path) -> list[Path]:
    """``out/accuracy.png`` and ``out/loss.png``: train and (where evaluated) test per epoch."""
    written = []
    for metric, name, label in (("acc", "accuracy", "accuracy"),
                                ("loss", "loss", "cross-entropy loss")):
        curves = {split: history.series(f"{split}_{metric}") for split in ("train", "test")}
        curves = {k: v for k, v in curves.items() if v}
        if curves:
            written.append(plot_curves(curves, out / f"{name}.png", f"{label} per epoch",
                                       label))
    return written
