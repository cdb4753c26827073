"""Exported models agree with PyTorch: exact integer accumulators, identical predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_reference import accumulators, randomize

from hybnn.engine import export_artifact, export_model, load
from hybnn.models import BinaryCNN, BNNHead
from hybnn.models.io import save_model

HEADS = [
    (dict(in_bits=200, num_classes=2), 1),
    (dict(in_bits=200, num_classes=2), 4096),
    (dict(in_bits=37, num_classes=5, hidden=(100, 65), scaling="xnor"), 300),
    (dict(in_bits=130, num_classes=3, hidden=(), scaling="learned"), 7),
    (dict(in_bits=64, num_classes=10, hidden=(129, 64, 33), scaling="none"), 257),
]
CNNS = [
    (dict(image_size=(28, 28)), 64),
    (dict(image_size=(9, 9), in_channels=3, num_classes=4, fc=(37, 70), scaling="xnor"), 33),
    (dict(image_size=(13, 13), in_channels=2, num_classes=3, fc=(65, 31), scaling="learned"), 1),
]


def _check(model, x: torch.Tensor, tmp_path) -> None:
    path = tmp_path / "model.hybe"
    export_model(model, path, metadata={"note": "test"})
    engine = load(path)
    xn = x.numpy()
    ref = accumulators(model, x)
    got = engine.accumulators(xn)
    assert len(got) == len(ref)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_array_equal(g, r.numpy())
    with torch.no_grad():
        logits = model(x)
    assert (engine.predict(xn) == logits.argmax(1).numpy()).all()
    np.testing.assert_allclose(engine.logits(xn), logits.numpy(), rtol=1e-5, atol=1e-5)
    assert engine.metadata["note"] == "test"


@pytest.mark.parametrize(("config", "batch"), HEADS)
def test_head_matches_torch(config, batch, tmp_path):
    torch.manual_seed(batch)
    model = randomize(BNNHead(**config), seed=batch)
    x = torch.randn(batch, config["in_bits"])
    x[0, :5] = 0.0  # sign(0) = +1
    _check(model, x, tmp_path)


@pytest.mark.parametrize(("config", "batch"), CNNS)
def test_binary_cnn_matches_torch(config, batch, tmp_path):
    torch.manual_seed(batch)
    model = randomize(BinaryCNN(**config), seed=batch + 1)
    h, w = config["image_size"]
    x = torch.randn(batch, config.get("in_channels", 1), h, w)
    _check(model, x, tmp_path)


def test_packed_codes_equal_float_codes(tmp_path):
    model = randomize(BNNHead(200, 2), seed=3)
    export_model(model, tmp_path / "h.hybe")
    engine = load(tmp_path / "h.hybe")
    bits = np.random.default_rng(0).random((50, 200)) < 0.5
    pm1 = np.where(bits, 1.0, -1.0).astype(np.float32)
    packed = np.packbits(bits, axis=1)
    assert packed.shape == (50, 25)
    np.testing.assert_array_equal(engine.predict_packed(packed), engine.predict(pm1))
    np.testing.assert_array_equal(engine.logits_packed(packed), engine.logits(pm1))


def test_threads_give_identical_results(tmp_path):
    model = randomize(BinaryCNN(image_size=(13, 13)), seed=5)
    export_model(model, tmp_path / "c.hybe")
    engine = load(tmp_path / "c.hybe")
    x = np.random.default_rng(1).standard_normal((37, 1, 13, 13)).astype(np.float32)
    np.testing.assert_array_equal(engine.logits(x, threads=1), engine.logits(x, threads=2))
    np.testing.assert_array_equal(
        load(tmp_path / "c.hybe", threads=3).predict(x), engine.predict(x)
    )


def test_empty_batch(tmp_path):
    export_model(randomize(BNNHead(20, 3, hidden=(8,)), seed=1), tmp_path / "h.hybe")
    engine = load(tmp_path / "h.hybe")
    assert engine.predict(np.zeros((0, 20), np.float32)).shape == (0,)
    assert engine.logits(np.zeros((0, 20), np.float32)).shape == (0, 3)


def test_export_artifact_reads_a_saved_model(tmp_path):
    model = randomize(BNNHead(200, 2), seed=9)
    save_model(tmp_path / "bnn", model, task="0v1")
    header = export_artifact(tmp_path / "bnn", tmp_path / "bnn.hybe")
    engine = load(tmp_path / "bnn.hybe")
    assert engine.arch == "head" and header["arch"] == "head"
    assert engine.metadata["source"]["task"] == "0v1"
    x = torch.randn(100, 200)
    with torch.no_grad():
        assert (engine.predict(x.numpy()) == model(x).argmax(1).numpy()).all()


def test_weights_are_32x_smaller(tmp_path):
    model = randomize(BNNHead(256, 64, hidden=(128,)), seed=2)
    export_model(model, tmp_path / "h.hybe")
    engine = load(tmp_path / "h.hybe")
    assert engine.float32_weight_bytes == 32 * engine.weight_bytes


def test_unsupported_models_are_refused(tmp_path):
    from hybnn.models import FloatCNN

    with pytest.raises(TypeError):
        export_model(FloatCNN(), tmp_path / "f.hybe")
    head = BNNHead(10, 2)
    head.net[0].input_quantizer = None
    with pytest.raises(ValueError, match="binarize its input"):
        export_model(head, tmp_path / "h.hybe")
    assert not (tmp_path / "h.hybe").exists()
