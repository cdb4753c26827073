"""A ReActNet / Bi-Real Net style binary ResNet-18, the backbone ReBNN is evaluated on.

Each block wraps a single binary 3x3 convolution in its own shortcut (Bi-Real Net), so a
"ResNet-18" has 4 stages of 4 blocks = 16 binary convolutions:

    x -> LearnableBias (RSign shift) -> ApproxSign -> BinaryConv 3x3 -> BatchNorm -> + shortcut
      -> RPReLU (LearnableBias -> PReLU -> LearnableBias)

The first convolution, the 1x1 downsampling convolutions of the shortcuts (after a 2x2 average
pool, as in ReActNet) and the classifier stay full precision, as in every BNN of this family.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybnn.binary.layers import BinaryConv2d


class LearnableBias(nn.Module):
    """Adds a learned per-channel shift (ReActNet's RSign threshold / RPReLU offsets)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class RPReLU(nn.Module):
    """ReActNet's RPReLU: shift, per-channel PReLU, shift."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.shift_in = LearnableBias(channels)
        self.prelu = nn.PReLU(channels, init=0.25)
        self.shift_out = LearnableBias(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift_out(self.prelu(self.shift_in(x)))


class BinaryBasicBlock(nn.Module):
    """One binary 3x3 convolution with its own residual shortcut (see module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 scaling: str = "none") -> None:
        super().__init__()
        self.shift = LearnableBias(in_channels)
        # The input is binarized by ApproxSign inside the layer, after the learned shift.
        self.conv = BinaryConv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                                 scaling=scaling, input_quantizer="approx_sign")
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = RPReLU(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            pool: nn.Module = nn.AvgPool2d(2, stride) if stride != 1 else nn.Identity()
            self.shortcut = nn.Sequential(
                pool, nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(self.shift(x)))
        return self.act(out + self.shortcut(x))


class BinaryResNet(nn.Module):
    """Binary ResNet for images (N, C, H, W); ``blocks=(4, 4, 4, 4)`` is ReActNet's ResNet-18.

    ``stem="small"`` uses a float 3x3 stride-1 convolution (CIFAR, MNIST-sized inputs);
    ``stem="imagenet"`` a float 7x7 stride-2 convolution and a 3x3 max pool. ``width`` is the
    first stage's channel count (64 in the paper), doubled at every later stage.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        blocks: Sequence[int] = (4, 4, 4, 4),
        scaling: str = "none",
        stem: str = "small",
    ) -> None:
        super().__init__()
        if stem not in ("small", "imagenet"):
            raise ValueError(f"unknown stem {stem!r}; use small or imagenet")
        self.config = {
            "num_classes": int(num_classes),
            "in_channels": int(in_channels),
            "width": int(width),
            "blocks": [int(b) for b in blocks],
            "scaling": scaling,
            "stem": stem,
        }
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width), nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            )
        layers: list[nn.Module] = []
        ch = width
        for stage, count in enumerate(blocks):
            out = width * 2**stage
            for b in range(count):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BinaryBasicBlock(ch, out, stride, scaling))
                ch = out
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def binary_resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 64,
                    scaling: str = "none", stem: str = "small") -> BinaryResNet:
    """ReActNet / Bi-Real Net ResNet-18: 16 binary 3x3 convolutions in 4 stages."""
    return BinaryResNet(num_classes, in_channels, width, (4, 4, 4, 4), scaling, stem)
