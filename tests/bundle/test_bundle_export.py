"""A bundle is the head and its encoder in one file, and runs like the torch path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hybnn.errors import ArtifactError, FingerprintMismatch

pytest.importorskip("onnxruntime")


def torch_path(encoder, head_dir, x):
    """Today's path: torch encoder codes, torch BNN head."""
    from hybnn.models.io import load_model
    from hybnn.pipeline.codes import bits_to_signs

    head, _ = load_model(head_dir)
    codes = encoder.encode(x)
    with torch.no_grad():
        return codes, head(bits_to_signs(codes)).argmax(1).numpy()


def test_fp32_bundle_codes_and_predictions_match_torch(bundle_fp32, tiny_encoder, head_dir,
                                                       test_split):
    from hybnn import runtime

    model = runtime.load(bundle_fp32[0])
    codes, classes = torch_path(tiny_encoder[1], head_dir, test_split.x)
    onnx_codes = model.codes(test_split.x)
    differing = float(np.mean(onnx_codes != codes))
    print(f"fp32 ONNX vs torch: {100 * differing:.4f} % of {codes.size} bits differ")
    assert onnx_codes.dtype == bool and onnx_codes.shape == codes.shape
    assert differing < 0.005
    predicted = model.predict(test_split.x)
    assert predicted.dtype == np.int64
    assert np.mean(predicted == classes) >= 0.99
    # logits come from the packed head on the ONNX codes
    packed = model.head.logits_packed(np.packbits(onnx_codes, axis=1))
    np.testing.assert_array_equal(model.logits(test_split.x), packed)


def test_bundle_records_its_parts(bundle_fp32, tiny_encoder, head_dir):
    from hybnn import runtime

    header = bundle_fp32[1]
    enc = tiny_encoder[1]
    meta = json.loads((head_dir / "meta.json").read_text())
    assert header["kind"] == "bundle" and header["format_version"] == 1
    assert header["encoder"]["fingerprint"] == enc.fingerprint == meta["encoder_fingerprint"]
    assert header["encoder"]["precision"] == "fp32" and header["encoder"]["quantization"] is None
    assert header["input"] == {"channels": 1, "height": 8, "width": 8, "dtype": "float32",
                               "layout": "NCHW", "range": [0.0, 1.0]}
    model = runtime.load(bundle_fp32[0], strict=True)  # onnx.checker too
    assert model.label_space.to_json() == meta["label_space"]
    assert model.latent_bits == 200 and model.num_classes == 10


def test_int8_bundle_records_calibration_and_stays_close(tmp_path, head_dir, tiny_encoder,
                                                         bundle_fp32, test_split):
    import onnxruntime

    from hybnn import runtime
    from hybnn.bundle.export import export_bundle

    path = tmp_path / "int8.bundle"
    header = export_bundle(head_dir, tiny_encoder[0], path, int8=True, calibration_samples=64,
                           calibration_seed=3)
    q = header["encoder"]["quantization"]
    assert header["encoder"]["precision"] == "int8"
    assert q["calibration"] == {
        "source": "digits", "split": "train", "size": 64, "seed": 3,
        "selection": "numpy.random.default_rng(seed).choice without replacement, sorted"}
    assert q["format"] == "QDQ" and q["calibrate"] == "Percentile"
    assert q["float_outputs"] == ["Gemm"] and q["percentile"] == 99.999
    assert q["onnxruntime"] == onnxruntime.__version__
    int8 = runtime.load(path, strict=True)
    fp32 = runtime.load(bundle_fp32[0])
    same = float(np.mean(int8.codes(test_split.x) == fp32.codes(test_split.x)))
    print(f"int8 vs fp32 codes: {100 * same:.2f} % identical bits")
    assert same > 0.9
    ops = int8.header["encoder"]["quantization"]["method"]
    assert ops == "onnxruntime.quantization.quantize_static"


def test_calibration_sample_is_seeded(tiny_encoder):
    from hybnn.bundle.encoder_graph import calibration_images

    a, info = calibration_images(tiny_encoder[1], 16, 5)
    b, _ = calibration_images(tiny_encoder[1], 16, 5)
    c, _ = calibration_images(tiny_encoder[1], 16, 6)
    assert a.shape == (16, 1, 8, 8) and info["size"] == 16
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_head_of_another_encoder_is_refused(tmp_path, head_dir, tiny_encoder):
    from hybnn.bundle.export import EncoderGraph, build_bundle, export_bundle
    from hybnn.models.io import load_model

    head, meta = load_model(head_dir)
    meta = {**meta, "encoder_fingerprint": "0" * 64}
    with pytest.raises(FingerprintMismatch, match="trained on codes of encoder 000000000000"):
        build_bundle(head, meta, tiny_encoder[1], EncoderGraph(b"unused", "fp32"),
                     tmp_path / "b")
    edited = tmp_path / "head"
    edited.mkdir()
    for name in ("weights.safetensors", "meta.json"):
        (edited / name).write_bytes((head_dir / name).read_bytes())
    on_disk = json.loads((edited / "meta.json").read_text())
    on_disk["encoder_fingerprint"] = "f" * 64
    (edited / "meta.json").write_text(json.dumps(on_disk))
    with pytest.raises(FingerprintMismatch, match="ffffffffffff"):
        export_bundle(edited, tiny_encoder[0], tmp_path / "c")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_only_bnn_heads_go_into_bundles(tmp_path, tiny_encoder):
    from hybnn.bundle.export import EncoderGraph, build_bundle
    from hybnn.models import FloatCNN

    with pytest.raises(ArtifactError, match="BNN head on codes"):
        build_bundle(FloatCNN((8, 8)), {}, tiny_encoder[1], EncoderGraph(b"x", "fp32"),
                     tmp_path / "b")
