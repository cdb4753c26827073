"""Model shapes and behaviour: BNN head, binary and float CNNs, and the binary-latent VAE."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hybnn.models import BinaryCNN, BinaryLatentVAE, BNNHead, FloatCNN
from hybnn.models.vae import kl_to_uniform_bernoulli, vae_loss


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def signs(n: int, bits: int) -> torch.Tensor:
    return torch.randint(0, 2, (n, bits)).float() * 2 - 1


# ------------------------------------------------------------------------------------ BNN head


@pytest.mark.parametrize(("bits", "classes", "hidden"), [(200, 2, (128,)), (32, 10, (16, 8)),
                                                          (64, 3, ())])
def test_bnn_head_maps_codes_to_class_logits(bits, classes, hidden):
    head = BNNHead(bits, classes, hidden).eval()
    assert head(signs(5, bits)).shape == (5, classes)


@pytest.mark.parametrize("shape", [(4, 199), (4, 201), (200,), (2, 1, 200)])
def test_bnn_head_rejects_codes_of_the_wrong_width(shape):
    with pytest.raises(ValueError, match=r"\(N, 200\)"):
        BNNHead()(torch.ones(shape))


def test_bnn_head_logits_are_calibrated_by_the_final_batch_norm():
    head = BNNHead(16, 2, (8,))
    out = head(signs(64, 16))  # train mode: batch statistics
    torch.testing.assert_close(out.mean(0), torch.zeros(2), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------- CNNs


@pytest.mark.parametrize("cls", [BinaryCNN, FloatCNN])
@pytest.mark.parametrize(("size", "channels", "classes"),
                         [((28, 28), 1, 2), ((8, 8), 1, 10), ((32, 24), 3, 4)])
def test_cnn_forward_shapes(cls, size, channels, classes):
    model = cls(size, channels, classes).eval()
    assert model(torch.rand(3, channels, *size)).shape == (3, classes)


@pytest.mark.parametrize("cls", [BNNHead, BinaryCNN, FloatCNN, BinaryLatentVAE])
def test_config_is_json_and_rebuilds_the_same_architecture(cls):
    model = cls()
    config = json.loads(json.dumps(model.config))
    twin = cls(**config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in twin.state_dict().items()} == shapes


def test_binary_cnn_on_unit_pixels_sees_a_blank_image():
    # The paper's trap: every pixel in [0, 1] is >= 0, so sign() turns every image into
    # all +1 and the network's output cannot depend on the image.
    model = BinaryCNN((28, 28), 1, 2).eval()
    a, b = torch.rand(1, 1, 28, 28), torch.zeros(1, 1, 28, 28)
    b[..., 5:20, 10:15] = 1.0  # a "digit"
    out = model(torch.cat([a, b, torch.ones(1, 1, 28, 28)]))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_binary_cnn_on_centered_pixels_sees_the_shape():
    model = BinaryCNN((28, 28), 1, 2).eval()
    a, b = torch.rand(1, 1, 28, 28), torch.zeros(1, 1, 28, 28)
    b[..., 5:20, 10:15] = 1.0
    out = model(torch.cat([a, b]) - 0.5)
    assert not torch.equal(out[0], out[1])


def test_float_cnn_on_unit_pixels_does_see_the_image():
    model = FloatCNN((28, 28), 1, 2).eval()
    out = model(torch.stack([torch.rand(1, 28, 28), torch.zeros(1, 28, 28)]))
    assert not torch.equal(out[0], out[1])


# ---------------------------------------------------------------------------------------- VAE


@pytest.mark.parametrize("size", [(28, 28), (8, 8)])
def test_vae_encode_is_a_deterministic_bool_code(size):
    vae = BinaryLatentVAE(size).eval()
    x = torch.rand(4, 1, *size)
    code = vae.encode(x)
    assert code.dtype == torch.bool and code.shape == (4, 200)
    assert torch.equal(code, vae.encode(x))
    assert torch.equal(code, vae.logits(x) >= 0)
    assert not code.requires_grad


@pytest.mark.parametrize("size", [(28, 28), (8, 8), (16, 12)])
def test_vae_decode_gives_probability_images_of_the_input_size(size):
    vae = BinaryLatentVAE(size, latent_bits=32).eval()
    out = vae.decode(torch.randint(0, 2, (3, 32)).float())
    assert out.shape == (3, 1, *size)
    assert out.min() >= 0 and out.max() <= 1


def test_vae_forward_samples_hard_bits_with_a_soft_gradient_in_training():
    vae = BinaryLatentVAE((8, 8), latent_bits=16)
    logits = torch.randn(5, 16, requires_grad=True)
    bits = vae.sample_bits(logits)
    # hard + soft - soft.detach(): {0, 1} up to one float32 rounding step
    hard = bits.detach().round()
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(bits.detach(), hard, atol=1e-6, rtol=0)
    bits.sum().backward()
    assert logits.grad is not None and (logits.grad > 0).all()


def test_vae_eval_forward_uses_the_deterministic_code():
    vae = BinaryLatentVAE((8, 8), latent_bits=16).eval()
    x = torch.rand(3, 1, 8, 8)
    recon, logits = vae(x)
    torch.testing.assert_close(recon, vae.decode((logits >= 0).float()))


def test_kl_to_uniform_bernoulli_is_zero_at_zero_logits():
    assert torch.equal(kl_to_uniform_bernoulli(torch.zeros(3, 200)), torch.zeros(3))


def test_kl_to_uniform_bernoulli_is_positive_and_symmetric_elsewhere():
    logits = torch.randn(6, 50) * 3
    kl = kl_to_uniform_bernoulli(logits)
    assert kl.shape == (6,) and (kl > 0).all()
    torch.testing.assert_close(kl, kl_to_uniform_bernoulli(-logits))


def test_kl_to_uniform_bernoulli_matches_the_direct_formula():
    logits = torch.linspace(-6, 6, 25, dtype=torch.float64).reshape(1, -1)
    p = torch.sigmoid(logits)
    direct = (p * torch.log(2 * p) + (1 - p) * torch.log(2 * (1 - p))).sum(1)
    torch.testing.assert_close(kl_to_uniform_bernoulli(logits), direct)
    # a saturated bit costs log 2 nats, and stays finite far beyond float32 sigmoid range
    assert math.isclose(kl_to_uniform_bernoulli(torch.tensor([[200.0]])).item(), math.log(2),
                        rel_tol=1e-6)


def test_vae_loss_is_reconstruction_plus_beta_kl():
    vae = BinaryLatentVAE((8, 8), latent_bits=16).eval()
    x = torch.rand(4, 1, 8, 8)
    loss, rec, kl = vae_loss(vae, x, beta=0.5)
    torch.testing.assert_close(loss, rec + 0.5 * kl)
    assert rec > 0 and kl >= 0
