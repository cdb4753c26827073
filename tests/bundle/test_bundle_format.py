"""Bundle files are validated whole: container, header, parts and their agreement."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from hybnn.bundle import format as fmt
from hybnn.engine import format as engine_fmt
from hybnn.errors import ArtifactError, FingerprintMismatch

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def parts(bundle_fp32):
    return fmt.read(bundle_fp32[0])


def forge(parts, edit=None, onnx=None, arrays=None):
    """Bundle bytes with a *valid* checksum: what a careless or hostile writer produces."""
    header = copy.deepcopy(parts.header)
    if edit:
        edit(header)
    raw = np.frombuffer(parts.onnx if onnx is None else onnx, dtype=np.uint8)
    all_arrays = {**parts.head_arrays, fmt.ONNX_ARRAY: raw, **(arrays or {})}
    return engine_fmt.encode(header, all_arrays, fmt.DTYPES)


def load_bytes(tmp_path, data, strict=False):
    from hybnn import runtime

    path = tmp_path / "x.bundle"
    path.write_bytes(data)
    return runtime.load(path, strict=strict)


def test_round_trip_keeps_every_part(parts, bundle_fp32):
    again = fmt.decode(bundle_fp32[0].read_bytes())
    assert again.header == parts.header and again.onnx == parts.onnx
    assert again.input_shape == (1, 8, 8) and again.latent_bits == 200
    assert set(again.head_arrays) == {k for k in again.head_arrays if k.startswith("layers.")}


def _set(path, value):
    def edit(header):
        node = header
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set(("head", "input", "bits"), 201), "writes 200 bits but the head reads 201"),
        (_set(("encoder", "latent_bits"), 100), "writes 100 bits but the head reads 200"),
        (_set(("encoder", "precision"), "int4"), "precision"),
        (_set(("encoder", "fingerprint"), "a" * 64), "trained on codes of encoder"),
        (_set(("head", "metadata", "source", "encoder_fingerprint"), "b" * 64),
         "trained on codes of encoder bbbbbbbbbbbb"),
        (_set(("input", "channels"), 0), "input channels"),
        (_set(("input", "height"), 9), "input is"),
        (_set(("input", "dtype"), "float64"), "float32 NCHW"),
        (_set(("input", "range"), [0, 255]), "range"),
        (_set(("label_space",), {"labels": [0, 1], "names": ["a", "b"]}), "2 entries"),
        (_set(("label_space",), None), "lacks a label space"),
        (_set(("head", "kind"), "codes"), "engine header"),
        (_set(("head", "format_version"), 9), "newer than this hybnn"),
        (_set(("head", "layers", 0, "out_features"), 65), "invalid"),
        (_set(("head",), []), "'head' must be a JSON object"),
        (_set(("format_version",), 2), "newer than this hybnn"),
        (_set(("kind",), "codes"), "does not describe a hybnn bundle"),
        (_set(("encoder", "array"), "other"), "must be stored in array"),
        (_set(("encoder", "input_name"), "pixels"), "one input named 'pixels'"),
    ],
)
def test_inconsistent_bundles_are_refused(tmp_path, parts, edit, message):
    with pytest.raises(ArtifactError, match=message):
        load_bytes(tmp_path, forge(parts, edit))


def test_fingerprint_disagreement_is_a_fingerprint_mismatch(tmp_path, parts):
    with pytest.raises(FingerprintMismatch):
        load_bytes(tmp_path, forge(parts, _set(("encoder", "fingerprint"), "c" * 64)))


@pytest.mark.parametrize("strict", [False, True])
def test_a_broken_onnx_model_is_refused(tmp_path, parts, strict):
    with pytest.raises(ArtifactError, match="encoder"):
        load_bytes(tmp_path, forge(parts, onnx=b"\x08\x07garbage" * 50), strict)
    with pytest.raises(ArtifactError, match="encoder"):
        load_bytes(tmp_path, forge(parts, onnx=parts.onnx[: len(parts.onnx) // 2]), strict)


@pytest.mark.parametrize("strict", [False, True])
def test_an_onnx_model_of_other_shapes_is_refused(tmp_path, parts, strict):
    from torch import nn

    from hybnn.bundle.onnx_export import export_onnx

    wrong = export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(64, 100)), (1, 8, 8))
    with pytest.raises(ArtifactError, match=r"output is .*expected .*200"):
        load_bytes(tmp_path, forge(parts, onnx=wrong), strict)


def test_stray_arrays_are_refused(tmp_path, parts):
    extra = {"stray": np.zeros(3, np.int32)}
    with pytest.raises(ArtifactError, match="arrays no layer uses"):
        load_bytes(tmp_path, forge(parts, arrays=extra))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "unreadable arrays"),
        (lambda b: b[:30], "truncated"),
        (lambda b: b"", "not a hybnn bundle"),
        (lambda b: b"\0" * 64, "not a hybnn bundle"),
        (lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], "checksum"),
        (lambda b: b[:8] + b"{" + b"[" * 100_000 + b[9:], "unreadable safetensors header"),
    ],
)
def test_damaged_bundles_are_refused(tmp_path, bundle_fp32, mutate, message):
    with pytest.raises(ArtifactError, match=message):
        load_bytes(tmp_path, mutate(bundle_fp32[0].read_bytes()))


def test_random_bytes_are_refused(tmp_path, bundle_fp32):
    good = bundle_fp32[0].read_bytes()
    rng = np.random.default_rng(0)
    for _ in range(40):
        data = bytearray(good)
        for i in rng.integers(0, len(data), size=3):
            data[i] ^= int(rng.integers(1, 256))
        with pytest.raises(ArtifactError):
            load_bytes(tmp_path, bytes(data))


def test_engine_files_and_directories_are_named(tmp_path, head_dir):
    from hybnn import runtime
    from hybnn.engine.export import export_artifact

    engine = tmp_path / "head.engine"
    export_artifact(head_dir, engine)
    with pytest.raises(ArtifactError, match=r"is a hybnn engine file .*hybnn\.engine\.load"):
        runtime.load(engine)
    legacy = tmp_path / "old.hybe"
    from hybnn.engine import legacy_hybe

    legacy.write_bytes(legacy_hybe.MAGIC + b"\0" * 64)
    with pytest.raises(ArtifactError, match=r"version-1 \.hybe engine file"):
        runtime.load(legacy)
    with pytest.raises(ArtifactError, match="is a directory, not a bundle file"):
        runtime.load(head_dir)
    with pytest.raises(ArtifactError, match="cannot read bundle"):
        runtime.load(tmp_path / "missing.bundle")


def test_writer_refuses_what_the_reader_would(tmp_path, parts):
    header = copy.deepcopy(parts.header)
    header["head"]["input"]["bits"] = 7
    with pytest.raises(ArtifactError, match="head reads 7"):
        fmt.write(tmp_path / "b", header, parts.onnx, parts.head_arrays)
    assert not (tmp_path / "b").exists()
    assert json.dumps(parts.header)  # the header stays plain JSON
