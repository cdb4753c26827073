"""Update encodings: fp32 is exact, 1bit keeps every binary weight and costs ~1/32, xor
keeps them too and sends only the signs that flipped; its decoder is safe on any bytes."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from hybnn.federated.encoding import (
    XOR_HEADER,
    Layout,
    UpdateError,
    decode,
    downlink,
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


# -- xor: the signs that flipped against the global model, 8-bit batch norm -------------

def _client_update(head, flip_rate, seed=1):
    """(global state, a client's state after a round): ``flip_rate`` of the signs flipped
    at random, latent magnitudes and batch norm moved as local training moves them."""
    layout = Layout.of(head)
    glob = model_state(head, layout)
    rng = np.random.default_rng(seed)
    local = {}
    for k, is_binary in zip(layout.keys, layout.binary, strict=True):
        w = glob[k]
        if is_binary:
            flip = rng.random(w.shape) < flip_rate
            w = np.clip(np.where(flip, -w, w) * rng.uniform(0.8, 1.2, w.shape), -1, 1)
        elif k.endswith("running_var"):
            w = w * rng.uniform(0.5, 2.0, w.shape)
        else:
            w = w + rng.normal(0, 0.1, w.shape)
        local[k] = w.astype(np.float32)
    return glob, local


def test_downlink_of_xor_is_1bit():
    assert [downlink(e) for e in ("fp32", "1bit", "xor")] == ["fp32", "1bit", "1bit"]


@pytest.mark.parametrize("flip_rate", [0.0, 0.05, 0.5, 1.0])
def test_xor_round_trip_keeps_signs_and_scales_exactly_and_floats_within_half_a_step(
        head, flip_rate):
    layout = Layout.of(head)
    glob, local = _client_update(head, flip_rate)
    arrays = encode(local, layout, "xor", glob)
    assert set(arrays) == {"update"} and arrays["update"].dtype == np.uint8
    back = decode(arrays, layout, "xor", glob)
    onebit = decode(encode(local, layout, "1bit"), layout, "1bit")
    for k, is_binary in zip(layout.keys, layout.binary, strict=True):
        assert back[k].dtype == np.float32 and back[k].shape == local[k].shape
        if is_binary:
            assert np.array_equal(back[k], onebit[k])  # the same signs and scales as 1bit
        else:
            step = (local[k].max() - local[k].min()) / 255
            assert np.abs(back[k] - local[k]).max() <= step / 2 * (1 + 1e-5)
            assert back[k].min() == local[k].min() and back[k].max() == local[k].max()


@pytest.mark.parametrize("where", ["first", "last", "both ends", "every other", "a run"])
def test_xor_codes_any_flip_pattern(head, where):
    layout = Layout.of(head)
    glob = model_state(head, layout)
    n = layout.num_binary
    flips = {"first": [0], "last": [n - 1], "both ends": [0, n - 1],
             "every other": range(0, n, 2), "a run": range(100, 3100)}[where]
    mask = np.zeros(n, bool)
    mask[list(flips)] = True
    local, at = dict(glob), 0
    for k, size, is_binary in zip(layout.keys, layout.sizes(), layout.binary, strict=True):
        if is_binary:
            sign = np.where(mask[at:at + size], -1.0, 1.0).reshape(glob[k].shape)
            local[k] = (glob[k] * sign).astype(np.float32)
            at += size
    back = decode(encode(local, layout, "xor", glob), layout, "xor", glob)
    for k, is_binary in zip(layout.keys, layout.binary, strict=True):
        if is_binary:
            assert np.array_equal(back[k] >= 0, local[k] >= 0)


def test_xor_against_the_decoded_downlink_is_what_the_server_decodes(head):
    # The client holds the 1bit-decoded global model, the server the float one: the same
    # signs, so the same reference.
    layout = Layout.of(head)
    glob, local = _client_update(head, 0.05)
    received = decode(encode(glob, layout, "1bit"), layout, "1bit")
    back = decode(encode(local, layout, "xor", received), layout, "xor", glob)
    assert all(np.array_equal(back[k] >= 0, local[k] >= 0)
               for k, b in zip(layout.keys, layout.binary, strict=True) if b)


def test_xor_bytes_up_are_30x_fewer_than_fp32_as_flower_ships_them(head):
    pytest.importorskip("flwr", reason="the fed extra (flwr) is not installed")
    from flwr.app import MetricRecord, RecordDict

    from hybnn.federated.encoded_strategy import serialized_bytes, to_record

    # 5 % of the signs flip: more than measured in real rounds (2-5 % on mnist-5k pairs).
    layout = Layout.of(head)
    glob, local = _client_update(head, 0.05)
    metrics = {"num-examples": 1333, "partition-id": 2, "train-loss": 0.0312,
               "train-acc": 0.995, "local-loss": 0.0457, "local-acc": 0.99}

    def up(encoding):  # the reply as client_app.train builds it
        arrays = to_record(encode(local, layout, encoding, glob))
        return serialized_bytes(RecordDict({"arrays": arrays,
                                            "metrics": MetricRecord(dict(metrics))}))

    fp32, onebit, xor = up("fp32"), up("1bit"), up("xor")
    assert fp32 / xor >= 30 and xor < onebit / 2
    assert payload_bytes(encode(local, layout, "xor", glob)) < 1600


def test_xor_needs_its_reference(head):
    layout = Layout.of(head)
    glob, local = _client_update(head, 0.05)
    with pytest.raises(ValueError, match="reference"):
        encode(local, layout, "xor")
    arrays = encode(local, layout, "xor", glob)
    with pytest.raises(UpdateError, match="without a reference"):
        decode(arrays, layout, "xor")
    other = {k: -v for k, v in glob.items()}
    other["net.0.weight"] = glob["net.0.weight"].copy()
    other["net.2.weight"] = glob["net.2.weight"].copy()
    other["net.2.weight"].ravel()[0] *= -1  # a single sign differs
    with pytest.raises(UpdateError, match="another global model"):
        decode(arrays, layout, "xor", other)


# -- xor: any bytes a client may send ------------------------------------------------------

@pytest.fixture()
def xor_case(head):
    layout = Layout.of(head)
    glob, local = _client_update(head, 0.05)
    return layout, glob, encode(local, layout, "xor", glob)["update"]


def _header(data):
    return list(XOR_HEADER.unpack(data[:XOR_HEADER.size].tobytes()))


def _with_header(data, **fields):
    names = ("version", "k", "flips", "unary", "digest")
    values = dict(zip(names, _header(data), strict=True)) | fields
    return np.concatenate([np.frombuffer(XOR_HEADER.pack(*values.values()), np.uint8),
                           data[XOR_HEADER.size:]])


def _rejects(layout, glob, data, match=None):
    with pytest.raises(UpdateError, match=match):
        decode({"update": data}, layout, "xor", glob)


def test_xor_rejects_truncated_and_oversized_payloads(xor_case):
    layout, glob, data = xor_case
    for cut in (0, 1, XOR_HEADER.size - 1, XOR_HEADER.size, data.size // 2, data.size - 1):
        _rejects(layout, glob, data[:cut])
    for extra in (1, 7, 10**6):
        _rejects(layout, glob, np.concatenate([data, np.zeros(extra, np.uint8)]), "bytes")


def test_xor_rejects_random_bytes_and_a_decompression_bomb(xor_case):
    layout, glob, data = xor_case
    rng = np.random.default_rng(0)
    for size in (5, XOR_HEADER.size, data.size, data.size + 3, 100_000):
        for _ in range(20):
            _rejects(layout, glob, rng.integers(0, 256, size, dtype=np.uint8))
    bomb = np.frombuffer(zlib.compress(bytes(10**7), 9), np.uint8)  # 10 MB of zeros
    _rejects(layout, glob, bomb)
    _rejects(layout, glob, np.concatenate([data[:XOR_HEADER.size], bomb]))


def test_xor_rejects_a_wrong_header(xor_case):
    layout, glob, data = xor_case
    _, k, flips, unary, _ = _header(data)
    cases = {"version": dict(version=2), "Rice": dict(k=31), "flips": dict(flips=10**9),
             "unary bytes": dict(unary=2**32 - 1)}
    for match, fields in cases.items():
        _rejects(layout, glob, _with_header(data, **fields), match)
    for fields in (dict(flips=flips + 1), dict(flips=flips - 1), dict(unary=unary + 1),
                   dict(unary=unary - 1), dict(k=k + 1), dict(k=k - 1),
                   dict(digest=b"\0\0\0\0")):
        _rejects(layout, glob, _with_header(data, **fields))


def test_xor_rejects_a_wrong_array(xor_case):
    layout, glob, data = xor_case
    _rejects(layout, glob, data.astype(np.float32), "dtype")
    _rejects(layout, glob, data.reshape(1, -1), "dimension")
    with pytest.raises(UpdateError, match="missing"):
        decode({"signs": data}, layout, "xor", glob)
    with pytest.raises(UpdateError, match="unexpected"):
        decode({"update": data, "floats": np.zeros(3, np.float32)}, layout, "xor", glob)


def test_xor_rejects_non_finite_negative_or_inverted_floats(xor_case):
    layout, glob, data = xor_case
    n_scales = sum(layout.binary)
    scales_at, ranges_at = XOR_HEADER.size, XOR_HEADER.size + 4 * n_scales

    def put(at, value):
        bad = data.copy()
        bad[at:at + 4] = np.frombuffer(struct.pack("<f", value), np.uint8)
        return bad

    for at in (scales_at, ranges_at, ranges_at + 4):
        for value in (np.nan, np.inf, -np.inf):
            _rejects(layout, glob, put(at, value), "NaN or infinite")
    _rejects(layout, glob, put(scales_at, -0.5), "negative scale")
    _rejects(layout, glob, put(ranges_at, 1e9), "minimum is above")


def test_xor_rejects_bits_after_the_last_code(xor_case):
    layout, glob, data = xor_case
    _, k, flips, unary, _ = _header(data)
    low_end = data.size - unary
    if flips * k % 8:  # the low section's padding bits
        bad = data.copy()
        bad[low_end - 1] |= 1
        _rejects(layout, glob, bad, "padding")
    bad = np.concatenate([data, np.zeros(1, np.uint8)])  # a byte after the last unary code
    _rejects(layout, glob, _with_header(bad, unary=unary + 1), "after its last")
    past = _with_header(data, flips=0, unary=0)[:data.size - unary - (flips * k + 7) // 8]
    back = decode({"update": past}, layout, "xor", glob)  # no flips: the global signs
    assert all(np.array_equal(back[key] >= 0, glob[key] >= 0)
               for key, b in zip(layout.keys, layout.binary, strict=True) if b)


def test_xor_decodes_every_mutation_to_a_valid_state_or_rejects_it(xor_case):
    # Whatever a client flips, the decoder returns finite float32 tensors of the model's
    # shapes or raises UpdateError: never another exception.
    layout, glob, data = xor_case
    rng = np.random.default_rng(1)
    outcomes = {"decoded": 0, "rejected": 0}
    for _ in range(400):
        bad = data.copy()
        at = rng.integers(0, data.size, rng.integers(1, 4))
        bad[at] ^= rng.integers(1, 256, at.size, dtype=np.uint8)
        try:
            back = decode({"update": bad}, layout, "xor", glob)
        except UpdateError:
            outcomes["rejected"] += 1
            continue
        outcomes["decoded"] += 1
        for k, shape in zip(layout.keys, layout.shapes, strict=True):
            assert back[k].dtype == np.float32 and back[k].shape == shape
            assert np.isfinite(back[k]).all()
    assert outcomes["decoded"] and outcomes["rejected"]


def test_xor_decoder_rejects_random_well_formed_headers(head):
    # Random fields with lengths that add up: the Rice sections must still be consistent.
    layout = Layout.of(head)
    glob = model_state(head, layout)
    good = encode(glob, layout, "xor", glob)["update"]
    fixed = good.size  # no flips: header, scales, ranges and codes only
    rng = np.random.default_rng(2)
    for _ in range(300):
        k, flips = int(rng.integers(0, 31)), int(rng.integers(0, 3000))
        unary = int(rng.integers(0, (flips + (layout.num_binary >> k) + 7) // 8 + 1))
        body = rng.integers(0, 256, (flips * k + 7) // 8 + unary, dtype=np.uint8)
        data = np.concatenate([_with_header(good, k=k, flips=flips, unary=unary), body])
        assert data.size == fixed + body.size
        try:
            back = decode({"update": data}, layout, "xor", glob)
        except UpdateError:
            continue
        assert all(np.isfinite(back[key]).all() for key in layout.keys)
