"""Packed binary codes and the code store file: 200 bits -> 25 bytes, bit 1 = +1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save_file

from hybnn.errors import ArtifactError, FingerprintMismatch
from hybnn.pipeline.codes import (
    CODES_VERSION,
    MAX_CLASSES,
    CodeStore,
    bits_to_signs,
    pack_code_bits,
    payload_sha256,
    store_sha256,
    unpack_code_bits,
)

FP = "a" * 64
OTHER_FP = "b" * 64


def random_bits(n: int, bits: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (n, bits)).astype(bool)


# ------------------------------------------------------------------------------------ packing


def test_200_bits_pack_into_25_bytes():
    packed = pack_code_bits(random_bits(7, 200))
    assert packed.shape == (7, 25) and packed.dtype == np.uint8


def test_packing_is_big_endian_within_each_byte_with_zero_tail():
    bits = np.array([[1, 0, 0, 0, 0, 0, 0, 1, 1, 1]])
    packed = pack_code_bits(bits)
    assert packed.tolist() == [[0b1000_0001, 0b1100_0000]]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300).flatmap(
    lambda b: hnp.arrays(bool, st.tuples(st.integers(0, 6), st.just(b)))))
def test_property_pack_unpack_roundtrip_for_any_width(bits):
    packed = pack_code_bits(bits)
    assert packed.shape == (bits.shape[0], (bits.shape[1] + 7) // 8)
    np.testing.assert_array_equal(unpack_code_bits(packed, bits.shape[1]), bits.astype(np.uint8))


def test_bits_to_signs_maps_one_to_plus_one():
    signs = bits_to_signs(np.array([[1, 0, 1]], np.uint8))
    assert signs.dtype == torch.float32
    assert signs.tolist() == [[1.0, -1.0, 1.0]]


# -------------------------------------------------------------------------------- code store


def make_store(n=10, bits=200, seed=0) -> tuple[CodeStore, np.ndarray]:
    raw = random_bits(n, bits, seed)
    labels = np.random.default_rng(seed).integers(0, 3, n)
    store = CodeStore(pack_code_bits(raw), labels, bits, FP, {"source": "toy", "task": "all"})
    return store, raw


def test_store_exposes_bits_signs_and_tensors():
    store, raw = make_store(bits=13)
    assert len(store) == 10 and store.bytes_per_sample == 2
    np.testing.assert_array_equal(store.bits(), raw)
    signs = store.signs()
    assert signs.shape == (10, 13) and set(signs.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(signs > 0, torch.from_numpy(raw))  # bit 1 = +1
    x, y = store.tensors()
    assert torch.equal(x, signs) and y.dtype == torch.int64
    assert y.tolist() == store.labels.tolist()


def test_store_save_load_roundtrip(tmp_path):
    store, raw = make_store(n=33, bits=200)
    path = store.save(tmp_path / "codes.safetensors")
    loaded = CodeStore.load(path)
    np.testing.assert_array_equal(loaded.packed, store.packed)
    np.testing.assert_array_equal(loaded.labels, store.labels)
    np.testing.assert_array_equal(loaded.bits(), raw)
    assert loaded.num_bits == 200 and loaded.encoder_fingerprint == FP
    assert loaded.meta == {"source": "toy", "task": "all"}


def test_stored_file_is_about_25_bytes_per_sample(tmp_path):
    store, _ = make_store(n=1000, bits=200)
    size = store.save(tmp_path / "c.safetensors").stat().st_size
    assert 1000 * (25 + 8) <= size < 1000 * (25 + 8) + 1024  # codes + int64 labels + header


def test_store_roundtrip_of_empty_store(tmp_path):
    store = CodeStore(np.zeros((0, 25), np.uint8), np.zeros(0, np.int64), 200, FP)
    loaded = CodeStore.load(store.save(tmp_path / "empty.safetensors"))
    assert len(loaded) == 0 and loaded.signs().shape == (0, 200)


@pytest.mark.parametrize(
    ("packed", "labels", "bits"),
    [
        (np.zeros((2, 24), np.uint8), np.zeros(2, np.int64), 200),
        (np.zeros((2, 25), np.int64), np.zeros(2, np.int64), 200),
        (np.zeros(25, np.uint8), np.zeros(1, np.int64), 200),
        (np.zeros((2, 25), np.uint8), np.zeros(3, np.int64), 200),
        (np.zeros((2, 25), np.uint8), np.array([0, -1]), 200),
        (np.zeros((2, 25), np.uint8), np.array([0.0, 1.0]), 200),
        (np.zeros((2, 0), np.uint8), np.zeros(2, np.int64), 0),
    ],
    ids=["width", "dtype", "1d", "labels-len", "neg-label", "float-label", "zero-bits"],
)
def test_store_validates_its_arrays(packed, labels, bits):
    with pytest.raises(ArtifactError):
        CodeStore(packed, labels, bits, FP)


def test_require_encoder(tmp_path):
    store, _ = make_store()
    store.require_encoder(FP)  # same encoder: fine
    with pytest.raises(FingerprintMismatch, match="re-extract codes") as err:
        store.require_encoder(OTHER_FP, "the BNN head")
    assert "aaaaaaaaaaaa" in str(err.value) and "bbbbbbbbbbbb" in str(err.value)
    assert isinstance(err.value, ArtifactError)


# -------------------------------------------------------------------------- refusing files


@pytest.fixture
def saved(tmp_path):
    store, _ = make_store(n=50)
    return store.save(tmp_path / "codes.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        CodeStore.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],
        lambda raw: raw[:7],
        lambda raw: b"",
        lambda raw: b"\xff" * 64,
        lambda raw: raw[:9] + b"!" + raw[10:],
        lambda raw: b"PK\x03\x04" + raw[4:],
    ],
    ids=["half", "seven-bytes", "empty", "garbage", "broken-header", "bad-length"],
)
def test_truncated_or_corrupt_file_is_an_artifact_error(saved, damage):
    saved.write_bytes(damage(saved.read_bytes()))
    with pytest.raises(ArtifactError, match=r"codes\.safetensors"):
        CodeStore.load(saved)


def write_foreign(path, header, arrays=None):
    arrays = arrays or {"codes": np.zeros((3, 25), np.uint8), "labels": np.zeros(3, np.int64)}
    metadata = None if header is None else {"hybnn": header}
    save_file(arrays, str(path), metadata=metadata)
    return path


def write_forged(path, header: dict, codes=None, labels=None):
    """A store whose header says anything, with a checksum that matches it (a forger can
    always recompute one): only the checks against the payload stand in its way."""
    codes = np.zeros((3, 25), np.uint8) if codes is None else codes
    labels = np.zeros(3, np.int64) if labels is None else labels
    header = {**header, "sha256": store_sha256(header, codes, labels)}
    return write_foreign(path, json.dumps(header), {"codes": codes, "labels": labels})


GOOD_HEADER = {"kind": "codes", "format_version": CODES_VERSION, "num_bits": 200,
               "encoder_fingerprint": FP}


@pytest.mark.parametrize(
    ("header", "arrays", "message"),
    [
        (None, None, "not a hybnn code store"),
        ("not json", None, "not a readable code store"),
        (json.dumps([1, 2]), None, "not a hybnn code store"),
        (json.dumps({**GOOD_HEADER, "kind": "model"}), None, "not a hybnn code store"),
        (json.dumps({**GOOD_HEADER, "format_version": 3}), None, "unsupported code store version"),
        (json.dumps(GOOD_HEADER), {"weights": np.zeros(3, np.float32)}, "lacks codes or labels"),
        (json.dumps({k: v for k, v in GOOD_HEADER.items() if k != "num_bits"}), None,
         "num_bits"),
        (json.dumps({k: v for k, v in GOOD_HEADER.items() if k != "encoder_fingerprint"}), None,
         "encoder_fingerprint"),
        (json.dumps({**GOOD_HEADER, "num_bits": 64}), None, "no sha256"),
    ],
    ids=["no-header", "bad-json", "list", "wrong-kind", "future", "no-arrays", "no-num-bits",
         "no-fingerprint", "no-checksum"],
)
def test_foreign_safetensors_file_is_an_artifact_error(tmp_path, header, arrays, message):
    path = write_foreign(tmp_path / "foreign.safetensors", header, arrays)
    with pytest.raises(ArtifactError, match=message):
        CodeStore.load(path)


def test_model_weights_are_not_a_code_store(tmp_path):
    from hybnn.models import BNNHead
    from hybnn.models.io import save_model

    save_model(tmp_path / "m", BNNHead(16, 2, (8,)))
    with pytest.raises(ArtifactError, match="not a hybnn code store"):
        CodeStore.load(tmp_path / "m" / "weights.safetensors")


# ------------------------------------------------------------------ checksum and classes


def flip_byte_in(path, tensor: str, index: int = 0) -> None:
    """Flip one byte inside ``tensor``'s data, leaving the safetensors header valid."""
    raw = bytearray(path.read_bytes())
    size = int.from_bytes(raw[:8], "little")
    start, _ = json.loads(raw[8:8 + size])[tensor]["data_offsets"]
    raw[8 + size + start + index] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(("tensor", "index"), [("codes", 0), ("codes", 77), ("labels", 8)])
def test_a_flipped_byte_in_codes_or_labels_is_refused(saved, tensor, index):
    flip_byte_in(saved, tensor, index)
    with pytest.raises(ArtifactError, match=r"codes\.safetensors.*do not match the checksum"):
        CodeStore.load(saved)


def header_of(path) -> dict:
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        return json.loads(json.loads(fh.read(size))["__metadata__"]["hybnn"])


def test_the_checksum_is_in_the_header_not_in_meta(saved):
    header = header_of(saved)
    store = CodeStore.load(saved)
    assert header["sha256"] == store_sha256(header, store.packed, store.labels)
    assert header["format_version"] == CODES_VERSION
    assert "sha256" not in store.meta


def test_a_store_without_checksum_is_refused_with_a_way_out(tmp_path):
    path = write_foreign(tmp_path / "old.safetensors", json.dumps(GOOD_HEADER))
    with pytest.raises(ArtifactError, match=r"old\.safetensors.*no sha256.*re-extract"):
        CodeStore.load(path)


def test_labels_beyond_the_recorded_classes_are_refused(tmp_path):
    packed = np.zeros((3, 25), np.uint8)
    with pytest.raises(ArtifactError, match="label 2 is not one of its 2 classes"):
        CodeStore(packed, np.array([0, 1, 2]), 200, FP, {"num_classes": 2})
    path = write_forged(tmp_path / "wide.safetensors", {**GOOD_HEADER, "num_classes": 2},
                        packed, np.array([0, 1, 2]))
    with pytest.raises(ArtifactError, match=r"wide\.safetensors.*label 2"):
        CodeStore.load(path)


# ------------------------------------------- every header field under the checksum, and checked


@pytest.mark.parametrize(("field", "value"), [
    ("num_classes", 4), ("num_classes", 10**9), ("num_bits", 199),
    ("encoder_fingerprint", "b" * 64), ("task", "2v3"),
    ("label_space", {"labels": [5, 6, 7], "names": ["5", "6", "7"]})])
def test_an_edited_header_field_breaks_the_checksum(tmp_path, field, value):
    store, _ = make_store(n=12)
    store.meta.update(num_classes=3, label_space={"labels": [0, 1, 2], "names": ["a", "b", "c"]})
    path = store.save(tmp_path / "codes.safetensors")
    header = {**header_of(path), field: value}  # edited, the old checksum kept
    write_foreign(path, json.dumps(header), {"codes": store.packed, "labels": store.labels})
    with pytest.raises(ArtifactError, match="do not match the checksum"):
        CodeStore.load(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"num_classes": 10**9}, "num_classes must be an integer in 1..65,536"),
    ({"num_classes": 2.0}, "num_classes must be an integer"),
    ({"num_classes": 1}, "label 2 is not one of its 1 classes"),
    ({"num_bits": 200.9}, "num_bits must be an integer"),
    ({"num_bits": "200"}, "num_bits must be an integer"),
    ({"num_bits": True}, "num_bits must be an integer"),
    ({"num_bits": 10**9}, "num_bits must be an integer in 1..65,536"),
    ({"num_bits": 193}, r"shape \(N, 25\)|bits set past"),
    ({"num_bits": 64}, r"shape \(N, 8\)"),
    ({"encoder_fingerprint": 12}, "encoder_fingerprint must be a string"),
    ({"encoder_fingerprint": ""}, "encoder_fingerprint must be a string"),
    ({"label_space": {"labels": [0, 1], "names": ["a", "b"]}}, "label space has 2 entries"),
    ({"label_space": "0,1,2"}, "invalid label space"),
])
def test_a_forged_header_with_a_valid_checksum_is_refused(tmp_path, change, message):
    codes = pack_code_bits(random_bits(3, 200))
    header = {**GOOD_HEADER, "num_classes": 3, **change}
    path = write_forged(tmp_path / "forged.safetensors", header, codes, np.array([0, 1, 2]))
    with pytest.raises(ArtifactError, match=message):
        CodeStore.load(path)


def test_bits_past_num_bits_are_refused():
    packed = pack_code_bits(np.ones((2, 200), bool))  # 200 bits fill 25 bytes exactly
    with pytest.raises(ArtifactError, match="bits set past their 199 bits"):
        CodeStore(packed, np.zeros(2, np.int64), 199, FP)


def test_labels_above_the_class_cap_are_refused_without_a_recorded_count():
    with pytest.raises(ArtifactError, match="above the limit"):
        CodeStore(np.zeros((1, 25), np.uint8), np.array([MAX_CLASSES]), 200, FP)


def test_a_format_1_store_is_refused_with_a_way_out(tmp_path):
    # what hybnn wrote before: its checksum covered the codes and labels alone
    codes, labels = np.zeros((3, 25), np.uint8), np.zeros(3, np.int64)
    header = {**GOOD_HEADER, "format_version": 1, "num_classes": 10**9,
              "payload_sha256": payload_sha256(codes, labels)}
    path = write_foreign(tmp_path / "v1.safetensors", json.dumps(header),
                         {"codes": codes, "labels": labels})
    with pytest.raises(ArtifactError, match=r"v1\.safetensors: code store format 1.*re-extract"):
        CodeStore.load(path)


@pytest.mark.parametrize("classes", [0, -1, 2.5, "2", True])
def test_recorded_classes_must_be_a_positive_integer(classes):
    with pytest.raises(ArtifactError, match="num_classes"):
        CodeStore(np.zeros((1, 25), np.uint8), np.zeros(1, np.int64), 200, FP,
                  {"num_classes": classes})


def test_deeply_nested_header_is_an_artifact_error(tmp_path):
    path = write_foreign(tmp_path / "deep.safetensors", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArtifactError, match="not a readable code store"):
        CodeStore.load(path)
