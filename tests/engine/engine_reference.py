"""Torch references for the engine tests: random batch norms and exact integer accumulators."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybnn.binary.layers import PAD_VALUE, BinaryConv2d, BinaryLinear
from hybnn.binary.quantizers import sign
from hybnn.models import BinaryCNN, BNNHead, FullyBinaryHyBNN
from hybnn.models.binary_encoder import CENTER


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics with negative and zero scales, exact-zero crossings, random alpha.

    Exact zero crossings are only planted in unscaled models: with a scale alpha, PyTorch's own
    float32 sum of +-alpha terms carries rounding error (1e-8 where the exact dot product is 0),
    so its sign at an exact tie is float noise, while the engine uses the exact integer.
    """
    g = torch.Generator().manual_seed(seed)
    ties = model.config.get("scaling", "none") == "none"
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.randn(c, generator=g))
                m.weight[torch.rand(c, generator=g) < 0.1] = 0.0
                m.bias.copy_(torch.randn(c, generator=g) * 2)
                m.running_mean.copy_(torch.randn(c, generator=g) * 6)
                m.running_var.copy_(torch.rand(c, generator=g) * 20 + 0.05)
                # some channels cross zero exactly at an integer accumulator: sign(0) = +1
                tie = torch.rand(c, generator=g) < (0.2 if ties else 0.0)
                m.bias[tie] = 0.0
                m.running_mean[tie] = torch.randint(-8, 9, (int(tie.sum()),), generator=g).float()
            if getattr(m, "alpha", None) is not None:
                m.alpha.copy_(torch.randn(m.alpha.shape, generator=g).abs() + 0.01)
                m.alpha[torch.rand(m.alpha.shape, generator=g) < 0.2] *= -1
    return model.eval()


def _pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    if isinstance(model, FullyBinaryHyBNN):
        mods = [*model.encoder.features, *model.encoder.latent, *model.head.net]
    else:
        mods = list(model.net) if isinstance(model, BNNHead) else [*model.features,
                                                                    *model.classifier]
    return list(zip(mods[0::2], mods[1::2], strict=True))


@torch.no_grad()
def accumulators(model: BNNHead | BinaryCNN | FullyBinaryHyBNN,
                 x: torch.Tensor) -> list[torch.Tensor]:
    """Each binary layer's exact ±1 dot products, from the model's sign weights (int64)."""
    model.eval()
    a = sign(x - CENTER if isinstance(model, FullyBinaryHyBNN) else x).double()
    out = []
    for layer, bn in _pairs(model):
        w = sign(layer.weight).double()
        if isinstance(layer, BinaryConv2d):
            p = layer.padding
            acc = F.conv2d(F.pad(a, (p, p, p, p), value=PAD_VALUE), w, stride=layer.stride)
        else:
            assert isinstance(layer, BinaryLinear)
            acc = F.linear(a.flatten(1), w)
        out.append(acc.round().long())
        alpha = layer.weight_scale()
        z = acc.float()
        if alpha is not None:
            z = z * alpha.view(-1, *([1] * (z.dim() - 2)))
        a = sign(bn(z)).double()
    return out
