"""The engine file refuses everything but an intact file, and the runtime refuses bad input."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from engine_reference import randomize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybnn.engine import export_model, load
from hybnn.engine import format as fmt
from hybnn.errors import ArtifactError, DataError
from hybnn.models import BinaryCNN, BNNHead


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "head.hybe"
    export_model(randomize(BNNHead(40, 3, hidden=(70,)), seed=4), path)
    return path


@pytest.fixture(scope="module")
def good_bytes(head_file):
    return head_file.read_bytes()


def _load_bytes(tmp_path, data: bytes):
    path = tmp_path / "x.hybe"
    path.write_bytes(data)
    return load(path)


def test_layout_is_documented(good_bytes):
    magic, version, hlen, plen, _ = fmt.PREAMBLE.unpack_from(good_bytes)
    assert magic == b"HYBNNENG" and version == 1
    header = json.loads(good_bytes[56 : 56 + hlen])
    assert header["format"] == "hybnn-engine" and header["input"] == {"kind": "rows", "bits": 40}
    assert [layer["op"] for layer in header["layers"]] == ["dense", "output"]
    assert len(good_bytes) == 56 + hlen + (-(56 + hlen) % 64) + plen


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:30], "truncated"),
        (lambda b: b + b"\0", "trailing"),
        (lambda b: b"NOTHYBNN" + b[8:], "bad magic"),
        (lambda b: b"", "truncated"),
        (lambda b: b[:8] + struct.pack("<I", 2) + b[12:], "newer than this hybnn"),
        (lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], "checksum"),
        (lambda b: b[:60] + bytes([b[60] ^ 0x20]) + b[61:], "checksum"),
    ],
)
def test_damaged_files_are_refused(tmp_path, good_bytes, mutate, message):
    with pytest.raises(ArtifactError, match=message):
        _load_bytes(tmp_path, mutate(good_bytes))


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read"):
        load(tmp_path / "absent.hybe")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_random_corruption_or_truncation_raises_artifact_error(tmp_path, good_bytes, data):
    b = bytearray(good_bytes)
    if data.draw(st.booleans()):
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] = data.draw(st.integers(0, 255).filter(lambda v, i=i: v != b[i]))
    with pytest.raises(ArtifactError):
        _load_bytes(tmp_path, bytes(b))


def _resign(good: bytes, edit) -> bytes:
    """Re-encode the file with an edited header and a valid checksum (a forged, wrong file)."""
    header, arrays, _ = fmt.decode(good)
    header = json.loads(json.dumps(header))
    table = header.pop("arrays")
    arrays = {k: arrays[k] for k in table}
    edit(header, arrays)
    return fmt.encode(header, arrays)


def _set(path, value):
    def edit(header, arrays):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        _set(("layers", 0, "in_bits"), 41),
        _set(("layers", 0, "out_features"), 71),
        _set(("layers", 1, "in_words"), 1),
        _set(("layers", 0, "weights"), "nope"),
        _set(("layers", 0, "op"), "conv3d"),
        _set(("layers", 1, "op"), "dense"),
        _set(("input", "bits"), -3),
        _set(("input", "kind"), "audio"),
        _set(("layers",), []),
        _set(("layers",), "dense"),
        _set(("format",), "other"),
        lambda h, a: a.update({"layers.0.thresholds": a["layers.0.thresholds"][:5]}),
        lambda h, a: a.update({"layers.0.flips": np.zeros(70, np.int8)}),
        lambda h, a: a.update({"layers.0.thresholds": np.full(70, 10**6, np.int32)}),
        lambda h, a: a.update({"layers.0.weights": a["layers.0.weights"].astype(np.int32)}),
        lambda h, a: a.update({"layers.0.weights": a["layers.0.weights"] | np.uint64(1 << 63)}),
    ],
)
def test_forged_headers_are_refused(tmp_path, good_bytes, edit):
    with pytest.raises(ArtifactError):
        _load_bytes(tmp_path, _resign(good_bytes, edit))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_forged_integer_fields_never_crash(tmp_path, good_bytes, data):
    field = data.draw(st.sampled_from(["in_bits", "in_words", "out_features"]))
    layer = data.draw(st.integers(0, 1))
    value = data.draw(st.integers(-(2**40), 2**40))
    forged = _resign(good_bytes, _set(("layers", layer, field), value))
    try:
        model = _load_bytes(tmp_path, forged)
    except ArtifactError:
        return
    model.predict(np.zeros((3, 40), np.float32))  # accepted only when still consistent


def test_writes_are_atomic(tmp_path):
    export_model(randomize(BNNHead(8, 2, hidden=()), seed=0), tmp_path / "m.hybe")
    assert [p.name for p in tmp_path.iterdir()] == ["m.hybe"]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    path = tmp_path_factory.mktemp("cnn") / "cnn.hybe"
    export_model(randomize(BinaryCNN(image_size=(9, 9)), seed=1), path)
    return load(path)


def test_bad_inputs_raise_clear_errors(head_file, cnn):
    head = load(head_file)
    with pytest.raises(DataError, match=r"shape \(N, 40\)"):
        head.predict(np.zeros((2, 41), np.float32))
    with pytest.raises(DataError, match="float32"):
        head.predict(np.zeros((2, 40), np.float64))
    with pytest.raises(DataError, match=r"shape \(N, 40\)"):
        head.predict(np.zeros(40, np.float32))
    with pytest.raises(DataError, match="NaN"):
        head.logits(np.full((2, 40), np.nan, np.float32))
    with pytest.raises(DataError, match="NCHW"):
        cnn.predict(np.zeros((2, 9, 9, 1), np.float32))
    with pytest.raises(DataError, match="NaN"):
        cnn.predict(np.full((1, 1, 9, 9), np.nan, np.float32))
    with pytest.raises(DataError, match="uint8"):
        head.predict_packed(np.zeros((2, 5), np.int64))
    with pytest.raises(DataError, match="codes"):
        cnn.predict_packed(np.zeros((2, 5), np.uint8))


def test_non_contiguous_input_is_fine(head_file):
    head = load(head_file)
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    np.testing.assert_array_equal(head.predict(x.T), head.predict(np.ascontiguousarray(x.T)))
