"""A ReActNet / Bi-Real Net style binary ResNet-18, the backbone ReBNN is evaluated on.

Each block wraps a single binary 3x3 convolution in its own shortcut (Bi-Real Net), so a
"ResNet-18" has 4 stages of 4 blocks = 16 binary convolutions:

    x -> LearnableBias (RSign shift) -> ApproxSign -> BinaryConv 3x3 -> BatchNorm -> + shortcut
      -> RPReLU (LearnableBias -> PReLU -> LearnableBias)

The first convolution, the 1x1 downsampling convolutions of the shortcuts (after a 2x2 average
pool, as in ReActNet) and the classifier stay full precision, as in every BNN of this family.

ReActNet trains in two steps: step 1 binarizes the activations only (``weights="real"``: the
block convolution is a :class:`RealWeightConv2d`), step 2 starts from step 1's weights and
binarizes them too (``weights="binary"``: a :class:`BinaryConv2d`); both keep the weight under
the same name, ``conv.weight``. :class:`FloatResNet` is the same network with nothing
binarized, the ceiling of the binary one and its distillation teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hybnn.binary.layers import PAD_VALUE, BinaryConv2d
from hybnn.binary.quantizers import approx_sign

STEMS = ("cifar", "imagenet")
WEIGHTS = ("binary", "real")


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


class RealWeightConv2d(nn.Module):
    """Step 1's block convolution: the input binarized by ApproxSign and padded with +1 as in
    :class:`BinaryConv2d`, the weights real-valued (same shape, initialisation and name)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding
        bound = 1.0 / (in_channels * kernel_size * kernel_size) ** 0.5
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size,
                                               kernel_size).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = approx_sign(x)
        if self.padding:
            p = self.padding
            x = F.pad(x, (p, p, p, p), value=PAD_VALUE)
        return F.conv2d(x, self.weight, stride=self.stride)


class BinaryBasicBlock(nn.Module):
    """One binary 3x3 convolution with its own residual shortcut (see module docstring).

    ``weights="real"`` keeps the weights real (step 1); ``activations="real"`` binarizes
    nothing (the float twin)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 scaling: str = "none", weights: str = "binary",
                 activations: str = "binary") -> None:
        super().__init__()
        self.shift = LearnableBias(in_channels)
        self.conv: nn.Module
        if activations == "real":
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        elif weights == "real":
            self.conv = RealWeightConv2d(in_channels, out_channels, 3, stride, padding=1)
        else:  # the input is binarized by ApproxSign inside the layer, after the shift
            self.conv = BinaryConv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                                     scaling=scaling, input_quantizer="approx_sign")
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = RPReLU(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            # ceil_mode: an odd side (7 of a 28x28 input) pools to the conv's ceil(7/2) = 4
            pool: nn.Module = (nn.AvgPool2d(2, stride, ceil_mode=True) if stride != 1
                               else nn.Identity())
            self.shortcut = nn.Sequential(
                pool, nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(self.shift(x)))
        return self.act(out + self.shortcut(x))


class BinaryResNet(nn.Module):
    """Binary ResNet for images (N, C, H, W); ``blocks=(4, 4, 4, 4)`` is ReActNet's ResNet-18.

    ``stem="cifar"`` uses a float 3x3 stride-1 convolution (28x28 and 32x32 inputs);
    ``stem="imagenet"`` a float 7x7 stride-2 convolution and a 3x3 max pool. ``width`` is the
    first stage's channel count (64 in the paper), doubled at every later stage.
    ``weights="real"`` is step 1 of the two-step recipe (binary activations only).
    ``image_size`` (H, W) records the inputs it was trained on (the network takes any size).
    """

    activations = "binary"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        blocks: Sequence[int] = (4, 4, 4, 4),
        scaling: str = "none",
        stem: str = "cifar",
        weights: str = "binary",
        image_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; use {' or '.join(STEMS)}")
        if weights not in WEIGHTS:
            raise ValueError(f"unknown weights {weights!r}; use {' or '.join(WEIGHTS)}")
        if width < 1 or not blocks or min(blocks) < 1:
            raise ValueError(f"a ResNet needs width >= 1 and blocks >= 1, got {width}, "
                             f"{list(blocks)}")
        if image_size is not None and len(image_size) != 2:
            raise ValueError(f"image_size is (height, width), got {list(image_size)}")
        self.config: dict[str, Any] = {
            "num_classes": int(num_classes),
            "in_channels": int(in_channels),
            "width": int(width),
            "blocks": [int(b) for b in blocks],
            "scaling": scaling,
            "stem": stem,
            "weights": weights,
            "image_size": None if image_size is None else [int(v) for v in image_size],
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
                layers.append(BinaryBasicBlock(ch, out, stride, scaling, weights,
                                               self.activations))
                ch = out
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


class FloatResNet(BinaryResNet):
    """:class:`BinaryResNet` with real weights and real activations (the float twin)."""

    activations = "real"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        blocks: Sequence[int] = (4, 4, 4, 4),
        stem: str = "cifar",
        image_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, width, blocks, "none", stem, "real",
                         image_size)
        for key in ("scaling", "weights"):
            del self.config[key]


def binary_resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 64,
                    scaling: str = "none", stem: str = "cifar",
                    weights: str = "binary") -> BinaryResNet:
    """ReActNet / Bi-Real Net ResNet-18: 16 binary 3x3 convolutions in 4 stages."""
    return BinaryResNet(num_classes, in_channels, width, (4, 4, 4, 4), scaling, stem, weights)
