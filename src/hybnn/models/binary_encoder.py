"""A fully binary encoder: images -> 200-bit codes with binary convolutions only.

It is distilled from the frozen VAE (:mod:`hybnn.pipeline.distill`) so that HyBNN's whole
network, encoder included, runs in the packed XNOR/popcount engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hybnn.binary.layers import BinaryConv2d, BinaryLinear
from hybnn.models.conv_stack import CONV_CHANNELS, conv_out_size

CENTER = 0.5  # the encoder binarizes x - 0.5: sign(0) = +1 would make unit pixels all +1


class BinaryEncoder(nn.Module):
    """x - 0.5 -> 3 x [BinaryConv 3x3/2 -> BN] -> BinaryFC latent_bits -> BN -> logits.

    Takes images in [0, 1] like the VAE. Each conv binarizes its input by sign (the first one
    the centred image); the last batch norm gives one logit per bit and the code is
    ``logits >= 0`` (bit 1 = +1), the VAE's convention, so its sign feeds a BNN head as is.
    """

    def __init__(
        self,
        image_size: tuple[int, int] = (28, 28),
        in_channels: int = 1,
        latent_bits: int = 200,
        channels: Sequence[int] = CONV_CHANNELS,
        scaling: str = "none",
    ) -> None:
        super().__init__()
        if latent_bits < 1 or len(channels) != 3 or any(c < 1 for c in channels):
            raise ValueError(f"BinaryEncoder needs latent_bits >= 1 and three positive conv "
                             f"widths (got {latent_bits}, {list(channels)})")
        self.config: dict[str, Any] = {
            "image_size": [int(image_size[0]), int(image_size[1])],
            "in_channels": int(in_channels),
            "latent_bits": int(latent_bits),
            "channels": [int(c) for c in channels],
            "scaling": scaling,
        }
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.latent_bits = int(latent_bits)
        convs: list[nn.Module] = []
        ch = in_channels
        for out in channels:
            convs += [BinaryConv2d(ch, out, 3, stride=2, padding=1, scaling=scaling),
                      nn.BatchNorm2d(out)]
            ch = out
        self.features = nn.Sequential(*convs)
        flat = ch * conv_out_size(image_size[0]) * conv_out_size(image_size[1])
        self.latent = nn.Sequential(BinaryLinear(flat, latent_bits, scaling=scaling),
                                    nn.BatchNorm1d(latent_bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-bit logits (N, latent_bits) of images (N, C, H, W) in [0, 1]."""
        return self.latent(self.features(x - CENTER).flatten(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic binary code (bool tensor (N, latent_bits)): logits >= 0."""
        return self(x) >= 0
