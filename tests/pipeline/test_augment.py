"""Phase-1 augmentations: whole-pixel shifts and random affine maps."""

from __future__ import annotations

import torch

from hybnn.pipeline.augment import random_affine, random_shift
from hybnn.pipeline.config import PretrainConfig
from hybnn.pipeline.pretrain import augment


def blob(n: int = 8) -> torch.Tensor:
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    return x


def test_affine_without_motion_is_the_identity():
    x = torch.rand(4, 3, 28, 20)
    torch.testing.assert_close(random_affine(x, 0, 0, 0), x, atol=1e-5, rtol=0)


def test_affine_moves_pixels_within_its_bounds_and_keeps_the_range():
    torch.manual_seed(0)
    x = blob(64)
    y = random_affine(x, shift=2, degrees=12, zoom=0.1)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().amax(dim=(1, 2, 3)).min() > 0.1  # every image moved
    # a small rotation/zoom/shift keeps the blob's mass within the zoom's square
    ratio = y.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert ((ratio > 0.75) & (ratio < 1.3)).all()
    # and its centre within shift + what a 12-degree turn about the image centre moves it
    grid = torch.arange(28.0)
    cy = (y.sum(dim=3) * grid).sum(dim=(1, 2)) / y.sum(dim=(1, 2, 3))
    assert ((cy - 13.5).abs() < 2 + 0.5 + 1.0).all()


def test_shift_moves_whole_pixels_and_fills_with_zeros():
    torch.manual_seed(1)
    y = random_shift(blob(32), 2)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    assert (y.sum(dim=(1, 2, 3)) == 32).all()  # the blob never leaves a 28x28 image


def test_pretraining_views_follow_the_config():
    torch.manual_seed(2)
    x = blob(4)
    assert torch.equal(augment(x, PretrainConfig(shift=0, rotation=0, zoom=0)), x)
    shifted = augment(x, PretrainConfig(shift=2, rotation=0, zoom=0))
    assert set(shifted.unique().tolist()) <= {0.0, 1.0}  # whole pixels: no interpolation
    turned = augment(x, PretrainConfig())  # the default: rotation and zoom too
    assert len(turned.unique()) > 2
