"""Sign quantizers: sign(0) = +1 forward, and each straight-through estimator's exact gradient."""

from __future__ import annotations

import pytest
import torch

from hybnn.binary.quantizers import (
    QUANTIZERS,
    approx_sign,
    get_quantizer,
    identity_sign,
    sign,
    ste_sign,
)

# Points on both sides of, and exactly at, the STE boundaries |x| = 1 and at zero.
X = torch.tensor([-3.0, -1.5, -1.0, -0.75, -0.5, -0.0, 0.0, 0.25, 0.5, 1.0, 1.0001, 2.0])
SIGN_X = torch.tensor([-1.0, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1])


def test_sign_of_zero_is_plus_one_unlike_torch_sign():
    zero = torch.zeros(3)
    assert sign(zero).tolist() == [1.0, 1.0, 1.0]
    assert torch.sign(zero).tolist() == [0.0, 0.0, 0.0]  # why hybnn has its own sign
    assert sign(torch.tensor([-0.0])).item() == 1.0


def test_sign_values_dtype_and_no_gradient():
    assert torch.equal(sign(X), SIGN_X)
    for dtype in (torch.float16, torch.float32, torch.float64):
        assert sign(X.to(dtype)).dtype == dtype
    assert not sign(X.clone().requires_grad_()).requires_grad


def test_unit_range_pixels_all_binarize_to_plus_one():
    pixels = torch.rand(1000)
    pixels[:10] = 0.0
    assert (sign(pixels) == 1).all()


def grad_of(quantizer, x: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    out = quantizer(x)
    out.backward(upstream)
    return x.grad


UPSTREAM = torch.linspace(0.5, 2.0, len(X))  # non-constant: the gradient must be multiplied


@pytest.mark.parametrize("quantizer", [ste_sign, approx_sign, identity_sign])
def test_every_quantizer_forward_is_sign(quantizer):
    assert torch.equal(quantizer(X), SIGN_X)
    assert torch.equal(quantizer(X.clone().requires_grad_()).detach(), SIGN_X)


def test_ste_sign_gradient_is_clipped_identity_inclusive_at_one():
    expected = UPSTREAM * (X.abs() <= 1).float()
    assert torch.equal(grad_of(ste_sign, X, UPSTREAM), expected)
    # at exactly |x| = 1 the gradient passes; just above it is blocked
    g = grad_of(ste_sign, torch.tensor([-1.0, 1.0, 1.0001, -1.0001]), torch.ones(4))
    assert g.tolist() == [1.0, 1.0, 0.0, 0.0]
    for dtype in (torch.float32, torch.float64):  # the next value past ±1 is already outside
        above = 1.0 + torch.finfo(dtype).eps
        x = torch.tensor([-above, -1.0, 1.0, above], dtype=dtype)
        assert grad_of(ste_sign, x, torch.ones(4, dtype=dtype)).tolist() == [0, 1, 1, 0]


def test_approx_sign_gradient_is_two_minus_two_abs_x_inside_unit_interval():
    expected = UPSTREAM * torch.clamp(2 - 2 * X.abs(), min=0)
    torch.testing.assert_close(grad_of(approx_sign, X, UPSTREAM), expected, rtol=0, atol=0)
    g = grad_of(approx_sign, torch.tensor([0.0, 0.5, -0.5, 1.0, -1.0, 3.0]), torch.ones(6))
    assert g.tolist() == [2.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_identity_sign_gradient_passes_everything():
    assert torch.equal(grad_of(identity_sign, X, UPSTREAM), UPSTREAM)


def test_ste_gradients_work_on_matrices_and_float64():
    x = torch.randn(5, 7, dtype=torch.float64) * 2
    up = torch.randn(5, 7, dtype=torch.float64)
    g = grad_of(ste_sign, x, up)
    assert g.dtype == torch.float64
    assert torch.equal(g, up * (x.abs() <= 1).double())


def test_get_quantizer_by_name_and_callable_passthrough():
    assert get_quantizer("ste_sign") is ste_sign
    assert get_quantizer("approx_sign") is approx_sign
    assert get_quantizer("identity_sign") is identity_sign
    assert set(QUANTIZERS) == {"ste_sign", "approx_sign", "identity_sign"}

    def custom(x):
        return x

    assert get_quantizer(custom) is custom


@pytest.mark.parametrize("name", ["sign", "STE_SIGN", "", "hardtanh"])
def test_get_quantizer_unknown_name_lists_the_choices(name):
    with pytest.raises(ValueError, match="approx_sign, identity_sign, ste_sign"):
        get_quantizer(name)
