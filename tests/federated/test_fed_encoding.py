"""Update encodings: fp32 is exact, 1bit keeps every binary weight and costs ~1/32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybnn.federated.encoding import (
    Layout,
    UpdateError,
    decode,
    encode,
    load_state,
    model_state,
    payload_bytes,
)
from hybnn.federated.task import restore_latent
from hybnn.models.bnn_head import BNNHead


@pytest.fixture()
def head():
    torch.manual_seed(0)
    model = BNNHead(200, 2, (128,))
    model.train()
    model(torch.randn(32, 200).sign())  # non-trivial batch-norm running statistics
    return model


def test_layout_names_binary_weights_and_skips_batch_counters(head):
    layout = Layout.of(head)
    assert not any(k.endswith("num_batches_tracked") for k in layout.keys)
    binary = [k for k, b in zip(layout.keys, layout.binary, strict=True) if b]
    assert binary == ["net.0.weight", "net.2.weight"]
    assert layout.num_binary == 200 * 128 + 128 * 2
    assert "net.1.running_var" in layout.keys


def test_fp32_round_trip_is_exact(head):
    layout = Layout.of(head)
    state = model_state(head, layout)
    back = decode(encode(state, layout, "fp32"), layout, "fp32")
    assert all(np.array_equal(state[k], back[k]) for k in layout.keys)


def test_1bit_keeps_signs_and_floats_exactly(head):
    layout = Layout.of(head)
    state = model_state(head, layout)
    arrays = encode(state, layout, "1bit")
    assert set(arrays) == {"signs", "floats"}
    back = decode(arrays, layout, "1bit")
    for k, is_binary in zip(layout.keys, layout.binary, strict=True):
        if is_binary:
            assert np.array_equal(np.where(state[k] >= 0, 1, -1), np.sign(back[k]))
            assert np.allclose(np.abs(back[k]), np.abs(state[k]).mean())
        else:
            assert np.array_equal(state[k], back[k])


def test_1bit_model_predicts_exactly_like_the_original(head):
    layout = Layout.of(head)
    x = torch.randn(64, 200).sign()
    head.eval()
    want = head(x)
    copy = BNNHead(200, 2, (128,))
    load_state(copy, decode(encode(model_state(head, layout), layout, "1bit"), layout, "1bit"))
    copy.eval()
    assert torch.equal(copy(x), want)


def test_1bit_payload_is_about_32x_smaller_on_weights(head):
    layout = Layout.of(head)
    state = model_state(head, layout)
    fp32, onebit = (payload_bytes(encode(state, layout, e)) for e in ("fp32", "1bit"))
    n_float = sum(n for n, b in zip(layout.sizes(), layout.binary, strict=True) if not b)
    assert onebit == (layout.num_binary + 7) // 8 + 4 * (2 + n_float)
    assert fp32 == 4 * sum(layout.sizes())
    assert fp32 / onebit > 19  # batch norm (float, 2% of the values) caps the ratio


@pytest.mark.parametrize("encoding", ["fp32", "1bit"])
def test_decode_rejects_non_finite_values(head, encoding):
    layout = Layout.of(head)
    arrays = encode(model_state(head, layout), layout, encoding)
    key = "floats" if encoding == "1bit" else "net.1.weight"
    for bad in (np.nan, np.inf):
        broken = dict(arrays)
        broken[key] = arrays[key].copy()
        broken[key].ravel()[3] = bad
        with pytest.raises(UpdateError, match="NaN or infinite"):
            decode(broken, layout, encoding)


@pytest.mark.parametrize("encoding", ["fp32", "1bit"])
def test_decode_rejects_wrong_shapes_keys_and_dtypes(head, encoding):
    layout = Layout.of(head)
    arrays = encode(model_state(head, layout), layout, encoding)
    key = next(iter(arrays))
    with pytest.raises(UpdateError, match="shape"):
        decode({**arrays, key: arrays[key].ravel()[:-1]}, layout, encoding)
    with pytest.raises(UpdateError, match="dtype"):
        decode({**arrays, key: arrays[key].astype(np.float64)}, layout, encoding)
    with pytest.raises(UpdateError, match="missing"):
        decode({k: v for k, v in arrays.items() if k != key}, layout, encoding)
    with pytest.raises(UpdateError, match="unexpected"):
        decode({**arrays, "extra": np.zeros(1, np.float32)}, layout, encoding)


def test_decode_rejects_a_negative_scale(head):
    layout = Layout.of(head)
    arrays = encode(model_state(head, layout), layout, "1bit")
    arrays["floats"][0] = -1.0
    with pytest.raises(UpdateError, match="negative scale"):
        decode(arrays, layout, "1bit")


def test_restore_latent_takes_global_signs_and_own_magnitudes(head):
    layout = Layout.of(head)
    own = model_state(head, layout)
    glob = {k: -v for k, v in own.items()}  # the server flipped every sign
    state = restore_latent(glob, own, layout)
    for k, is_binary in zip(layout.keys, layout.binary, strict=True):
        if is_binary:
            assert np.array_equal(np.abs(state[k]), np.abs(own[k]))
            assert np.array_equal(state[k] >= 0, glob[k] >= 0)
        else:
            assert np.array_equal(state[k], glob[k])  # batch norm comes from the server
    assert restore_latent(glob, None, layout) is glob
