"""Folding batch norm into the convolutions: same outputs, fewer layers, source untouched."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hybnn.encoders.vae import VaeEncoder as Encoder
from hybnn.encoders.vae import load as load_encoder
from hybnn.models.bn_fold import fold_batch_norms
from hybnn.models.vae import BinaryLatentVAE


def _vae_with_trained_looking_norms(seed: int = 0) -> BinaryLatentVAE:
    """A VAE whose batch norms carry non-trivial running statistics and affine weights."""
    torch.manual_seed(seed)
    vae = BinaryLatentVAE(image_size=(8, 8))
    for m in vae.encoder.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return vae.eval()


def test_folded_encoder_matches_the_original_and_runs_no_batch_norm(digits):
    vae = _vae_with_trained_looking_norms()
    folded = fold_batch_norms(vae.encoder)
    x = torch.from_numpy(np.ascontiguousarray(digits.x[:500]))
    with torch.no_grad():
        want, got = vae.logits(x), folded(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in vae.encoder.modules()) == 3  # untouched
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert float(((got >= 0) == (want >= 0)).float().mean()) > 0.999
    assert not any(p.requires_grad for p in folded.parameters())


def test_encoder_codes_equal_the_vae_codes(tiny_encoder, digits):
    directory, _, _ = tiny_encoder
    encoder = load_encoder(directory)
    images = np.ascontiguousarray(digits.x[:600])
    want = encoder.vae.encode(torch.from_numpy(images)).numpy()
    got = encoder.encode(images, batch_size=128)
    assert got.dtype == np.bool_ and got.shape == want.shape == (600, 200)
    assert float(np.mean(got == want)) > 0.999
    np.testing.assert_array_equal(encoder.encode(images, batch_size=600), got)  # cached


def test_encoder_folds_a_vae_left_in_training_mode(digits):
    vae = _vae_with_trained_looking_norms(1).train()  # eval() happens inside encode
    encoder = Encoder(vae, "0" * 64, {})
    images = np.ascontiguousarray(digits.x[:100])
    codes = encoder.encode(images)
    with torch.no_grad():
        want = vae.eval().logits(torch.from_numpy(images)) >= 0
    assert float(np.mean(codes == want.numpy())) > 0.999
