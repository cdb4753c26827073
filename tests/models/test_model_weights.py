"""Weights and configs of model and encoder files are checked against the model's own
state dict before anything is built or trusted."""

from __future__ import annotations

import json
import resource

import pytest
import torch

from hybnn.artifacts import META_NAME, save_artifact
from hybnn.encoders.vae import KIND as ENCODER_KIND
from hybnn.encoders.vae import load as load_encoder
from hybnn.errors import ArtifactError
from hybnn.models import BinaryLatentVAE, BNNHead
from hybnn.models.io import MODEL_KIND, load_classifier, load_model, save_model


def head_state() -> tuple[BNNHead, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = BNNHead(16, 2, (8,))
    return model, dict(model.state_dict())


def save_head(directory, state, model, **extra):
    save_artifact(directory, MODEL_KIND, state, {"arch": "hybnn", "arch_config": model.config},
                extra)
    return directory


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update({"net.0.weight": s["net.0.weight"].to(torch.int32)}),
         "net.0.weight is torch.int32"),
        (lambda s: s.update({"net.0.weight": s["net.0.weight"] > 0}), "torch.bool"),
        (lambda s: s.update({"net.1.num_batches_tracked": torch.tensor(0.0)}), "float32"),
        (lambda s: s.update({"net.0.weight": s["net.0.weight"].double()}), "float64"),
        (lambda s: s["net.0.weight"].view(-1).__setitem__(3, float("nan")), "NaN or infinite"),
        (lambda s: s["net.1.bias"].view(-1).__setitem__(0, float("inf")), "NaN or infinite"),
        (lambda s: s["net.1.running_var"].view(-1).__setitem__(0, -1e6), "negative variances"),
        (lambda s: s.pop("net.3.running_mean"), "missing"),
        (lambda s: s.update({"extra": torch.zeros(1)}), "unexpected"),
    ],
    ids=["int32", "bool", "float-counter", "float64", "nan", "inf", "negative-var", "missing",
         "extra"],
)
def test_weights_that_differ_from_the_models_own_are_refused(tmp_path, edit, message):
    model, state = head_state()
    edit(state)
    save_head(tmp_path / "m", state, model)
    with pytest.raises(ArtifactError, match=message):
        load_model(tmp_path / "m")


def edit_meta(directory, fn):
    meta = json.loads((directory / META_NAME).read_text())
    fn(meta)
    (directory / META_NAME).write_text(json.dumps(meta))
    return directory


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize(
    ("arch_config", "message"),
    [
        ({"hidden": [10**9]}, "above the limit"),
        ({"in_bits": 10**12}, "above the limit"),
        ({"hidden": [8] * 1000}, "list of 1000 items"),
        ({"hidden": [65536] * 64}, "do not fit the model"),  # within the caps: built on meta
        ({"hidden": [float("nan")]}, "not finite"),
        ({"num_classes": 1}, "does not fit architecture"),
    ],
    ids=["hidden-1e9", "in-bits-1e12", "1000-layers", "64-wide-layers", "nan-width",
         "one-class"],
)
def test_huge_or_invalid_sizes_in_meta_are_refused_without_allocating(tmp_path, arch_config,
                                                                       message):
    save_model(tmp_path / "m", BNNHead(16, 2, (8,)))
    edit_meta(tmp_path / "m", lambda m: m["config"]["arch_config"].update(arch_config))
    before = peak_rss()
    with pytest.raises(ArtifactError, match=message):
        load_model(tmp_path / "m")
    assert peak_rss() - before < 64 << 20


@pytest.mark.parametrize(("key", "value"), [("latent_bits", 10**9), ("image_size", [10**6, 8]),
                                            ("tau", float("inf"))])
def test_huge_sizes_in_an_encoder_config_are_refused(tmp_path, key, value):
    vae = BinaryLatentVAE((8, 8), latent_bits=16)
    save_artifact(tmp_path / "e", ENCODER_KIND, vae.state_dict(), vae.config)
    edit_meta(tmp_path / "e", lambda m: m["config"].update({key: value}))
    with pytest.raises(ArtifactError, match="not finite or above the limit"):
        load_encoder(tmp_path / "e")


@pytest.mark.parametrize(("key", "value", "message"),
                         [("prep", "sideways", "unknown input preparation 'sideways'"),
                          ("prep", 3, "must be a string"), ("task", ["0v1"], "must be a string"),
                          ("encoder_fingerprint", {"a": 1}, "must be a string")])
def test_invalid_metadata_fields_are_refused(tmp_path, key, value, message):
    save_model(tmp_path / "m", BNNHead(16, 2, (8,)), prep="unit", task="0v1")
    edit_meta(tmp_path / "m", lambda m: m.update({key: value}))
    with pytest.raises(ArtifactError, match=message):
        load_model(tmp_path / "m")


def test_a_vae_saved_as_a_model_is_not_a_classifier(tmp_path):
    save_model(tmp_path / "v", BinaryLatentVAE((8, 8), latent_bits=16))
    load_model(tmp_path / "v")  # a VAE model file is valid ...
    with pytest.raises(ArtifactError, match=r"'vae' model, not a classifier.*--encoder"):
        load_classifier(tmp_path / "v")  # ... but not something to evaluate or predict with
