"""Sign quantizers and their straight-through estimators (STE).

Zero convention: ``sign(0) = +1`` everywhere in hybnn, as in the BNN literature and in the
packed engine (a bit encodes the sign, there is no third value). ``torch.sign`` maps 0 to 0,
which would hide the paper's baseline trap: with pixels in [0, 1], every pixel is >= 0, so
every binarized input is +1 and a binary CNN sees a blank image.

Forward of every quantizer here is ``sign(x)``; they differ only in the backward pass:

- ``ste_sign``   (clipped identity / hardtanh STE):  d/dx = 1 if |x| <= 1 else 0
- ``approx_sign`` (Bi-Real Net ApproxSign): d/dx = 2 - 2|x| if |x| <= 1 else 0
- ``identity_sign`` (plain STE): d/dx = 1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Quantizer = Callable[[torch.Tensor], torch.Tensor]


def sign(x: torch.Tensor) -> torch.Tensor:
    """Sign with sign(0) = +1, no gradient.

    ``copysign(1, x + 0.0)``: adding +0.0 turns -0.0 into +0.0, so zeros of either sign give
    +1 like ``x >= 0`` does; one fused kernel, ~13x faster than ``torch.where`` on CPU (the
    head's training step is bound by it). NaN, which training refuses, keeps its sign bit.
    """
    return torch.copysign(torch.ones((), dtype=x.dtype, device=x.device), x.detach() + 0.0)


class _SteSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        # 1 + eps is the next value above 1 in x's dtype: the fused kernel passes the gradient
        # on the open interval, so this keeps |x| = 1 (where clipped weights sit) inside it
        edge = 1.0 + torch.finfo(x.dtype).eps
        return torch.ops.aten.hardtanh_backward(grad, x, -edge, edge)


class _ApproxSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)


class _IdentitySign(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return sign(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def ste_sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) forward; clipped-identity (hardtanh) gradient backward."""
    return _SteSign.apply(x)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) forward; ApproxSign (piecewise-quadratic) gradient backward."""
    return _ApproxSign.apply(x)


def identity_sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) forward; unclipped identity gradient backward."""
    return _IdentitySign.apply(x)


QUANTIZERS: dict[str, Quantizer] = {
    "ste_sign": ste_sign,
    "approx_sign": approx_sign,
    "identity_sign": identity_sign,
}


def get_quantizer(name: str | Quantizer) -> Quantizer:
    """Look a quantizer up by name, or pass a callable through."""
    if callable(name):
        return name
    try:
        return QUANTIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown quantizer {name!r}; choose one of {', '.join(sorted(QUANTIZERS))}"
        ) from None
