"""Distillation of the binary encoder: it learns the VAE's bits without labels, its artifact
round-trips, and it is refused when corrupted or paired with the wrong teacher or codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hybnn.encoders import open_encoder as load_code_encoder
from hybnn.encoders.distilled import encode_images
from hybnn.encoders.distilled import load as load_binary_encoder
from hybnn.errors import ArtifactError, DataError, FingerprintMismatch
from hybnn.models import BinaryEncoder
from hybnn.pipeline.config import DistillConfig, TrainConfig
from hybnn.pipeline.distill import bit_agreement, distill, distill_loss
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head


def test_distillation_learns_the_teachers_bits(distilled):
    """Measured on held-out digits: an untrained student agrees with ~50 % of the bits, the
    4-epoch student with 75.2-75.7 % (seeds 0-3); 0.70 leaves room for machine differences."""
    teacher, student, test = distilled["teacher"], distilled["student"], distilled["test"]
    want = teacher.encode(test.x)
    torch.manual_seed(0)
    untrained = bit_agreement(encode_images(BinaryEncoder((8, 8), 1, 200), test.x), want)
    trained = bit_agreement(student.encode(test.x), want)
    assert abs(untrained - 0.5) < 0.05
    assert trained > 0.70
    history = student.meta["history"]
    assert len(history) == 4 and history[-1]["test_agreement"] == pytest.approx(trained)
    assert history[-1]["loss"] < history[0]["loss"]
    assert student.meta["bit_agreement"]["test"] == pytest.approx(trained)


def test_soft_and_hard_targets():
    logits = torch.tensor([[3.0, -3.0, 0.0]])
    cfg = DistillConfig()
    assert distill_loss(logits, logits, cfg) < distill_loss(-logits, logits, cfg)
    hard = DistillConfig(target="hard")
    assert distill_loss(logits * 10, logits, hard) < distill_loss(logits, logits, hard)
    with pytest.raises(DataError, match="target"):
        distill_loss(logits, logits, DistillConfig(target="labels"))


def test_artifact_round_trips(distilled):
    student, d = distilled["student"], distilled["student_dir"]
    loaded = load_binary_encoder(d)
    assert loaded.fingerprint == student.fingerprint
    assert loaded.teacher_fingerprint == distilled["teacher"].fingerprint
    assert loaded.fingerprint != loaded.teacher_fingerprint
    x = distilled["test"].x
    np.testing.assert_array_equal(loaded.encode(x), student.encode(x))
    assert load_code_encoder(d).fingerprint == student.fingerprint  # what extract uses
    assert load_code_encoder(distilled["teacher_dir"]).fingerprint == loaded.teacher_fingerprint
    meta = json.loads((d / "meta.json").read_text())
    assert meta["kind"] == "binary-encoder" and meta["input_prep"] == "centered"
    assert meta["distill"]["epochs"] == 4 and meta["teacher"]["path"] == "vae"


def test_corrupt_artifact_is_refused(distilled, tmp_path):
    import shutil

    d = tmp_path / "bin"
    shutil.copytree(distilled["student_dir"], d)
    weights = d / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="fingerprint"):
        load_binary_encoder(d)


def test_missing_teacher_fingerprint_is_refused(distilled, tmp_path):
    import shutil

    d = tmp_path / "bin"
    shutil.copytree(distilled["student_dir"], d)
    meta = json.loads((d / "meta.json").read_text())
    meta["teacher"]["fingerprint"] = "not a digest"
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="teacher"):
        load_binary_encoder(d)


def test_wrong_teacher_is_refused(distilled, tiny_encoder):
    student = distilled["student"]
    student.require_teacher(distilled["teacher"].fingerprint)
    with pytest.raises(FingerprintMismatch, match="distilled from"):
        student.require_teacher(tiny_encoder[1].fingerprint)


def test_distilled_codes_carry_their_own_fingerprint(distilled):
    student, teacher = distilled["student"], distilled["teacher"]
    train, test = distilled["train"], distilled["test"]
    mine = encode_to_codes(student, test)
    assert mine.encoder_fingerprint == student.fingerprint != teacher.fingerprint
    vae_train = encode_to_codes(teacher, train)
    with pytest.raises(FingerprintMismatch):  # a head on VAE codes never sees distilled ones
        train_head(vae_train, mine, TrainConfig(epochs=1), progress=False)
    mine.require_encoder(student.fingerprint)
    with pytest.raises(FingerprintMismatch):
        mine.require_encoder(teacher.fingerprint)


def test_distill_refuses_bad_settings_and_an_occupied_directory(distilled, tmp_path):
    teacher, x = distilled["teacher"], distilled["train"].x[:64]
    with pytest.raises(DataError):
        distill(teacher, x, tmp_path / "a", DistillConfig(epochs=0), {}, progress=False)
    with pytest.raises(DataError):
        distill(teacher, x[:, :, :4], tmp_path / "b", DistillConfig(epochs=1), {},
                progress=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "meta.json").write_text('{"kind": "encoder"}')
    with pytest.raises(ArtifactError, match="refusing"):  # never over another artifact
        distill(teacher, x, tmp_path / "c", DistillConfig(epochs=1), {}, progress=False)
