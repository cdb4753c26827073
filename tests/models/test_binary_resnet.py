"""ReActNet / Bi-Real style binary ResNet-18: shapes, gradients, which convolutions are binary."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybnn.binary.layers import BinaryConv2d, binary_layers
from hybnn.binary.methods import method_callbacks, method_scaling
from hybnn.models.binary_resnet import BinaryResNet, binary_resnet18
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.train import fit_classifier


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_forward_backward_on_a_tiny_input():
    model = binary_resnet18(num_classes=5, in_channels=1, width=4)
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 5)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize("side", [28, 7])
def test_odd_sides_keep_the_shortcut_and_the_block_in_step(side):
    """28x28 (Fashion-MNIST) halves to 14, 7, then 4: the shortcut's pooling rounds up as
    the stride-2 convolution does."""
    for weights in ("real", "binary"):
        model = BinaryResNet(10, 1, width=2, weights=weights)
        assert model(torch.randn(2, 1, side, side)).shape == (2, 10)


def test_every_3x3_convolution_but_the_first_is_binary():
    model = binary_resnet18(num_classes=10, in_channels=3, width=4)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | BinaryConv2d)]
    three = [(n, m) for n, m in convs if m.kernel_size in (3, (3, 3))]
    assert three[0][0] == "stem.0" and isinstance(three[0][1], nn.Conv2d)
    assert all(isinstance(m, BinaryConv2d) for _, m in three[1:])
    assert len(three) == 17 and len(list(binary_layers(model))) == 16
    # The float 1x1 convolutions sit only in the three downsampling shortcuts.
    ones = [n for n, m in convs if m.kernel_size in (1, (1, 1))]
    assert len(ones) == 3 and all("shortcut" in n for n in ones)


def test_blocks_binarize_their_inputs_with_approx_sign_after_a_learned_shift():
    block = binary_resnet18(width=4).blocks[0]
    assert block.conv.input_quantizer.__name__ == "approx_sign"
    assert block.shift.bias.shape == (1, 4, 1, 1)


def test_width_stages_and_imagenet_stem():
    model = BinaryResNet(num_classes=3, in_channels=3, width=2, blocks=(1, 1), stem="imagenet")
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert model.fc.in_features == 4
    assert model.config["blocks"] == [1, 1]
    with pytest.raises(ValueError):
        BinaryResNet(stem="huge")


def test_trains_with_rebnn_through_the_common_trainer():
    model = BinaryResNet(num_classes=2, in_channels=1, width=4, blocks=(1, 1),
                         scaling=method_scaling("rebnn"))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 2, (16,))
    history = fit_classifier(model, (x, y), None, TrainConfig(epochs=2, batch_size=8),
                             callbacks=method_callbacks("rebnn", model), progress=False)
    assert len(history.epochs) == 2 and "rebnn_gamma/blocks.0.conv" in history.epochs[-1]
