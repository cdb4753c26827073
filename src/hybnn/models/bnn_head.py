"""The task-specific binary neural network that HyBNN trains on binary codes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hybnn.binary.layers import BinaryLinear


class BNNHead(nn.Module):
    """codes (±1) -> [BinaryLinear -> BatchNorm -> sign]* -> BinaryLinear -> BatchNorm -> logits.

    The default ``BNNHead(200, 2)`` is the paper's 200 -> 128 (batch norm) -> 2. Every weight
    is binary; the only float parameters are batch-norm affines (fused into integer thresholds
    by the packed engine) and, with ``scaling="learned"``, the per-channel scales. The final
    batch norm turns the integer output of the last binary layer into calibrated logits.
    """

    def __init__(
        self,
        in_bits: int = 200,
        num_classes: int = 2,
        hidden: Sequence[int] = (128,),
        scaling: str = "none",
    ) -> None:
        super().__init__()
        if in_bits < 1 or num_classes < 2 or any(h < 1 for h in hidden):
            raise ValueError(f"BNNHead needs in_bits >= 1, num_classes >= 2 and positive hidden "
                             f"widths (got {in_bits}, {num_classes}, {list(hidden)})")
        self.config: dict[str, Any] = {
            "in_bits": int(in_bits),
            "num_classes": int(num_classes),
            "hidden": [int(h) for h in hidden],
            "scaling": scaling,
        }
        layers: list[nn.Module] = []
        width = in_bits
        for h in hidden:
            layers += [BinaryLinear(width, h, scaling=scaling), nn.BatchNorm1d(h)]
            width = h
        layers += [BinaryLinear(width, num_classes, scaling=scaling), nn.BatchNorm1d(num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() != 2 or codes.shape[1] != self.config["in_bits"]:
            raise ValueError(
                f"BNNHead expects codes of shape (N, {self.config['in_bits']}), "
                f"got {tuple(codes.shape)}"
            )
        return self.net(codes)
