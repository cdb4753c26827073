"""ReBNN: the reconstruction loss's gradients, the resilient γ, the official clamp, the callback."""

from __future__ import annotations

import math

import pytest
import torch

from hybnn.binary.layers import BinaryConv2d, BinaryLinear
from hybnn.binary.quantizers import sign
from hybnn.binary.rebnn import (
    OFFICIAL_GAMMA,
    ReBNN,
    channel_flip_fraction,
    official_clamp,
    paper_gamma,
    reconstruction_grads,
    reconstruction_loss,
)
from hybnn.models.bnn_head import BNNHead
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.train import fit_classifier


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _away_from_zero(shape: tuple[int, ...]) -> torch.Tensor:
    """Latent weights with |w| >= 0.1, so a finite difference never crosses a sign change."""
    w = torch.rand(shape, dtype=torch.float64) * 0.8 + 0.1
    return w * torch.where(torch.rand(shape) < 0.5, -1.0, 1.0).to(torch.float64)


@pytest.mark.parametrize("shape", [(3, 5), (4, 2, 3, 3)])
def test_closed_form_gradients_match_autograd(shape):
    w = _away_from_zero(shape).requires_grad_()
    alpha = (torch.rand(shape[0], dtype=torch.float64) + 0.2).requires_grad_()
    gamma = torch.rand(shape[0], dtype=torch.float64)
    reconstruction_loss(w, alpha, gamma).backward()
    dw, dalpha = reconstruction_grads(w.detach(), alpha.detach(), gamma)
    torch.testing.assert_close(dw, w.grad)
    torch.testing.assert_close(dalpha, alpha.grad)


def test_closed_form_gradients_match_finite_differences():
    w = _away_from_zero((3, 4))
    alpha = torch.tensor([0.3, 0.7, 1.1], dtype=torch.float64)
    gamma = torch.tensor([0.5, 2.0, 0.01], dtype=torch.float64)
    dw, dalpha = reconstruction_grads(w, alpha, gamma)
    eps = 1e-6
    for idx in [(0, 0), (1, 3), (2, 1)]:
        e = torch.zeros_like(w)
        e[idx] = eps
        fd = (reconstruction_loss(w + e, alpha, gamma)
              - reconstruction_loss(w - e, alpha, gamma)) / (2 * eps)
        assert math.isclose(float(fd), float(dw[idx]), rel_tol=1e-6, abs_tol=1e-9)
    for i in range(3):
        e = torch.zeros_like(alpha)
        e[i] = eps
        fd = (reconstruction_loss(w, alpha + e, gamma)
              - reconstruction_loss(w, alpha - e, gamma)) / (2 * eps)
        assert math.isclose(float(fd), float(dalpha[i]), rel_tol=1e-6, abs_tol=1e-9)


def test_weight_gradient_pulls_latent_weights_towards_plus_minus_alpha():
    w = torch.tensor([[0.05, -0.05, 0.9, -0.9]])
    dw, _ = reconstruction_grads(w, torch.tensor([0.5]), torch.tensor([1.0]))
    # A descent step w - η·dw moves small weights away from zero and large ones back to ±α.
    assert torch.equal(torch.sign(-dw), torch.tensor([[1.0, -1.0, -1.0, 1.0]]))


def test_gamma_follows_the_papers_formula_on_a_hand_made_example():
    prev = torch.tensor([[0.5, -0.2, 0.1, -0.3],
                         [0.4, 0.6, -0.7, -0.1]]) >= 0
    w = torch.tensor([[0.5, 0.2, 0.1, -0.3],    # 1 of 4 signs flipped
                      [-0.4, 0.6, 0.7, -0.1]])  # 2 of 4 flipped
    grad = torch.tensor([[0.1, -0.8, 0.3, 0.0],   # max |g| = 0.8
                         [0.2, 0.1, -0.3, 0.05]])  # max |g| = 0.3
    flips = channel_flip_fraction(prev, w)
    assert torch.equal(flips, torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(paper_gamma(flips, grad), torch.tensor([0.2, 0.15]))


def test_zero_counts_as_positive_when_counting_flips():
    prev = torch.tensor([[-0.1, 0.1]]) >= 0
    assert torch.equal(channel_flip_fraction(prev, torch.tensor([[0.0, 0.0]])),
                       torch.tensor([0.5]))


def test_official_clamp_is_the_constant_2e_4_for_every_input():
    p = torch.tensor([0.0, 1e-12, 1e-6, 1e-5, 5e-5, 2e-4, 1e-3, 1.0, 1e6])
    assert torch.equal(official_clamp(p), torch.full_like(p, OFFICIAL_GAMMA))


def _step(layer: BinaryLinear, callback: ReBNN, coeff: torch.Tensor) -> None:
    """One backward of L = Σ coeff ⊙ ŵ (so ∂L/∂ŵ = coeff) followed by the callback."""
    layer.weight.grad = None
    layer.alpha.grad = None
    (layer.binary_weight() * coeff).sum().backward()
    callback.on_after_backward(layer)


def test_callback_adds_the_papers_gradients_with_the_current_step_gamma():
    layer = BinaryLinear(4, 2, scaling="learned")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.2, 0.1, -0.3], [0.4, 0.6, -0.7, -0.1]]))
        layer.alpha.copy_(torch.tensor([0.3, 0.6]))
    cb = ReBNN("paper")
    cb.on_train_begin(layer)
    coeff = torch.tensor([[0.1, -0.8, 0.3, 0.0], [0.2, 0.1, -0.3, 0.05]])

    _step(layer, cb, coeff)  # first step: nothing flipped yet, so γ = 0
    s = sign(layer.weight.detach())
    torch.testing.assert_close(layer.weight.grad, coeff * layer.alpha.detach()[:, None])
    torch.testing.assert_close(layer.alpha.grad, (coeff * s).sum(1))

    with torch.no_grad():  # an "optimizer step" that flips 1 and 2 signs
        layer.weight.copy_(torch.tensor([[0.5, 0.2, 0.1, -0.3], [-0.4, 0.6, 0.7, -0.1]]))
    _step(layer, cb, coeff)
    gamma = torch.tensor([0.25 * 0.8, 0.5 * 0.3])
    # Reference: autograd of the task loss plus the weighted reconstruction loss.
    w = layer.weight.detach().clone().requires_grad_()
    a = layer.alpha.detach().clone().requires_grad_()
    ste = sign(w) + w - w.detach()  # straight-through sign, |w| <= 1 here
    ((ste * a[:, None] * coeff).sum() + reconstruction_loss(w, a, gamma)).backward()
    torch.testing.assert_close(layer.weight.grad, w.grad)
    torch.testing.assert_close(layer.alpha.grad, a.grad)


def test_official_mode_uses_gamma_2e_4_even_without_flips():
    layer = BinaryConv2d(2, 3, 3, scaling="learned")
    cb = ReBNN("official")
    cb.on_train_begin(layer)
    g = torch.randn(3, 2, 3, 3)
    assert torch.equal(cb.layer_gamma("", g), torch.full((3,), OFFICIAL_GAMMA))


def test_constant_gamma_mode():
    layer = BinaryLinear(5, 2, scaling="learned")
    cb = ReBNN(1e-3)
    cb.on_train_begin(layer)
    assert torch.equal(cb.layer_gamma("", torch.randn(2, 5)), torch.full((2,), 1e-3))


def test_refuses_layers_without_a_learned_scale():
    with pytest.raises(ValueError, match="learned"):
        ReBNN().on_train_begin(BNNHead(8, 2, (4,), scaling="xnor"))
    with pytest.raises(ValueError, match="gamma"):
        ReBNN("nonsense")


def test_trains_a_head_and_logs_gamma_per_layer():
    x = torch.randint(0, 2, (128, 15)).float() * 2 - 1
    y = (x.sum(1) > 0).long()  # majority vote: representable with binary weights
    model = BNNHead(15, 2, (8,), scaling="learned")
    history = fit_classifier(model, (x, y), (x, y), TrainConfig(epochs=5, batch_size=16),
                             callbacks=[ReBNN("paper")], progress=False)
    logs = history.epochs[-1]
    assert {"rebnn_gamma", "rebnn_gamma/net.0", "rebnn_gamma/net.2"} <= set(logs)
    assert all(math.isfinite(e["rebnn_gamma"]) and e["rebnn_gamma"] >= 0
               for e in history.epochs)
    assert history.last("train_loss") < history.epochs[0]["train_loss"]
