"""The epoch loop every trainer runs (pretrain, train, distill, a federated client's round).

One place for what they share: the learning-rate schedule, the seeded order of every epoch,
skipping a batch of one sample (batch norm cannot train on it), the timing, a non-finite
loss refused, a checkpoint after every epoch and the resume from it (a run killed at any
point, ``kill -9`` included, continues from its last finished epoch), and progress that
reports each epoch's loss and accuracy. A trainer gives the loop its epoch body.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybnn.errors import DataError
from hybnn.hooks import History
from hybnn.pipeline.checkpoint import load_checkpoint, save_checkpoint
from hybnn.pipeline.config import scheduled_lr
from hybnn.progress import EpochReport


@dataclass(frozen=True)
class Schedule:
    """How many epochs, at which learning rate, in which seeded order of ``batch_size``."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    schedule: str = "cosine"

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (0-based) (:func:`scheduled_lr`)."""
        return scheduled_lr(self.lr, epoch, self.epochs, self.schedule)

    def batches(self, n: int, epoch: int) -> Iterator[torch.Tensor]:
        """The index batches of ``epoch`` over ``n`` samples, in a seeded order; torch's own
        generator reseeded too, so augmentation and noise repeat on a resumed run."""
        torch.manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            if len(idx) < 2 and n > 1:  # batch norm cannot train on one sample
                continue
            yield idx


EpochBody = Callable[[int, Iterator[torch.Tensor]], dict[str, Any]]
EpochEnd = Callable[[int, dict[str, Any]], None]


def run_epochs(schedule: Schedule, n: int, model: nn.Module, optimizer: torch.optim.Optimizer,
               body: EpochBody, *, desc: str, progress: bool = True,
               checkpoint: Path | None = None, resume: bool = False, tag: str = "",
               after: EpochEnd | None = None, history: History | None = None,
               write_checkpoints: bool = True) -> History:
    """Run ``body(epoch, batches)`` for every epoch not yet done; its dict (a ``loss`` or
    ``train_loss`` key first among what it reports) goes into the history with ``epoch``,
    ``seconds`` (the body's time) and ``lr``. ``after(epoch, logs)`` may add held-out
    results (not timed). With ``checkpoint``, each finished epoch is saved there, and
    ``resume`` continues from it when it holds a run of the same ``tag``; with
    ``write_checkpoints=False`` it is only read (the ranks of a distributed run but the
    first)."""
    history = history if history is not None else History()
    start = 0
    if checkpoint is not None and resume and checkpoint.is_file():
        start, history = load_checkpoint(checkpoint, model, optimizer, tag)
    report = EpochReport(desc, schedule.epochs, start, progress)
    try:
        for epoch in range(start, schedule.epochs):
            lr = schedule.learning_rate(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            t0 = time.perf_counter()
            metrics = body(epoch, schedule.batches(n, epoch))
            logs: dict[str, Any] = {"epoch": epoch + 1, **metrics,
                                    "seconds": time.perf_counter() - t0, "lr": lr}
            loss = float(metrics["train_loss"] if "train_loss" in metrics else metrics["loss"])
            if not math.isfinite(loss):
                raise DataError(f"{desc}: training diverged (loss is {loss}) at epoch "
                                f"{epoch + 1}")
            if after is not None:
                after(epoch, logs)
            history.epochs.append(logs)
            report.epoch(logs)
            if checkpoint is not None and write_checkpoints:
                save_checkpoint(checkpoint, model, optimizer, epoch + 1, history, tag)
    finally:
        report.close()
    return history
