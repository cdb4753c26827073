"""Elastic weight consolidation (Kirkpatrick et al. 2017) as a training callback.

After a task, :meth:`EWC.consolidate` stores the parameters θ* and adds the diagonal of the
empirical Fisher information F (mean squared per-sample gradient of the log-likelihood, in
eval mode) to a running sum ("online" EWC over tasks). While later tasks train, every step
adds λ/2 · Σ F (θ − θ*)². For binary layers θ are the latent weights the STE trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybnn.hooks import Callback


class EWC(Callback):
    def __init__(self, strength: float, max_samples: int = 256, seed: int = 0) -> None:
        self.strength = float(strength)
        self.max_samples = max_samples
        self.seed = seed
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    @property
    def nbytes(self) -> int:
        """Bytes kept between tasks: the Fisher diagonal and the anchor parameters."""
        return int(sum(t.numel() * t.element_size()
                       for d in (self.fisher, self.anchor) for t in d.values()))

    def consolidate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add the Fisher diagonal of (x, y) under ``model`` and anchor at its weights."""
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        was_training = model.training
        model.eval()
        g = torch.Generator().manual_seed(self.seed)
        pick = torch.randperm(len(y), generator=g)[:self.max_samples]
        device = next(model.parameters()).device
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        for i in pick.tolist():
            model.zero_grad(set_to_none=True)
            logits = model(x[i:i + 1].to(device))
            F.cross_entropy(logits, y[i:i + 1].to(device)).backward()
            for n, p in params.items():
                if p.grad is not None:
                    total[n] += p.grad.detach() ** 2
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        for n, p in params.items():
            fisher = total[n] / max(len(pick), 1)
            self.fisher[n] = self.fisher[n] + fisher if n in self.fisher else fisher
            self.anchor[n] = p.detach().clone()

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        if not self.fisher:
            return None
        terms = [(self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
                 for n, p in model.named_parameters() if n in self.fisher]
        return 0.5 * self.strength * torch.stack(terms).sum()
