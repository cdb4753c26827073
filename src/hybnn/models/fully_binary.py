"""A fully binary HyBNN: the distilled binary encoder followed by a BNN head, one network."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hybnn.models.binary_encoder import BinaryEncoder
from hybnn.models.bnn_head import BNNHead


class FullyBinaryHyBNN(nn.Module):
    """images in [0, 1] -> :class:`BinaryEncoder` -> sign -> :class:`BNNHead` -> logits.

    The head's first binary layer takes the sign of the encoder's logits (sign(0) = +1), which
    is exactly the ±1 code the head was trained on (bit = logits >= 0).
    """

    def __init__(self, encoder: BinaryEncoder, head: BNNHead) -> None:
        super().__init__()
        if head.config["in_bits"] != encoder.latent_bits:
            raise ValueError(f"the head reads {head.config['in_bits']} bits, the encoder "
                             f"writes {encoder.latent_bits}")
        self.encoder = encoder
        self.head = head
        self.config: dict[str, Any] = {"encoder": encoder.config, "head": head.config}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
