"""Weight oscillation: how often the signs of a binary layer's latent weights flip.

Two per-layer ratios are logged every epoch by :class:`FlipMonitor`:

- ``flip_ratio/<layer>``: fraction of latent weights whose sign at the end of the epoch
  differs from their sign at the end of the previous epoch (the paper's epoch-wise
  oscillation ratio; a weight that flips and flips back within the epoch does not count);
- ``step_flip_ratio/<layer>``: fraction of latent weights whose sign flips in one optimizer
  step, averaged over the epoch's steps (counts every flip, back-and-forth ones included).

``flip_ratio`` and ``step_flip_ratio`` are the unweighted means over layers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hybnn.binary.layers import BinaryLayer, binary_layers
from hybnn.hooks import Callback, History

FLIP_KEY = "flip_ratio"
STEP_FLIP_KEY = "step_flip_ratio"


def flip_ratio(before: torch.Tensor, weight: torch.Tensor) -> float:
    """Fraction of ``weight``'s entries whose sign differs from the boolean ``before >= 0``."""
    return float(((weight >= 0) != before).to(torch.float32).mean())


class FlipMonitor(Callback):
    """Logs the per-layer sign-flip ratios of every binary layer (see module docstring)."""

    def __init__(self, per_step: bool = True) -> None:
        self.per_step = per_step
        self._layers: dict[str, BinaryLayer] = {}
        self._epoch_start: dict[str, torch.Tensor] = {}
        self._last: dict[str, torch.Tensor] = {}
        self._step_sum: dict[str, torch.Tensor] = {}
        self._steps = 0

    def on_train_begin(self, model: nn.Module) -> None:
        self._layers = dict(binary_layers(model))
        for name, layer in self._layers.items():
            self._epoch_start[name] = self._signs(layer)
            self._last[name] = self._epoch_start[name]
        self._reset_steps()

    @staticmethod
    def _signs(layer: BinaryLayer) -> torch.Tensor:
        return (layer.weight.detach() >= 0).clone()

    @torch.no_grad()
    def on_step_end(self, model: nn.Module) -> None:
        if not self.per_step:
            return
        for name, layer in self._layers.items():
            now = self._signs(layer)
            # Accumulate on the device; one host sync per epoch, not per step.
            self._step_sum[name] += (now != self._last[name]).to(torch.float32).mean()
            self._last[name] = now
        self._steps += 1

    def on_epoch_end(self, model: nn.Module, epoch: int, logs: dict[str, Any]) -> None:
        epoch_ratios, step_ratios = [], []
        for name, layer in self._layers.items():
            r = flip_ratio(self._epoch_start[name], layer.weight.detach())
            logs[f"{FLIP_KEY}/{name}"] = r
            epoch_ratios.append(r)
            self._epoch_start[name] = self._signs(layer)
            if self.per_step and self._steps:
                s = float(self._step_sum[name]) / self._steps
                logs[f"{STEP_FLIP_KEY}/{name}"] = s
                step_ratios.append(s)
        if epoch_ratios:
            logs[FLIP_KEY] = sum(epoch_ratios) / len(epoch_ratios)
        if step_ratios:
            logs[STEP_FLIP_KEY] = sum(step_ratios) / len(step_ratios)
        self._reset_steps()

    def _reset_steps(self) -> None:
        self._steps = 0
        self._step_sum = {n: torch.zeros((), device=layer.weight.device)
                          for n, layer in self._layers.items()}


def layer_flip_curves(history: History, key: str = FLIP_KEY) -> dict[str, list[float]]:
    """Per-layer flip-ratio curves (one value per epoch) from a history's logs."""
    prefix = f"{key}/"
    names = [k[len(prefix):] for k in (history.epochs[0] if history.epochs else {})
             if k.startswith(prefix)]
    return {n: history.series(prefix + n) for n in names}


def late_flip_ratio(history: History, key: str = FLIP_KEY, fraction: float = 0.25) -> float:
    """Mean of the layer-averaged flip ratio over the last ``fraction`` of epochs (>= 1)."""
    values = history.series(key)
    if not values:
        return float("nan")
    n = max(1, math.ceil(len(values) * fraction))
    tail = values[-n:]
    return sum(tail) / len(tail)
