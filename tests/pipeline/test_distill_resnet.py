"""The binary ResNet-18 as the distillation student: it learns the VAE's bits without labels,
its artifact round-trips as the ``binary-encoder`` kind, it starts from a `hybnn train
--model resnet18` directory of the same geometry only, and its loader refuses any file
content it cannot rebuild."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hybnn.encoders import CodeEncoder, open_encoder
from hybnn.encoders.distilled import encode_images
from hybnn.encoders.distilled import load as load_binary_encoder
from hybnn.engine import export_fully_binary, load
from hybnn.errors import ArtifactError, DataError
from hybnn.models import BinaryResNet, FloatResNet, FullyBinaryHyBNN, ResNetEncoder
from hybnn.models.io import save_model
from hybnn.pipeline.config import DistillConfig, TrainConfig
from hybnn.pipeline.distill import bit_agreement, build_student, distill
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head


def test_the_resnet_student_learns_the_teachers_bits(distilled, distilled_resnet):
    """Measured on held-out digits (width 4, 4 epochs, seed 0): 64.0 % of the bits agree,
    the untrained student 50-51 %; 0.58 leaves room for machine differences."""
    teacher, test = distilled["teacher"], distilled["test"]
    student = distilled_resnet["student"]
    want = teacher.encode(test.x)
    torch.manual_seed(0)
    untrained = bit_agreement(encode_images(ResNetEncoder((8, 8), 1, 200, 4), test.x), want)
    trained = bit_agreement(student.encode(test.x), want)
    assert trained > 0.58 and trained > untrained + 0.05
    history = student.meta["history"]
    assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"]
    assert student.meta["bit_agreement"]["test"] == pytest.approx(trained)


def test_the_kind_round_trips(distilled, distilled_resnet):
    d, student = distilled_resnet["dir"], distilled_resnet["student"]
    loaded = open_encoder(d)  # what extract, predict and evaluate use
    assert isinstance(loaded, CodeEncoder) and loaded.KIND == "binary-encoder"
    assert isinstance(loaded.model, ResNetEncoder)  # type: ignore[attr-defined]
    assert loaded.fingerprint == student.fingerprint
    assert loaded.derived_from == distilled["teacher"].fingerprint
    x = np.ascontiguousarray(distilled["test"].x[:50])
    codes = loaded.encode(x)
    assert codes.dtype == np.bool_ and codes.shape == (50, 200)
    np.testing.assert_array_equal(codes, student.encode(x))
    np.testing.assert_array_equal(loaded.encode(x, batch_size=7), codes)
    with pytest.raises(DataError, match="encoder expects images of shape"):
        loaded.encode(x[:, :, :4])
    meta = json.loads((d / "meta.json").read_text())
    assert meta["student"] == "resnet18" and meta["input_prep"] == "centered"
    assert meta["config"]["width"] == 4 and meta["config"]["stem"] == "cifar"
    assert meta["distill"]["width"] == 4 and meta["student_init"] is None
    cnn = json.loads((distilled["student_dir"] / "meta.json").read_text())
    assert cnn["student"] == "cnn" and cnn["distill"]["width"] == 32


def test_the_cnn_student_of_an_artifact_without_the_field_still_loads(distilled, tmp_path):
    d = tmp_path / "old"
    shutil.copytree(distilled["student_dir"], d)
    meta = json.loads((d / "meta.json").read_text())
    del meta["student"]
    (d / "meta.json").write_text(json.dumps(meta))
    assert load_binary_encoder(d).fingerprint == distilled["student"].fingerprint


@pytest.mark.parametrize("field, value, match", [
    ("student", "vgg", "records the student 'vgg'"),
    ("student", ["resnet18"], "records the student"),
    ("student", "cnn", "does not build|do not fit"),  # a ResNet's config and weights
    ("config", "not a dict", "records no config"),
    ("config", {"width": "x"}, "does not build"),
    ("config", {"width": 64}, "do not fit"),
    ("config", {"image_size": 28}, "does not build"),
    ("config", {"prep": "negated"}, "does not build"),
    ("config", {"blocks": [4] * 10**4}, "list of"),
])
def test_the_loader_refuses_any_content_it_cannot_rebuild(distilled_resnet, tmp_path, field,
                                                          value, match):
    d = tmp_path / "bad"
    shutil.copytree(distilled_resnet["dir"], d)
    meta = json.loads((d / "meta.json").read_text())
    meta[field] = {**meta["config"], **value} if isinstance(value, dict) else value
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=match):
        load_binary_encoder(d)


def test_the_fully_binary_export_is_an_engine_graph_equal_to_torch(distilled, distilled_resnet,
                                                                   tmp_path):
    """Student -> sign -> binary head traces into one graph: images in [0, 1] in (the
    student's centring is its first node), the same classes out as torch."""
    student, train, test = distilled_resnet["student"], distilled["train"], distilled["test"]
    codes = encode_to_codes(student, train)
    head, _ = train_head(codes, None, TrainConfig(epochs=3), [32], out=tmp_path / "head",
                         progress=False)
    header = export_fully_binary(tmp_path / "head", distilled_resnet["dir"], tmp_path / "fb.st")
    assert header["arch"] == "fully-binary" and "graph" in header
    assert header["metadata"]["encoder"]["student"] == "resnet18"
    ops = [n["op"] for n in header["graph"]["nodes"]]
    assert ops[:2] == ["affine", "conv2d"] and "bconv2d" in ops and "bdense" in ops
    net = load(tmp_path / "fb.st")
    with torch.no_grad():
        want = FullyBinaryHyBNN(student.model, head.eval())(torch.from_numpy(test.x))
    np.testing.assert_array_equal(net.predict(test.x), want.argmax(1).numpy())


@pytest.fixture(scope="module")
def resnet_dirs(distilled, tmp_path_factory):
    """`hybnn train --model resnet18` directories: step 1 and ReBNN step 2 on the teacher's
    digits (width 4, one epoch each)."""
    from hybnn.cli import main

    root = tmp_path_factory.mktemp("resnet-init")
    common = ["--model", "resnet18", "--data", "digits", "--width", "4", "--epochs", "1",
              "--no-progress"]
    assert main(["train", *common, "--out", str(root / "step1")]) == 0
    assert main(["train", *common, "--step", "2", "--from", str(root / "step1"),
                 "--method", "rebnn", "--out", str(root / "step2")]) == 0
    return root


def test_the_student_starts_from_a_rebnn_resnet(distilled, resnet_dirs, tmp_path):
    teacher = distilled["teacher"]
    init = resnet_dirs / "step2"
    source = json.loads((init / "meta.json").read_text())
    student, start = build_student(teacher, 1, DistillConfig(student="resnet18"), init)
    assert isinstance(student, ResNetEncoder) and start is not None
    assert start["fingerprint"] == source["fingerprint"]
    assert (start["step"], start["method"]) == (2, "rebnn")
    assert student.config["width"] == 4 and student.config["scaling"] == "learned"
    from hybnn.models.io import load_model

    trained, _ = load_model(init)
    got, want = student.resnet.state_dict(), trained.state_dict()
    for key in want:
        if not key.startswith("fc."):  # everything but the classifier is the init's
            torch.testing.assert_close(got[key], want[key])
    assert got["fc.weight"].shape == (200, want["fc.weight"].shape[1])
    enc = distill(teacher, distilled["train"].x[:256], tmp_path / "from-rebnn",
                  DistillConfig(epochs=1, shift=0, student="resnet18"), {}, progress=False,
                  student_init=init)
    assert enc.meta["student_init"]["fingerprint"] == source["fingerprint"]
    assert enc.meta["distill"]["width"] == 4
    assert load_binary_encoder(tmp_path / "from-rebnn").fingerprint == enc.fingerprint


def test_a_wrong_init_is_refused(distilled, resnet_dirs, tmp_path):
    teacher = distilled["teacher"]
    resnet = DistillConfig(student="resnet18")
    save_model(tmp_path / "float", FloatResNet(10, 1, 4, image_size=(8, 8)))
    with pytest.raises(DataError, match="a resnet18-float model"):
        build_student(teacher, 1, resnet, tmp_path / "float")
    save_model(tmp_path / "28", BinaryResNet(10, 1, 4, image_size=(28, 28)))
    with pytest.raises(DataError, match=r"its image_size \(\[28, 28\]\) differ"):
        build_student(teacher, 1, resnet, tmp_path / "28")
    with pytest.raises(DataError, match="its width"):
        build_student(teacher, 1, DistillConfig(student="resnet18", width=8),
                      resnet_dirs / "step2")
    with pytest.raises(DataError, match="its stem"):
        build_student(teacher, 1, DistillConfig(student="resnet18", stem="imagenet"),
                      resnet_dirs / "step2")
    with pytest.raises(ArtifactError, match="expected 'model'"):  # an encoder, not a model
        build_student(teacher, 1, resnet, distilled["teacher_dir"])
    with pytest.raises(DataError, match="add --student resnet18"):
        build_student(teacher, 1, DistillConfig(), resnet_dirs / "step2")
