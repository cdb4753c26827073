"""Full-precision CNN of the binary CNN's shape: the accuracy ceiling."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hybnn.models.conv_stack import CONV_CHANNELS, conv_out_size


class FloatCNN(nn.Module):
    """3 x [Conv 3x3/2 -> BN -> ReLU] -> FC 200 -> BN -> ReLU -> FC 128 -> BN -> ReLU -> out."""

    def __init__(
        self,
        image_size: tuple[int, int] = (28, 28),
        in_channels: int = 1,
        num_classes: int = 2,
        fc: tuple[int, int] = (200, 128),
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "image_size": [int(image_size[0]), int(image_size[1])],
            "in_channels": int(in_channels),
            "num_classes": int(num_classes),
            "fc": [int(f) for f in fc],
        }
        convs: list[nn.Module] = []
        ch = in_channels
        for out in CONV_CHANNELS:
            convs += [nn.Conv2d(ch, out, 3, stride=2, padding=1, bias=False),
                      nn.BatchNorm2d(out), nn.ReLU()]
            ch = out
        self.features = nn.Sequential(*convs)
        flat = ch * conv_out_size(image_size[0]) * conv_out_size(image_size[1])
        self.classifier = nn.Sequential(
            nn.Linear(flat, fc[0], bias=False), nn.BatchNorm1d(fc[0]), nn.ReLU(),
            nn.Linear(fc[0], fc[1], bias=False), nn.BatchNorm1d(fc[1]), nn.ReLU(),
            nn.Linear(fc[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
