"""Phase 1 and 2: pretraining writes a described encoder artifact; codes come from it alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hybnn.artifacts import META_NAME, WEIGHTS_NAME, sha256_file
from hybnn.encoders.vae import load as load_encoder
from hybnn.errors import ArtifactError, DataError, FingerprintMismatch
from hybnn.models.io import save_model
from hybnn.pipeline.codes import CodeStore
from hybnn.pipeline.config import PretrainConfig
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.pretrain import bit_usage, train_vae

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pretrain_writes_weights_meta_bit_usage_and_plots(tiny_encoder):
    out, _, _ = tiny_encoder
    names = {p.name for p in out.iterdir()}
    assert {WEIGHTS_NAME, META_NAME, "bit_usage.json", "reconstructions.png",
            "bit_usage.png"} <= names
    assert not [n for n in names if n.startswith(".")]  # no leftover temporaries
    for png in ("reconstructions.png", "bit_usage.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC


def test_encoder_meta_records_fingerprint_config_and_provenance(tiny_encoder):
    out, encoder, _ = tiny_encoder
    meta = json.loads((out / META_NAME).read_text())
    assert meta["kind"] == "encoder"
    assert meta["fingerprint"] == sha256_file(out / WEIGHTS_NAME) == encoder.fingerprint
    assert meta["config"] == {"image_size": [8, 8], "in_channels": 1, "latent_bits": 200,
                              "tau": 1.0}
    assert meta["pretrain"]["epochs"] == 1 and meta["pretrain"]["seed"] == 0
    assert meta["data"] == {"source": "digits", "n": 200}
    assert len(meta["history"]) == 1 and np.isfinite(meta["history"][0]["loss"])
    assert {"hybnn", "torch", "numpy", "python"} <= set(meta["versions"])


def test_bit_usage_json_describes_the_codes_of_the_training_images(tiny_encoder):
    out, encoder, images = tiny_encoder
    usage = json.loads((out / "bit_usage.json").read_text())
    codes = encoder.encode(images)
    assert usage["bits"] == 200 and usage["samples"] == 200
    assert len(usage["p_one"]) == 200
    np.testing.assert_allclose(usage["p_one"], codes.mean(0), atol=1e-4)
    assert usage == bit_usage(codes)


def test_bit_usage_counts_dead_bits_entropy_and_unique_codes():
    codes = np.array([[1, 0, 1, 0], [1, 0, 0, 1], [1, 0, 1, 0], [1, 0, 0, 1]], dtype=bool)
    usage = bit_usage(codes)
    assert usage["p_one"] == [1.0, 0.0, 0.5, 0.5]
    assert usage["dead_bits"] == 2  # always 1 and always 0
    assert usage["unique_codes"] == 2
    assert usage["mean_entropy_bits"] == pytest.approx(0.5, abs=1e-6)  # (0 + 0 + 1 + 1) / 4


def test_encode_gives_deterministic_bool_codes(tiny_encoder):
    _, encoder, images = tiny_encoder
    codes = encoder.encode(images[:50])
    assert codes.dtype == bool and codes.shape == (50, 200)
    np.testing.assert_array_equal(codes, encoder.encode(images[:50], batch_size=7))
    assert encoder.encode(images[:0]).shape == (0, 200)


def test_load_encoder_gives_identical_codes(tiny_encoder):
    out, encoder, images = tiny_encoder
    loaded = load_encoder(out)
    assert loaded.fingerprint == encoder.fingerprint
    assert loaded.latent_bits == 200 and loaded.image_size == (8, 8)
    assert not loaded.vae.training
    assert not any(p.requires_grad for p in loaded.vae.parameters())  # frozen
    np.testing.assert_array_equal(loaded.encode(images), encoder.encode(images))


def test_codes_carry_information(tiny_encoder):
    _, encoder, images = tiny_encoder
    codes = encoder.encode(images)
    assert len(np.unique(codes, axis=0)) > 100  # distinct images, (mostly) distinct codes


@pytest.mark.parametrize(
    "shape",
    [(3, 1, 28, 28), (3, 8, 8), (3, 3, 8, 8), (3, 64), (3, 1, 8, 9)],
)
def test_encode_with_the_wrong_image_shape_is_a_data_error(tiny_encoder, shape):
    _, encoder, _ = tiny_encoder
    with pytest.raises(DataError, match=r"encoder expects images of shape \(N, 1, 8, 8\)"):
        encoder.encode(np.zeros(shape, np.float32))


def test_encode_to_codes_builds_a_store_bound_to_the_encoder(tiny_encoder, digits, tmp_path):
    _, encoder, _ = tiny_encoder
    data = digits.subset(np.arange(300, 340))
    store = encode_to_codes(encoder, data, {"task": "all", "split": "test"})
    assert len(store) == 40 and store.num_bits == 200 and store.bytes_per_sample == 25
    assert store.encoder_fingerprint == encoder.fingerprint
    assert store.meta == {"source": "digits", "num_classes": 10, "task": "all", "split": "test",
                          "label_space": {"labels": list(range(10)),
                                          "names": [str(d) for d in range(10)]}}
    np.testing.assert_array_equal(store.bits().astype(bool), encoder.encode(data.x))
    np.testing.assert_array_equal(store.labels, data.y)

    loaded = CodeStore.load(store.save(tmp_path / "codes.safetensors"))
    loaded.require_encoder(encoder.fingerprint)
    with pytest.raises(FingerprintMismatch):
        loaded.require_encoder("0" * 64)


def test_tampered_encoder_is_refused(tiny_encoder, tmp_path):
    import shutil

    out, _, _ = tiny_encoder
    copy = tmp_path / "enc"
    shutil.copytree(out, copy)
    raw = bytearray((copy / WEIGHTS_NAME).read_bytes())
    raw[-3] ^= 0x10
    (copy / WEIGHTS_NAME).write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="fingerprint"):
        load_encoder(copy)


def test_a_model_directory_is_not_an_encoder(tmp_path):
    from hybnn.models import BNNHead

    save_model(tmp_path / "m", BNNHead())
    with pytest.raises(ArtifactError, match="'model' artifact, expected 'encoder'"):
        load_encoder(tmp_path / "m")


def test_encoder_meta_config_that_does_not_fit_is_refused(tiny_encoder, tmp_path):
    import shutil

    out, _, _ = tiny_encoder
    copy = tmp_path / "enc"
    shutil.copytree(out, copy)
    meta = json.loads((copy / META_NAME).read_text())
    meta["config"]["latent_bits"] = 100
    (copy / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="do not fit the model"):
        load_encoder(copy)


def test_train_vae_is_deterministic_per_seed(digits):
    images = np.ascontiguousarray(digits.x[:64])
    config = PretrainConfig(latent_bits=16, epochs=1, batch_size=32, seed=1)
    a, ha = train_vae(images, config, progress=False)
    b, hb = train_vae(images, config, progress=False)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]


@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (0, 1, 8, 8), (10, 8, 8)])
def test_train_vae_needs_at_least_two_nchw_images(shape):
    with pytest.raises(DataError, match="at least 2 images"):
        train_vae(np.zeros(shape, np.float32), PretrainConfig(epochs=1), progress=False)


def test_contrastive_term_is_trained_and_logged_only_when_asked(digits):
    images = np.ascontiguousarray(digits.x[:64])
    plain = PretrainConfig(latent_bits=16, epochs=1, batch_size=32, contrastive=0.0)
    _, h_plain = train_vae(images, plain, progress=False)
    assert "contrastive" not in h_plain[0]
    with_term = PretrainConfig(latent_bits=16, epochs=1, batch_size=32, contrastive=0.1)
    _, h = train_vae(images, with_term, progress=False)
    # the logged loss is the ELBO plus the weighted term: not the plain loss
    assert h[0]["contrastive"] > 0
    assert h[0]["loss"] == pytest.approx(
        h[0]["rec"] + with_term.beta * h[0]["kl"] + 0.1 * 16 * h[0]["contrastive"], rel=1e-4)


def test_contrastive_term_needs_two_different_views():
    with pytest.raises(DataError, match="--contrastive needs two different views"):
        PretrainConfig(shift=0, rotation=0, zoom=0, contrastive=0.1).validate()
    PretrainConfig(shift=0, rotation=0, zoom=0, contrastive=0.0).validate()  # plain VAE
