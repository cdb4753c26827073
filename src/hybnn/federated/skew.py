"""Client losses for label skew (``--skew-loss``): FedRS and FedLC.

A client that holds few of the federation's classes pulls the shared head towards them:
its softmax pushes the logits of every class it lacks down at every step, and the server
averages those pushes. Both methods change only the logits the *local loss* sees while the
client trains; the model, its evaluation and what it uploads are unchanged.

- ``fedrs``, restricted softmax (Li & Zhan, KDD 2021): the logit of a class this client does
  not hold is multiplied by ``alpha`` in [0, 1] (``--restricted-alpha``): 1 is plain
  cross-entropy, 0 drops the absent classes from the softmax.
- ``fedlc``, logit calibration (Zhang et al., ICML 2022): every logit is lowered by
  ``tau · n_c^(-1/4)`` (``--calibration-tau``), ``n_c`` the client's count of class c. Rare
  classes are pushed down less; an absent class (``n_c`` taken as 1e-8) by ``100·tau``,
  which takes it out of the softmax.

Both are callbacks of the one training loop (:class:`hybnn.hooks.Callback`): a forward hook
on the model, active in training mode only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hybnn.federated.config import FedConfig
from hybnn.hooks import Callback

ABSENT_COUNT = 1e-8  # FedLC's count of a class the client does not hold (as in its paper's code)


def restricted_logits(logits: torch.Tensor, present: torch.Tensor, alpha: float
                      ) -> torch.Tensor:
    """FedRS: ``logits[:, c] · (1 if present[c] else alpha)``."""
    scale = torch.where(present, 1.0, float(alpha)).to(logits.dtype)
    return logits * scale


def calibrated_logits(logits: torch.Tensor, counts: torch.Tensor, tau: float) -> torch.Tensor:
    """FedLC: ``logits[:, c] - tau · n_c^(-1/4)``, ``n_c = counts[c]`` (0 counted as 1e-8)."""
    n = counts.to(logits.dtype).clamp_min(ABSENT_COUNT)
    return logits - float(tau) * n.pow(-0.25)


class SkewLoss(Callback):
    """The local loss of a label-skewed client: while the model trains, its logits pass
    through FedRS's or FedLC's adjustment (``kind``), from this client's training labels
    ``labels``. In evaluation mode the model's output is untouched."""

    def __init__(self, kind: str, labels: torch.Tensor, alpha: float = 0.5,
                 tau: float = 1.0) -> None:
        if kind not in ("fedrs", "fedlc"):
            raise ValueError(f"unknown skew loss {kind!r}")
        self.kind, self.alpha, self.tau = kind, float(alpha), float(tau)
        self.labels = labels.detach().to("cpu", torch.long)
        self._hook: Any = None

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        counts = torch.bincount(self.labels, minlength=logits.shape[1]).to(logits.device)
        if self.kind == "fedrs":
            return restricted_logits(logits, counts > 0, self.alpha)
        return calibrated_logits(logits, counts, self.tau)

    def on_train_begin(self, model: nn.Module) -> None:
        if self._hook is not None:
            self._hook.remove()

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
            return self.adjust(output) if module.training else None

        self._hook = model.register_forward_hook(hook)


def skew_callbacks(cfg: FedConfig, labels: torch.Tensor) -> Sequence[Callback]:
    """The callbacks of ``cfg.skew_loss`` for a client with training labels ``labels``."""
    if cfg.skew_loss == "none":
        return ()
    return (SkewLoss(cfg.skew_loss, labels, cfg.restricted_alpha, cfg.calibration_tau),)
