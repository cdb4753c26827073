"""A fully binary HyBNN (binary encoder + BNN head) is one engine network that equals torch:
exact integer accumulators, identical predictions, on random models and on a distilled one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_reference import accumulators, randomize

from hybnn.engine import export_fully_binary, export_model, load
from hybnn.engine import format as fmt
from hybnn.errors import ArtifactError, FingerprintMismatch
from hybnn.models import BinaryEncoder, BNNHead, FullyBinaryHyBNN
from hybnn.models.io import save_model
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head

CASES = [  # (encoder config, head config, batch)
    (dict(), dict(in_bits=200, num_classes=2), 64),
    (dict(image_size=(8, 8), in_channels=2, latent_bits=70, channels=(8, 65, 16)),
     dict(in_bits=70, num_classes=10, hidden=(33,)), 129),
    (dict(image_size=(11, 9), latent_bits=200, channels=(16, 16, 32), scaling="xnor"),
     dict(in_bits=200, num_classes=3, hidden=(), scaling="learned"), 1),
    # 8 channels: a 3x3 window has 72 bits, so the first conv runs unpatched on shifted floats
    (dict(image_size=(6, 7), in_channels=8, latent_bits=30, channels=(8, 8, 8)),
     dict(in_bits=30, num_classes=4), 17),
]


def _check(model: FullyBinaryHyBNN, x: torch.Tensor, path) -> None:
    header = export_model(model, path)
    assert header["arch"] == "fully-binary" and header["input"]["prep"] == "centered"
    assert [op["op"] for op in header["layers"]][:4] == ["conv2d"] * 3 + ["dense"]
    engine = load(path)
    xn = x.numpy()
    for r, g in zip(accumulators(model, x), engine.accumulators(xn), strict=True):
        np.testing.assert_array_equal(g, r.numpy())
    with torch.no_grad():
        logits = model(x)
    np.testing.assert_array_equal(engine.predict(xn), logits.argmax(1).numpy())
    np.testing.assert_allclose(engine.logits(xn), logits.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("enc", "head", "batch"), CASES)
def test_random_fully_binary_network_matches_torch(enc, head, batch, tmp_path):
    torch.manual_seed(batch)
    model = randomize(FullyBinaryHyBNN(BinaryEncoder(**enc), BNNHead(**head)), seed=batch)
    c = enc.get("in_channels", 1)
    h, w = enc.get("image_size", (28, 28))
    x = torch.rand(batch, c, h, w)
    x.view(-1)[:: 7] = 0.5  # centred to exactly 0: sign(0) = +1 on both sides
    _check(model, x, tmp_path / "fb.safetensors")


@pytest.fixture(scope="module")
def distilled_head(distilled, tmp_path_factory):
    """A head trained on the distilled encoder's codes of digits 'all', saved."""
    d = tmp_path_factory.mktemp("fb")
    student = distilled["student"]
    train_codes = encode_to_codes(student, distilled["train"], {"task": "all"})
    head, _ = train_head(train_codes, None, TrainConfig(epochs=3, lr=1e-2), out=d / "head",
                         progress=False)
    return d / "head", head


def test_distilled_network_matches_torch_on_real_images(distilled, distilled_head, tmp_path):
    student, (head_dir, head) = distilled["student"], distilled_head
    header = export_fully_binary(head_dir, distilled["student_dir"], tmp_path / "fb.st")
    assert header["metadata"]["encoder"]["fingerprint"] == student.fingerprint
    assert header["metadata"]["encoder"]["teacher_fingerprint"] == student.teacher_fingerprint
    model = FullyBinaryHyBNN(student.model, head).eval()
    x = torch.from_numpy(distilled["test"].x)
    _check(model, x, tmp_path / "again.st")
    # the one network classifies like the two-step path: codes, then the head on codes
    codes = encode_to_codes(student, distilled["test"])
    with torch.no_grad():
        two_step = head(codes.signs()).argmax(1).numpy()
    np.testing.assert_array_equal(load(tmp_path / "fb.st").predict(x.numpy()), two_step)


def test_head_of_another_encoder_is_refused(distilled, tmp_path):
    teacher_codes = encode_to_codes(distilled["teacher"], distilled["train"])
    train_head(teacher_codes, None, TrainConfig(epochs=1), out=tmp_path / "vae-head",
               progress=False)
    with pytest.raises(FingerprintMismatch, match="binary encoder"):
        export_fully_binary(tmp_path / "vae-head", distilled["student_dir"], tmp_path / "x")
    save_model(tmp_path / "enc-as-model", BNNHead(200, 2))
    with pytest.raises(FingerprintMismatch):  # no recorded encoder at all
        export_fully_binary(tmp_path / "enc-as-model", distilled["student_dir"], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_unknown_input_preparation_is_refused(tmp_path):
    model = randomize(FullyBinaryHyBNN(BinaryEncoder((8, 8), latent_bits=20, channels=(4, 4, 4)),
                                       BNNHead(20, 2)), seed=0)
    export_model(model, tmp_path / "fb.st")
    header, arrays, _ = fmt.read(tmp_path / "fb.st")
    header["input"]["prep"] = "standardized"
    fmt.write(tmp_path / "bad.st", header, arrays)
    with pytest.raises(ArtifactError, match="input preparation"):
        load(tmp_path / "bad.st")
