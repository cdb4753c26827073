"""Single packed layers against PyTorch: dense, convolution with +1 padding, max-pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybnn.engine import pack_images, pack_signs, unpack_signs
from hybnn.engine.ops import PackedLayer, maxpool2d
from hybnn.engine.packing import pack_sign_words
from hybnn.errors import DataError


def pm1(shape, rng) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


@pytest.mark.parametrize(
    ("k", "n", "batch"), [(1, 1, 1), (63, 33, 5), (200, 128, 17), (1000, 70, 3), (3000, 40, 20)]
)
def test_dense_accumulators(k, n, batch):
    rng = np.random.default_rng(k)
    x, w = pm1((batch, k), rng), pm1((n, k), rng)
    thr = rng.integers(-1, k + 1, n).astype(np.int32)
    layer = PackedLayer.dense(pack_sign_words(w < 0), k, thr)
    expected = (x @ w.T).astype(np.int32)
    np.testing.assert_array_equal(layer.accumulators(x), expected)
    np.testing.assert_array_equal(layer.accumulators(pack_signs(x)), expected)
    np.testing.assert_array_equal(layer.signs(pack_signs(x)),
                                  pack_sign_words((k - expected) // 2 > thr))


@pytest.mark.parametrize(
    ("c", "o", "hw", "k", "stride", "pad"),
    [
        (64, 64, 9, 3, 1, 1),
        (70, 33, 13, 3, 2, 1),
        (130, 40, 7, 3, 1, 0),
        (1, 32, 28, 3, 2, 1),
        (3, 5, 8, 5, 1, 2),
    ],
)
def test_conv_accumulators_and_signs(c, o, hw, k, stride, pad):
    rng = np.random.default_rng(c + o)
    x, w = pm1((2, c, hw, hw), rng), pm1((o, c, k, k), rng)
    ref = F.conv2d(
        F.pad(torch.from_numpy(x), (pad,) * 4, value=1.0), torch.from_numpy(w), stride=stride
    )
    ref = ref.numpy().round().astype(np.int32).transpose(0, 2, 3, 1)  # NHWC
    thr = rng.integers(-1, k * k * c + 1, o).astype(np.int32)
    layer = PackedLayer.conv2d(pack_sign_words(w.transpose(0, 2, 3, 1) < 0), c, hw, hw, stride,
                               pad, thr)
    np.testing.assert_array_equal(layer.accumulators(x), ref)
    np.testing.assert_array_equal(layer.accumulators(pack_images(x)), ref)
    pop = (k * k * c - ref) // 2
    np.testing.assert_array_equal(layer.signs(x), pack_sign_words(pop > thr))


def test_maxpool_matches_torch():
    rng = np.random.default_rng(0)
    x = pm1((2, 70, 9, 9), rng)
    ref = F.max_pool2d(torch.from_numpy(x), 2).numpy().transpose(0, 2, 3, 1)
    got = unpack_signs(maxpool2d(pack_images(x), 2), 70)
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(DataError):
        maxpool2d(pack_images(x), 10)


def test_pad_bits_in_packed_input_are_refused():
    layer = PackedLayer.dense(np.zeros((4, 1), np.uint64), 10)
    with pytest.raises(DataError, match="past the input width"):
        layer.accumulators(np.full((1, 1), 1 << 20, np.uint64))
