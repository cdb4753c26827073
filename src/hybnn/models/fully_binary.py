"""A fully binary HyBNN: a distilled binary encoder followed by a BNN head, one network."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hybnn.models.binary_encoder import BinaryEncoder, ResNetEncoder
from hybnn.models.bnn_head import BNNHead


class FullyBinaryHyBNN(nn.Module):
    """images in [0, 1] -> binary encoder -> sign -> :class:`BNNHead` -> logits.

    The head's first binary layer takes the sign of the encoder's logits (sign(0) = +1), which
    is exactly the ±1 code the head was trained on (bit = logits >= 0). With a
    :class:`BinaryEncoder` every layer is binary (an engine chain); a :class:`ResNetEncoder`
    keeps its stem, shortcuts and classifier real-valued (an engine graph).
    """

    def __init__(self, encoder: BinaryEncoder | ResNetEncoder, head: BNNHead) -> None:
        super().__init__()
        if head.config["in_bits"] != encoder.latent_bits:
            raise ValueError(f"the head reads {head.config['in_bits']} bits, the encoder "
                             f"writes {encoder.latent_bits}")
        self.encoder = encoder
        self.head = head
        self.config: dict[str, Any] = {"encoder": encoder.config, "head": head.config}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the head's layers, not its forward: that checks the shape, which torch.fx cannot trace
        return self.head.net(self.encoder(x))
