"""The paper's baseline: a plain binary CNN whose input is binarized by sign."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hybnn.binary.layers import BinaryConv2d, BinaryLinear
from hybnn.models.conv_stack import CONV_CHANNELS, conv_out_size


class BinaryCNN(nn.Module):
    """sign(x) -> 3 x [BinaryConv 3x3/2 -> BN] -> BinaryFC 200 -> BN -> BinaryFC 128 -> BN -> out.

    The first convolution binarizes the *image* with sign(x), sign(0) = +1. With pixels in
    [0, 1] every pixel becomes +1 and the network sees a blank image (the paper's ~50 %);
    with centred pixels (x - 0.5) the sign keeps the digit's shape.
    """

    def __init__(
        self,
        image_size: tuple[int, int] = (28, 28),
        in_channels: int = 1,
        num_classes: int = 2,
        fc: tuple[int, int] = (200, 128),
        scaling: str = "none",
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "image_size": [int(image_size[0]), int(image_size[1])],
            "in_channels": int(in_channels),
            "num_classes": int(num_classes),
            "fc": [int(f) for f in fc],
            "scaling": scaling,
        }
        convs: list[nn.Module] = []
        ch = in_channels
        for out in CONV_CHANNELS:
            convs += [BinaryConv2d(ch, out, 3, stride=2, padding=1, scaling=scaling),
                      nn.BatchNorm2d(out)]
            ch = out
        self.features = nn.Sequential(*convs)
        flat = ch * conv_out_size(image_size[0]) * conv_out_size(image_size[1])
        self.classifier = nn.Sequential(
            BinaryLinear(flat, fc[0], scaling=scaling), nn.BatchNorm1d(fc[0]),
            BinaryLinear(fc[0], fc[1], scaling=scaling), nn.BatchNorm1d(fc[1]),
            BinaryLinear(fc[1], num_classes, scaling=scaling), nn.BatchNorm1d(num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
