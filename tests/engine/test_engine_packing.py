"""Sign-packing: the documented bit order, sign(0) = +1, NaN refused, exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybnn.engine import pack_codes, pack_images, pack_signs, unpack_signs
from hybnn.engine.packing import pack_sign_words
from hybnn.errors import DataError

finite = st.floats(allow_nan=False, width=32)
rows = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=150), elements=finite
)


def reference_words(x: np.ndarray) -> np.ndarray:
    """bit j of word k = x[64k + j] < 0 (numpy, one bit at a time)."""
    n, k = x.shape
    out = np.zeros((n, (k + 63) // 64), dtype=np.uint64)
    for j in range(k):
        out[:, j // 64] |= (x[:, j] < 0).astype(np.uint64) << np.uint64(j % 64)
    return out


@settings(max_examples=60, deadline=None)
@given(rows)
def test_pack_matches_reference_and_round_trips(x):
    words = pack_signs(x)
    np.testing.assert_array_equal(words, reference_words(x))
    np.testing.assert_array_equal(unpack_signs(words, x.shape[1]), np.where(x >= 0, 1, -1))
    np.testing.assert_array_equal(pack_sign_words(x < 0), words)


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=4, max_dims=4, max_side=12), elements=finite)
)
def test_images_pack_to_nhwc(x):
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    words = pack_images(x)
    np.testing.assert_array_equal(
        words, reference_words(nhwc.reshape(-1, x.shape[1])).reshape(words.shape)
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(0, 5), st.data())
def test_packbits_codes(bits, n, data):
    b = data.draw(hnp.arrays(np.bool_, (n, bits)))
    words = pack_codes(np.packbits(b, axis=1), bits)
    np.testing.assert_array_equal(unpack_signs(words, bits), np.where(b, 1, -1))
    np.testing.assert_array_equal(words, pack_sign_words(~b))  # tail bits stay 0


def test_signed_zero_and_infinities():
    x = np.array([[0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45]], np.float32)
    assert unpack_signs(pack_signs(x), 6).tolist() == [[1, 1, 1, -1, 1, -1]]


def test_bit_order_is_documented_one():
    x = np.ones((1, 130), np.float32)
    x[0, [0, 63, 64, 129]] = -1
    w = pack_signs(x)
    assert w.tolist() == [[1 | (1 << 63), 1, 2]]


@pytest.mark.parametrize("shape", [(2, 100), (1, 3, 9, 9)])
def test_nan_is_refused(shape):
    x = np.zeros(shape, np.float32)
    x.flat[-1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        (pack_signs if len(shape) == 2 else pack_images)(x)


def test_wrong_dtypes_are_refused():
    with pytest.raises(DataError, match="float32"):
        pack_signs(np.zeros((2, 3)))
    with pytest.raises(DataError, match="uint8"):
        pack_codes(np.zeros((2, 25), np.int32), 200)
    with pytest.raises(DataError, match=r"\(N, 25\)"):
        pack_codes(np.zeros((2, 24), np.uint8), 200)
