"""ReBNN (Xu et al., AAAI 2023, arXiv 2302.00956): learned scales + weighted reconstruction loss.

Every binary layer computes with ``ŵ = α ∘ sign(w)``, α a learned per-output-channel scale
(``scaling="learned"``), and training adds the weighted reconstruction loss

    L_R = Σ_i γ_i / 2 · ‖w_i − α_i sign(w_i)‖²        (i: output channel)

whose gradients (sign(w) held constant, as its derivative is zero almost everywhere) are

    ∂L_R/∂w_i = γ_i (w_i − α_i sign(w_i))
    ∂L_R/∂α_i = −γ_i Σ_j (w_ij − α_i sign(w_ij)) sign(w_ij)

The balanced parameter γ_i is recomputed every step (the paper's resilient γ):

    γ_i = (fraction of channel i's latent weights whose sign flipped since the previous step)
          × max_j |∂L/∂ŵ_ij|

The official code clamps γ into what looks like [1e-5, 2e-4], but it applies the upper bound
1e-5 first and the lower bound 2e-4 second, so γ is the constant 2e-4 whatever the flips and
gradients (:func:`official_clamp`; see docs/rebnn.md). ``ReBNN(gamma="official")`` reproduces
that behaviour so the two can be compared.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from hybnn.binary.layers import BinaryLayer, binary_layers
from hybnn.binary.quantizers import sign
from hybnn.hooks import Callback

OFFICIAL_THRESHOLDS = (1e-5, 2e-4)
OFFICIAL_GAMMA = 2e-4
GAMMA_MODES = ("paper", "official")


def _per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-output-channel vector to broadcast against a weight tensor."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def channel_flip_fraction(prev_positive: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per output channel, the fraction of weights whose sign differs from ``prev_positive``.

    ``prev_positive`` is the boolean ``w >= 0`` of an earlier step (sign(0) = +1).
    """
    return ((weight >= 0) != prev_positive).flatten(1).to(weight.dtype).mean(dim=1)


def paper_gamma(flip_fraction: torch.Tensor, grad_w_hat: torch.Tensor) -> torch.Tensor:
    """γ_i = flip_fraction_i × max_j |∂L/∂ŵ_ij| (one value per output channel)."""
    return flip_fraction * grad_w_hat.detach().abs().flatten(1).amax(dim=1)


def official_clamp(gamma: torch.Tensor) -> torch.Tensor:
    """The official code's clamp: ``min(γ, 1e-5)`` first, then ``max(·, 2e-4)``.

    Since ``min(γ, 1e-5) <= 1e-5 < 2e-4``, the result is 2e-4 for every finite input.
    """
    lo, hi = OFFICIAL_THRESHOLDS
    return torch.clamp(torch.clamp(gamma, max=lo), min=hi)


def reconstruction_loss(
    weight: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    """L_R = Σ_i γ_i/2 · ‖w_i − α_i sign(w_i)‖² (differentiable in ``weight`` and ``alpha``)."""
    r = weight - _per_channel(alpha, weight) * sign(weight)
    return (0.5 * gamma * r.pow(2).flatten(1).sum(dim=1)).sum()


def reconstruction_grads(
    weight: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L_R/∂w, ∂L_R/∂α) of :func:`reconstruction_loss`, in closed form."""
    s = sign(weight)
    r = weight - _per_channel(alpha, weight) * s
    return _per_channel(gamma, weight) * r, -gamma * (r * s).flatten(1).sum(dim=1)


class ReBNN(Callback):
    """Adds the weighted reconstruction gradients to every binary layer after each backward.

    ``gamma``: ``"paper"`` (the resilient γ above), ``"official"`` (the paper's γ passed through
    the official code's clamp, i.e. the constant 2e-4), or a float used as a constant γ.
    Every binary layer must use ``scaling="learned"``. Per-epoch logs gain ``rebnn_gamma``
    (mean γ over channels and steps, all layers) and ``rebnn_gamma/<layer>``.
    """

    def __init__(self, gamma: str | float = "paper") -> None:
        if isinstance(gamma, str) and gamma not in GAMMA_MODES:
            raise ValueError(f"unknown gamma {gamma!r}; use {', '.join(GAMMA_MODES)} or a float")
        self.gamma = gamma
        self._layers: dict[str, BinaryLayer] = {}
        self._prev: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}
        self._gamma_sum: dict[str, torch.Tensor] = {}
        self._steps = 0

    def on_train_begin(self, model: nn.Module) -> None:
        self._layers = dict(binary_layers(model))
        if not self._layers:
            raise ValueError("ReBNN needs a model with binary layers")
        bad = [n for n, layer in self._layers.items() if layer.scaling != "learned"]
        if bad:
            raise ValueError(f"ReBNN needs scaling='learned' in every binary layer; "
                             f"{', '.join(bad)} use another scaling")
        for name, layer in self._layers.items():
            layer.weight_grad_hook = partial(self._capture, name)
            self._prev[name] = (layer.weight.detach() >= 0).clone()
        self._reset_stats()

    def _capture(self, name: str, grad: torch.Tensor) -> None:
        g = grad.detach()
        self._grads[name] = g.clone() if name not in self._grads else self._grads[name] + g

    def layer_gamma(self, name: str, grad_w_hat: torch.Tensor) -> torch.Tensor:
        """γ of one layer for the current step (flips since the previous step, ∂L/∂ŵ)."""
        w = self._layers[name].weight.detach()
        if isinstance(self.gamma, float | int):
            return torch.full((w.shape[0],), float(self.gamma), dtype=w.dtype, device=w.device)
        g = paper_gamma(channel_flip_fraction(self._prev[name], w), grad_w_hat)
        return official_clamp(g) if self.gamma == "official" else g

    @torch.no_grad()
    def on_after_backward(self, model: nn.Module) -> None:
        for name, layer in self._layers.items():
            grad = self._grads.pop(name, None)
            w = layer.weight
            if grad is not None:
                if self.gamma == "paper":  # γ depends on the gradient: the whole batch's
                    grad = _mean_over_processes(grad)
                gamma = self.layer_gamma(name, grad)
                dw, dalpha = reconstruction_grads(w.detach(), layer.alpha.detach(), gamma)
                _add_grad(w, dw)
                _add_grad(layer.alpha, dalpha)
                self._gamma_sum[name] += gamma.mean()
            self._prev[name] = w.detach() >= 0
        self._steps += 1

    def on_epoch_end(self, model: nn.Module, epoch: int, logs: dict[str, Any]) -> None:
        steps = max(self._steps, 1)
        per_layer = {n: float(s) / steps for n, s in self._gamma_sum.items()}
        for name, value in per_layer.items():
            logs[f"rebnn_gamma/{name}"] = value
        logs["rebnn_gamma"] = sum(per_layer.values()) / max(len(per_layer), 1)
        self._reset_stats()

    def _reset_stats(self) -> None:
        self._steps = 0
        self._gamma_sum = {n: torch.zeros((), device=layer.weight.device)
                           for n, layer in self._layers.items()}


def _mean_over_processes(grad: torch.Tensor) -> torch.Tensor:
    """∂L/∂ŵ of the whole batch in a data-parallel run (each process sees its share; the
    same γ on every process keeps their weights equal)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return grad
    grad = grad.contiguous()
    dist.all_reduce(grad)
    return grad / dist.get_world_size()


def _add_grad(p: torch.Tensor, g: torch.Tensor) -> None:
    if p.grad is None:
        p.grad = g.clone()
    else:
        p.grad.add_(g)
