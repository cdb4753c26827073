"""One contract, every kind of code encoder: what :func:`hybnn.encoders.open_encoder` opens
behaves the same whatever the kind (VAE, distilled binary, int8 ONNX), and heads are paired
with encoders by one check."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hybnn import api
from hybnn.encoders import KINDS, CodeEncoder, open_encoder, require_same_encoder
from hybnn.errors import ArtifactError, DataError, FingerprintMismatch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory, distilled):
    """A directory of every kind, all from one teacher VAE (the int8 one quantized from it)."""
    int8_dir = tmp_path_factory.mktemp("kinds") / "int8"
    api.quantize(api.QuantizeOptions(encoder=str(distilled["teacher_dir"]), out=str(int8_dir),
                                     calibration_samples=64, agreement_samples=0))
    return {"encoder": distilled["teacher_dir"], "binary-encoder": distilled["student_dir"],
            "int8-encoder": int8_dir}


def test_every_registered_kind_is_covered(encoder_dirs):
    assert set(KINDS) == set(encoder_dirs)
    for kind, module in KINDS.items():
        assert module.KIND == kind and callable(module.load) and callable(module.save)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_contract(kind, encoder_dirs, distilled):
    enc = open_encoder(encoder_dirs[kind])
    assert isinstance(enc, CodeEncoder) and enc.KIND == kind
    assert re.fullmatch(r"[0-9a-f]{64}", enc.fingerprint)
    x = np.ascontiguousarray(distilled["test"].x[:50])
    assert (enc.channels, *enc.image_size) == x.shape[1:]
    codes = enc.encode(x)
    assert codes.dtype == np.bool_ and codes.shape == (50, enc.latent_bits)
    assert 0.05 < codes.mean() < 0.95  # codes carry information, not a constant
    np.testing.assert_array_equal(enc.encode(x, batch_size=7), codes)  # batching changes nothing
    np.testing.assert_array_equal(open_encoder(encoder_dirs[kind]).encode(x), codes)  # reload
    assert enc.encode(x[:0]).shape == (0, enc.latent_bits)
    with pytest.raises(DataError, match="encoder expects images of shape"):
        enc.encode(x[:, :, :4])
    teacher = distilled["teacher"].fingerprint
    assert enc.derived_from == (None if kind == "encoder" else teacher)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_head_meets_only_its_own_encoder(kind, encoder_dirs, distilled):
    enc = open_encoder(encoder_dirs[kind])
    require_same_encoder(enc.fingerprint, enc, "head", encoder_dirs[kind])
    with pytest.raises(FingerprintMismatch, match=f"is {enc.LABEL} {enc.fingerprint[:12]}$"):
        require_same_encoder("0" * 64, enc, "head", encoder_dirs[kind])
    if kind != "encoder":  # a head of the teacher's codes: the message says how they relate
        with pytest.raises(FingerprintMismatch, match=enc.MADE + " that encoder"):
            require_same_encoder(distilled["teacher"].fingerprint, enc, "head",
                                 encoder_dirs[kind])


def test_a_command_that_needs_one_kind_refuses_the_others(encoder_dirs):
    for kind in ("binary-encoder", "int8-encoder"):
        with pytest.raises(ArtifactError, match="this needs a VAE encoder"):
            open_encoder(encoder_dirs[kind], kinds=["encoder"])
    with pytest.raises(DataError, match="runs on the CPU"):
        open_encoder(encoder_dirs["int8-encoder"], device="cuda")


def test_a_directory_of_another_artifact_is_not_an_encoder(tmp_path, distilled):
    from hybnn.models import BNNHead
    from hybnn.models.io import save_model

    save_model(tmp_path / "head", BNNHead(200, 2, [8]))
    with pytest.raises(ArtifactError, match="not an encoder"):
        open_encoder(tmp_path / "head")
