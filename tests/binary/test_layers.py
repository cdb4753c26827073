"""Binary layers: what they compute, how they scale, pad and clip, and where gradients flow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybnn.binary.layers import (
    BinaryConv2d,
    BinaryLinear,
    binary_layers,
    clip_latent_weights,
)
from hybnn.binary.quantizers import sign


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_linear_is_f_linear_of_sign_inputs_and_sign_weights():
    layer = BinaryLinear(10, 4, bias=True)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(4))
    x = torch.randn(6, 10)
    x[0, :3] = 0.0  # zeros binarize to +1
    expected = F.linear(sign(x), sign(layer.weight), layer.bias)
    assert torch.equal(layer(x), expected)


def test_linear_outputs_are_integers_of_matching_parity_without_scaling():
    layer = BinaryLinear(9, 5)
    out = layer(torch.randn(3, 9))
    assert torch.equal(out, out.round())
    assert ((out + 9) % 2 == 0).all()  # sum of 9 terms of ±1 is odd


def test_conv_is_f_conv2d_of_sign_inputs_and_weights_without_padding():
    layer = BinaryConv2d(3, 5, 3, stride=2)
    x = torch.randn(2, 3, 9, 9)
    expected = F.conv2d(sign(x), sign(layer.weight), stride=2)
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 1), (1, 2)])
def test_conv_pads_with_plus_one_after_the_sign(stride, padding):
    layer = BinaryConv2d(2, 4, 3, stride=stride, padding=padding)
    x = torch.randn(2, 2, 7, 7)
    p = padding
    padded = F.pad(sign(x), (p, p, p, p), value=1.0)
    expected = F.conv2d(padded, sign(layer.weight), stride=stride)
    assert torch.equal(layer(x), expected)
    # zero padding (what F.conv2d(padding=...) does) would give different border outputs
    zero_padded = F.conv2d(sign(x), sign(layer.weight), stride=stride, padding=p)
    assert not torch.equal(layer(x), zero_padded)


def test_xnor_scaling_is_mean_abs_latent_weight_per_output_channel():
    lin = BinaryLinear(8, 3, scaling="xnor")
    alpha = lin.weight.abs().mean(dim=1)
    torch.testing.assert_close(lin.weight_scale(), alpha)
    x = torch.randn(4, 8)
    torch.testing.assert_close(lin(x), F.linear(sign(x), sign(lin.weight) * alpha[:, None]))

    conv = BinaryConv2d(2, 3, 3, padding=1, scaling="xnor")
    alpha = conv.weight.abs().mean(dim=(1, 2, 3))
    torch.testing.assert_close(conv.weight_scale(), alpha)
    x = torch.randn(1, 2, 5, 5)
    expected = F.conv2d(F.pad(sign(x), (1, 1, 1, 1), value=1.0),
                        sign(conv.weight) * alpha[:, None, None, None])
    torch.testing.assert_close(conv(x), expected)
    assert conv.alpha is None and "alpha" not in dict(conv.named_parameters())


def test_xnor_scale_follows_the_latent_weights():
    lin = BinaryLinear(4, 2, scaling="xnor")
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.5, 0.5, -0.5], [0.1, 0.2, -0.3, 0.4]]))
    torch.testing.assert_close(lin.weight_scale(), torch.tensor([0.5, 0.25]))


def test_learned_scaling_is_a_trainable_alpha_initialised_to_mean_abs_weight():
    lin = BinaryLinear(8, 3, scaling="learned")
    assert isinstance(lin.alpha, nn.Parameter) and lin.alpha.requires_grad
    assert lin.alpha.shape == (3,)
    torch.testing.assert_close(lin.alpha.detach(), lin.weight.abs().mean(dim=1))
    assert any(p is lin.alpha for p in lin.parameters())

    x = torch.randn(4, 8)
    lin(x).sum().backward()
    assert lin.alpha.grad is not None and lin.alpha.grad.abs().sum() > 0

    with torch.no_grad():
        lin.alpha.fill_(2.0)
    assert torch.equal(lin(x), 2.0 * F.linear(sign(x), sign(lin.weight)))


def test_unscaled_layer_has_no_alpha():
    lin = BinaryLinear(3, 2)
    assert lin.weight_scale() is None and lin.alpha is None


@pytest.mark.parametrize("layer_cls", [BinaryLinear, BinaryConv2d])
def test_bad_scaling_name_is_a_value_error(layer_cls):
    args = (2, 2) if layer_cls is BinaryLinear else (2, 2, 3)
    with pytest.raises(ValueError, match="none, xnor, learned"):
        layer_cls(*args, scaling="xnor-net")


def test_bad_quantizer_name_is_a_value_error():
    with pytest.raises(ValueError, match="unknown quantizer"):
        BinaryLinear(2, 2, weight_quantizer="sgn")


def test_latent_weights_start_inside_unit_interval():
    assert BinaryLinear(50, 50).weight.abs().max() <= 1.0
    assert BinaryConv2d(1, 4, 1).weight.abs().max() <= 1.0


def test_clip_latent_weights_clamps_every_binary_layer_only():
    model = nn.Sequential(BinaryLinear(4, 4), nn.Linear(4, 4), BinaryConv2d(1, 2, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5.0).add_(3.0)
    float_before = model[1].weight.clone()

    clip_latent_weights(model)

    assert model[0].weight.abs().max() <= 1.0 and model[2].weight.abs().max() <= 1.0
    assert model[0].weight.max() == 1.0  # clamped, not rescaled
    assert torch.equal(model[1].weight, float_before)
    assert [name for name, _ in binary_layers(model)] == ["0", "2"]


def test_weight_gradient_is_masked_where_latent_weight_exceeds_one():
    lin = BinaryLinear(4, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.3, -1.0, 1.5, -2.0]]))
    x = torch.tensor([[1.0, 1.0, -1.0, 1.0]])
    lin(x).sum().backward()
    # dL/dŵ = sign(x); the STE passes it where |w| <= 1 (inclusive) and blocks it elsewhere
    assert lin.weight.grad.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_input_gradient_uses_the_input_quantizer_ste():
    lin = BinaryLinear(3, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.5, 0.5]]))
    x = torch.tensor([[0.2, -3.0, 1.0]], requires_grad=True)
    lin(x).sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0, 1.0]]


def test_approx_sign_weight_quantizer_changes_only_the_backward():
    lin = BinaryLinear(3, 1, weight_quantizer="approx_sign")
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.5, -0.75]]))
    x = torch.ones(1, 3)
    assert lin(x).item() == 1 + 1 - 1
    lin(x).sum().backward()
    assert lin.weight.grad.tolist() == [[2.0, 1.0, 0.5]]


def test_input_quantizer_none_passes_inputs_through():
    lin = BinaryLinear(5, 3, input_quantizer=None)
    x = torch.randn(2, 5, requires_grad=True)
    expected = F.linear(x, sign(lin.weight))
    out = lin(x)
    assert torch.equal(out, expected)
    out.sum().backward()
    torch.testing.assert_close(x.grad, sign(lin.weight).sum(0).expand(2, 5))

    conv = BinaryConv2d(1, 2, 3, padding=1, input_quantizer=None)
    x = torch.randn(1, 1, 4, 4)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), value=1.0), sign(conv.weight))
    assert torch.equal(conv(x), expected)


def test_latent_weight_receives_gradients_and_is_the_only_weight_parameter():
    conv = BinaryConv2d(2, 3, 3, padding=1)
    assert [n for n, _ in conv.named_parameters()] == ["weight"]
    conv(torch.randn(2, 2, 6, 6)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.shape == conv.weight.shape


def test_repr_names_shape_and_scaling():
    assert "8, 3, scaling=xnor" in repr(BinaryLinear(8, 3, scaling="xnor"))
    assert "padding=1" in repr(BinaryConv2d(1, 2, 3, padding=1))
