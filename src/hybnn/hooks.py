"""Training hooks and per-epoch history: the leaf that training loops and methods share.

:class:`Callback` is how a method such as ReBNN plugs into :func:`hybnn.pipeline.train.
fit_classifier` (extra loss terms, hooks after the backward pass and each step, per-epoch
metrics); :class:`History` is what every training run returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class History:
    """Per-epoch records: epoch, train_loss, train_acc, test_loss, test_acc, seconds, ..."""

    epochs: list[dict[str, Any]] = field(default_factory=list)

    def last(self, key: str, default: float = float("nan")) -> float:
        return float(self.epochs[-1].get(key, default)) if self.epochs else default

    def series(self, key: str) -> list[float]:
        return [float(e[key]) for e in self.epochs if key in e]

    def train_seconds_per_epoch(self) -> float:
        s = self.series("seconds")
        return sum(s) / len(s) if s else float("nan")


class Callback:
    """Hooks into :func:`fit_classifier`; every method is optional."""

    def on_train_begin(self, model: nn.Module) -> None:
        """Called once before the first (or resumed) epoch."""

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to the task loss of every step (e.g. a reconstruction loss)."""
        return None

    def on_after_backward(self, model: nn.Module) -> None:
        """Called after ``loss.backward()``, before the optimizer step (gradients present)."""

    def on_step_end(self, model: nn.Module) -> None:
        """Called after the optimizer step and latent-weight clipping."""

    def on_epoch_end(self, model: nn.Module, epoch: int, logs: dict[str, Any]) -> None:
        """Called after each epoch; may add JSON-able entries to ``logs``."""
