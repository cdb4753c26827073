"""The binary encoder: 200 logits per image, codes are logits >= 0, binary weights only."""

from __future__ import annotations

import pytest
import torch

from hybnn.binary.layers import binary_layers
from hybnn.models import BinaryEncoder, BNNHead, FullyBinaryHyBNN


def test_shapes_codes_and_binary_layers():
    torch.manual_seed(0)
    enc = BinaryEncoder().eval()
    x = torch.rand(5, 1, 28, 28)
    logits = enc(x)
    assert logits.shape == (5, 200)
    assert torch.equal(enc.encode(x), logits >= 0)
    assert [type(m).__name__ for _, m in binary_layers(enc)] == ["BinaryConv2d"] * 3 + [
        "BinaryLinear"]
    assert enc.config["channels"] == [32, 64, 128]


def test_input_is_centred_before_the_sign():
    """Unit pixels all sign to +1 (the baseline trap); the encoder must see x - 0.5."""
    torch.manual_seed(1)
    enc = BinaryEncoder((8, 8)).eval()
    dark, bright = torch.full((2, 1, 8, 8), 0.2), torch.full((2, 1, 8, 8), 0.8)
    assert not torch.equal(enc(dark), enc(bright))
    assert torch.equal(enc(torch.full((1, 1, 8, 8), 0.5)), enc(bright[:1]))  # sign(0) = +1


def test_bad_configs_are_refused():
    with pytest.raises(ValueError):
        BinaryEncoder(latent_bits=0)
    with pytest.raises(ValueError):
        BinaryEncoder(channels=(8, 8))
    with pytest.raises(ValueError, match="reads 100 bits"):
        FullyBinaryHyBNN(BinaryEncoder(), BNNHead(100, 2))


def test_fully_binary_is_encoder_then_head():
    torch.manual_seed(2)
    enc, head = BinaryEncoder((8, 8), latent_bits=16).eval(), BNNHead(16, 3, (8,)).eval()
    x = torch.rand(4, 1, 8, 8)
    codes = enc.encode(x).float() * 2 - 1
    assert torch.equal(FullyBinaryHyBNN(enc, head)(x), head(codes))
