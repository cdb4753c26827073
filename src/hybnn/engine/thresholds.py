"""Fold batch norm (+ the next layer's sign) into integer thresholds, and the last one into floats.

A binary layer computes ``d = K - 2 * popcount(a XOR w)`` (the ±1 dot product); PyTorch then
evaluates ``sign(BN(alpha * d))`` in float32 with sign(0) = +1. That sign is a monotone function
of the integer ``d``, so it is one compare per channel. Rather than re-deriving PyTorch's float
arithmetic (its batch-norm kernel uses fused multiply-adds), the threshold is found by asking
the batch-norm module itself, by bisection over the reachable ``d``: the folded layer then
agrees with PyTorch bit for bit, ties at exactly 0 included. Channels where the sign *falls*
with ``d`` (negative BN scale or negative alpha) get their weights negated, so every channel
reads: output -1 (bit 1) iff ``popcount > threshold``. Constant channels (scale exactly 0) get
threshold ``K`` (always +1) or ``-1`` (always -1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_VERIFY_LIMIT = 1 << 22  # check every reachable d when (K + 1) * channels is at most this


def _check_bn(bn: nn.Module) -> _BatchNorm:
    """``bn`` as a batch norm with running statistics, or a ValueError."""
    if not isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d):
        raise ValueError(
            f"expected a BatchNorm1d/2d after the binary layer, got {type(bn).__name__}"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("batch norm without running statistics cannot be folded")
    params = [bn.running_mean, bn.running_var]
    if bn.affine:
        params += [bn.weight, bn.bias]
    if not all(bool(torch.isfinite(p).all()) for p in params):
        raise ValueError("batch norm has non-finite parameters or statistics")
    return bn


def _bn_eval(bn: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """BN of z (rows, C) in eval mode, through the module itself."""
    was_training = bn.training
    bn.eval()
    try:
        with torch.no_grad():
            shaped = z if isinstance(bn, nn.BatchNorm1d) else z[:, :, None, None]
            return bn(shaped).reshape(z.shape)
    finally:
        bn.train(was_training)


def _positive(
    bn: _BatchNorm, alpha: torch.Tensor | None, kbits: int, pops: torch.Tensor
) -> torch.Tensor:
    """sign(BN(alpha * d)) >= 0 for d = K - 2 * pops, per channel; pops (rows, C)."""
    z = (kbits - 2 * pops).to(torch.float32)
    if alpha is not None:
        z = z * alpha
    return _bn_eval(bn, z) >= 0


def sign_thresholds(
    bn: nn.Module, alpha: torch.Tensor | None, kbits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (threshold int32, flip int8) so that sign(BN(alpha*d)) = -1 iff pop' > threshold.

    ``pop'`` is the popcount against the weights negated where ``flip == -1``.
    """
    bn = _check_bn(bn)
    channels = int(bn.num_features)
    if alpha is not None:
        alpha = alpha.detach().to(torch.float32).reshape(channels)
        if not bool(torch.isfinite(alpha).all()):
            raise ValueError("weight scale alpha has non-finite values")
    zeros = torch.zeros(1, channels, dtype=torch.long)
    at_max = _positive(bn, alpha, kbits, zeros)[0]  # d = +K
    at_min = _positive(bn, alpha, kbits, zeros + kbits)[0]  # d = -K
    constant = at_max == at_min
    flip = (~at_max) & at_min  # +1 only for small d: negate the weights
    # bisection over q in [0, K] on h(q) = positive(d = K - 2q) (flipped: q -> K - q)
    lo = torch.zeros(channels, dtype=torch.long)
    hi = torch.where(constant, torch.ones_like(lo), torch.full_like(lo, kbits))
    while bool((hi - lo > 1).any()):
        mid = (lo + hi) // 2
        pops = torch.where(flip, kbits - mid, mid)
        ok = _positive(bn, alpha, kbits, pops[None])[0]
        lo = torch.where(ok & ~constant, mid, lo)
        hi = torch.where(ok | constant, hi, mid)
    thresholds = torch.where(constant, torch.where(at_max, kbits, -1), lo)
    if (kbits + 1) * channels <= _VERIFY_LIMIT:
        _verify(bn, alpha, kbits, thresholds, flip)
    return thresholds.numpy().astype(np.int32), np.where(flip.numpy(), -1, 1).astype(np.int8)


def _verify(bn: _BatchNorm, alpha: torch.Tensor | None, kbits: int, thresholds: torch.Tensor,
            flip: torch.Tensor) -> None:
    q = torch.arange(kbits + 1)[:, None].expand(kbits + 1, thresholds.numel())
    pops = torch.where(flip[None], kbits - q, q)
    if not bool((_positive(bn, alpha, kbits, pops) == (q <= thresholds[None])).all()):
        raise ValueError("batch norm is not monotone in the accumulator; cannot fold it")


def output_affine(bn: nn.Module, alpha: torch.Tensor | None) -> tuple[np.ndarray, ...]:
    """(alpha, scale, shift) float32: logits = fma(alpha * d, scale, shift), as PyTorch computes.

    PyTorch's eval batch norm is ``fma(z, g * invstd, b - mean * g * invstd)``; the shift is read
    from the module itself (its output at z = 0), the scale follows its float32 formula.
    """
    bn = _check_bn(bn)
    channels = int(bn.num_features)
    assert bn.running_var is not None  # checked by _check_bn
    var = bn.running_var.detach().to(torch.float32)
    invstd = 1.0 / torch.sqrt(var + torch.tensor(bn.eps, dtype=torch.float32))
    weight = bn.weight.detach().to(torch.float32) if bn.affine else torch.ones(channels)
    scale = (weight * invstd).numpy().astype(np.float32)
    shift = _bn_eval(bn, torch.zeros(1, channels))[0].numpy().astype(np.float32)
    if alpha is None:
        a = np.ones(channels, dtype=np.float32)
    else:
        a = alpha.detach().to(torch.float32).reshape(channels).numpy().astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError("weight scale alpha has non-finite values")
    return a, scale, shift
