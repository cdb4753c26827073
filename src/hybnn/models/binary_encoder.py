"""Binary encoders: images -> 200-bit codes, distilled from the frozen VAE
(:mod:`hybnn.pipeline.distill`), one student network each.

:class:`BinaryEncoder` has binary convolutions only, so HyBNN's whole network, encoder
included, runs in the packed XNOR/popcount engine as a chain of binary layers.
:class:`ResNetEncoder` is the binary ResNet-18 with one classifier output per code bit: its
stem, shortcuts and classifier stay real-valued, so it runs in the engine as a graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hybnn.binary.layers import BinaryConv2d, BinaryLinear
from hybnn.data.names import PREPS
from hybnn.models.binary_resnet import BinaryResNet, LearnableBias
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


class FixedShift(LearnableBias):
    """A constant per-channel shift, never trained: an input preparation inside the network,
    so the engine graph applies it too (as an affine node)."""

    def __init__(self, channels: int, shift: float) -> None:
        super().__init__(channels)
        with torch.no_grad():
            self.bias.fill_(shift)
        self.bias.requires_grad_(False)


class ResNetEncoder(nn.Module):
    """prep -> :class:`BinaryResNet` (binary weights) -> one logit per code bit.

    Takes images in [0, 1] like the VAE and prepares them as `hybnn train --model resnet18`
    does (``prep``, :mod:`hybnn.data.prep`: ``centered`` subtracts 0.5, ``unit`` keeps them);
    the real-valued stem reads the prepared floats, and the 16 block convolutions binarize
    their inputs. The ResNet's classifier has ``latent_bits`` outputs and the code is
    ``logits >= 0``, the VAE's convention.
    """

    def __init__(
        self,
        image_size: Sequence[int] = (28, 28),
        in_channels: int = 1,
        latent_bits: int = 200,
        width: int = 16,
        blocks: Sequence[int] = (4, 4, 4, 4),
        scaling: str = "none",
        stem: str = "cifar",
        prep: str = "centered",
    ) -> None:
        super().__init__()
        if latent_bits < 1 or prep not in PREPS or len(image_size) != 2:
            raise ValueError(f"ResNetEncoder needs latent_bits >= 1, a prep of "
                             f"{', '.join(PREPS)} and an image size (H, W) (got {latent_bits}, "
                             f"{prep!r}, {list(image_size)})")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.latent_bits = int(latent_bits)
        self.prep: nn.Module = (FixedShift(in_channels, -CENTER) if prep == "centered"
                                else nn.Identity())
        self.resnet = BinaryResNet(latent_bits, in_channels, width, blocks, scaling, stem,
                                   "binary", self.image_size)
        self.config: dict[str, Any] = {
            "image_size": list(self.image_size),
            "in_channels": int(in_channels),
            "latent_bits": self.latent_bits,
            "width": int(width),
            "blocks": [int(b) for b in blocks],
            "scaling": scaling,
            "stem": stem,
            "prep": prep,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-bit logits (N, latent_bits) of images (N, C, H, W) in [0, 1]."""
        return self.resnet(self.prep(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic binary code (bool tensor (N, latent_bits)): logits >= 0."""
        return self(x) >= 0
