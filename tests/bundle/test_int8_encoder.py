"""The int8-encoder artifact: quantized once, its codes train the head, its graph is bundled
byte for byte, and a forged file with a valid hash gets one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hybnn import api
from hybnn.artifacts import save_artifact
from hybnn.errors import ArtifactError, DataError, FingerprintMismatch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory, tiny_encoder):
    out = tmp_path_factory.mktemp("enc8") / "enc8"
    api.quantize(api.QuantizeOptions(encoder=str(tiny_encoder[0]), out=str(out),
                                     calibration_samples=64, agreement_samples=128))
    return out


@pytest.fixture(scope="module")
def int8_head(tmp_path_factory, int8_dir):
    """A 10-class head trained 3 epochs on the int8 encoder's digits codes."""
    root = tmp_path_factory.mktemp("int8-head")
    for split in ("train", "test"):
        api.extract(api.ExtractOptions(encoder=str(int8_dir), data="digits", split=split,
                                       out=str(root / f"{split}.safetensors")))
    api.train(api.TrainOptions(codes=str(root / "train.safetensors"), out=str(root / "head"),
                               epochs=3, hidden=[64], progress=False))
    return root


def test_quantize_records_its_source_calibration_and_agreement(int8_dir, tiny_encoder):
    from hybnn.encoders.int8 import load_int8_graph

    graph = load_int8_graph(int8_dir)
    meta = json.loads((int8_dir / "meta.json").read_text())
    assert meta["kind"] == "int8-encoder"
    assert graph.quantized_from == tiny_encoder[1].fingerprint != graph.fingerprint
    assert graph.meta["quantization"]["calibration"]["size"] == 64
    agree = graph.meta["bit_agreement"]
    print(f"int8 vs float32 bits on {agree['images']} test images: {agree['equal_bits']:.4f}")
    assert agree["images"] == 128 and 0.9 < agree["equal_bits"] <= 1.0
    assert graph.latent_bits == 200 and graph.image_size == (8, 8) and graph.channels == 1


def test_int8_codes_are_the_ones_the_bundle_computes(int8_head, int8_dir, tmp_path,
                                                     test_split):
    from hybnn import runtime
    from hybnn.bundle.export import export_bundle
    from hybnn.encoders.int8 import load_int8_graph
    from hybnn.pipeline.codes import CodeStore

    store = CodeStore.load(int8_head / "test.safetensors")
    graph = load_int8_graph(int8_dir)
    assert store.encoder_fingerprint == graph.fingerprint
    header = export_bundle(int8_head / "head", int8_dir, tmp_path / "m.bundle")
    assert header["encoder"]["fingerprint"] == graph.fingerprint
    assert header["encoder"]["quantized_from"] == graph.quantized_from
    assert header["encoder"]["precision"] == "int8"
    model = runtime.load(tmp_path / "m.bundle", strict=True)
    from hybnn.bundle.format import read

    assert read(tmp_path / "m.bundle").onnx == graph.onnx  # bundled as is, not re-quantized
    np.testing.assert_array_equal(model.codes(test_split.x), store.bits())
    # the torch head on the stored codes and the bundle agree on every image
    res = api.evaluate(api.EvaluateOptions(model=str(int8_head / "head"),
                                           codes=str(int8_head / "test.safetensors"),
                                           out=str(tmp_path)))
    assert res["accuracy"] == pytest.approx(float(np.mean(
        model.predict(test_split.x) == test_split.y)), abs=1e-9)


def test_heads_and_encoders_of_other_codes_are_refused(int8_head, int8_dir, head_dir,
                                                       tiny_encoder, tmp_path):
    from hybnn.bundle.export import export_bundle

    with pytest.raises(FingerprintMismatch, match="quantized from that encoder"):
        export_bundle(head_dir, int8_dir, tmp_path / "a.bundle")  # float32-code head
    with pytest.raises(FingerprintMismatch, match="trained on codes of encoder"):
        export_bundle(int8_head / "head", tiny_encoder[0], tmp_path / "b.bundle")
    assert not list(tmp_path.glob("*.bundle"))
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(FingerprintMismatch):
        api.predict(api.PredictOptions(model=str(int8_head / "head"),
                                       encoder=str(tiny_encoder[0]),
                                       inputs=[str(tmp_path / "x.npy")]))


def test_int8_encoder_runs_on_the_cpu_only_and_checks_shapes(int8_dir):
    from hybnn.encoders.int8 import load as load_int8_encoder

    enc = load_int8_encoder(int8_dir)
    assert enc.encode(np.zeros((0, 1, 8, 8), np.float32)).shape == (0, 200)
    with pytest.raises(DataError, match="shape"):
        enc.encode(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(DataError, match=r"int8 encoder|CUDA"):
        api.extract(api.ExtractOptions(encoder=str(int8_dir), data="digits", out="x",
                                       device="cuda"))


def forge(directory, onnx=None, tensors=None, **changes):
    """An int8-encoder artifact with a valid fingerprint and the given defects."""
    config = {"latent_bits": 200, "in_channels": 1, "image_size": [8, 8],
              "input_name": "images", "output_name": "logits", "opset": 18}
    extra = {"quantized_from": "a" * 64, "quantization": {}}
    for key, value in changes.items():
        (config if key in config else extra)[key] = value
    raw = torch.frombuffer(bytearray(onnx or b"\x08\x07garbage"), dtype=torch.uint8)
    save_artifact(directory, "int8-encoder", tensors or {"onnx": raw}, config, extra)
    return directory


@pytest.mark.parametrize("defect, match", [
    ({"onnx": b"not a graph at all"}, "not an ONNX model"),
    ({"tensors": {"onnx": torch.zeros(4)}}, "uint8 bytes"),
    ({"tensors": {"onnx": torch.zeros(4, dtype=torch.uint8), "x": torch.zeros(1)}}, "one array"),
    ({"latent_bits": True}, "latent_bits"),
    ({"latent_bits": 10**9}, "latent_bits"),
    ({"image_size": [8]}, "image_size"),
    ({"image_size": [8, -1]}, "image width"),
    ({"input_name": "logits"}, "two different"),
    ({"quantized_from": None}, "quantized from"),
    ({"quantization": [1]}, "quantization"),
])
def test_a_forged_int8_encoder_with_a_valid_hash_gets_a_clear_error(tmp_path, defect, match):
    from hybnn.encoders.int8 import load as load_int8_encoder

    with pytest.raises(ArtifactError, match=match):
        load_int8_encoder(forge(tmp_path / "enc8", **defect))


def test_a_real_graph_under_a_forged_config_is_refused_by_its_shapes(int8_dir, tmp_path):
    from hybnn.encoders.int8 import load as load_int8_encoder
    from hybnn.encoders.int8 import load_int8_graph

    real = load_int8_graph(int8_dir).onnx
    for change, match in (({"latent_bits": 100}, "output"), ({"image_size": [28, 28]}, "input"),
                          ({"input_name": "x"}, "input named")):
        with pytest.raises(ArtifactError, match=match):
            load_int8_encoder(forge(tmp_path / f"enc8-{len(change)}-{match[:3]}", real,
                                    **change))


def test_the_cli_quantizes_then_trains_and_bundles_on_int8_codes(tiny_encoder, tmp_path,
                                                                   capsys):
    from hybnn.cli import main

    enc8, codes, head = (str(tmp_path / n) for n in ("enc8", "tr.safetensors", "head"))
    assert main(["quantize", "--encoder", str(tiny_encoder[0]), "--out", enc8,
                 "--calibration-samples", "32", "--agreement-samples", "0"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("int8 encoder ") and "calibrated on 32 digits train images" in said
    assert main(["extract", "--encoder", enc8, "--data", "digits", "--task", "0v1",
                 "--out", codes]) == 0
    assert main(["train", "--codes", codes, "--out", head, "--epochs", "1",
                 "--no-progress"]) == 0
    assert main(["export", head, "--encoder", enc8, "--out", str(tmp_path / "m.bundle")]) == 0
    assert "bundle: int8 encoder" in capsys.readouterr().out
    assert main(["export", head, "--encoder", str(tiny_encoder[0]),
                 "--out", str(tmp_path / "f.bundle")]) == 2
    assert "trained on codes of encoder" in capsys.readouterr().err


def test_calibration_counts_that_are_no_multiple_of_the_batch(tiny_encoder, tmp_path):
    """40 or 41 calibration images (before: ONNX Runtime's calibrator failed on the short
    last batch, "inhomogeneous shape")."""
    from hybnn.bundle.quantize import CALIBRATION_BATCH, calibration_batch

    assert calibration_batch(40) == 20 and calibration_batch(41) == 1
    assert calibration_batch(CALIBRATION_BATCH * 4) == CALIBRATION_BATCH
    assert calibration_batch(1) == 1
    api.quantize(api.QuantizeOptions(encoder=str(tiny_encoder[0]), out=str(tmp_path / "e8"),
                                     calibration_samples=40, agreement_samples=0))
    assert (tmp_path / "e8" / "meta.json").is_file()
