"""Saving and loading models: identical outputs after a roundtrip, refusal of anything else."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hybnn.artifacts import META_NAME, WEIGHTS_NAME, save_artifact, sha256_file
from hybnn.errors import ArtifactError
from hybnn.models import BinaryCNN, BinaryLatentVAE, BNNHead, FloatCNN
from hybnn.models.io import build_model, load_model, save_model


def trained_looking(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Move batch-norm running statistics away from their defaults, then switch to eval."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model.train()
        model(x)
    return model.eval()


CASES = [
    ("head", lambda: BNNHead(32, 3, (16,), scaling="learned"),
     lambda: torch.randint(0, 2, (8, 32)).float() * 2 - 1),
    ("bcnn", lambda: BinaryCNN((8, 8), 1, 4, scaling="xnor"),
     lambda: torch.rand(8, 1, 8, 8) - 0.5),
    ("fpcnn", lambda: FloatCNN((8, 8), 1, 4), lambda: torch.rand(8, 1, 8, 8)),
    ("vae", lambda: BinaryLatentVAE((8, 8), latent_bits=16), lambda: torch.rand(8, 1, 8, 8)),
]


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize(("arch", "make", "inputs"), CASES, ids=[c[0] for c in CASES])
def test_roundtrip_gives_identical_outputs(tmp_path, arch, make, inputs):
    torch.manual_seed(1)
    x = inputs()
    model = trained_looking(make(), x)
    meta = save_model(tmp_path / "m", model, task="0v1", prep="centered")

    loaded, loaded_meta = load_model(tmp_path / "m")

    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    assert torch.equal(outputs(loaded, x), outputs(model, x))
    assert loaded_meta == meta
    assert meta["config"] == {"arch": arch, "arch_config": model.config}
    assert meta["task"] == "0v1" and meta["prep"] == "centered"


def test_saved_model_is_safetensors_and_json_only(tmp_path):
    save_model(tmp_path / "m", BNNHead())
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([META_NAME, WEIGHTS_NAME])
    meta = json.loads((tmp_path / "m" / META_NAME).read_text())
    assert meta["kind"] == "model"
    assert meta["fingerprint"] == sha256_file(tmp_path / "m" / WEIGHTS_NAME)


def test_save_refuses_a_foreign_architecture(tmp_path):
    with pytest.raises(TypeError, match="not a hybnn architecture"):
        save_model(tmp_path / "m", nn.Linear(2, 2))


@pytest.fixture
def saved(tmp_path):
    save_model(tmp_path / "m", BNNHead(16, 2, (8,)))
    return tmp_path / "m"


def edit_meta(directory, fn):
    path = directory / META_NAME
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def test_tampered_weights_are_refused(saved):
    raw = bytearray((saved / WEIGHTS_NAME).read_bytes())
    raw[len(raw) // 2] ^= 0x80
    (saved / WEIGHTS_NAME).write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="does not match the fingerprint"):
        load_model(saved)


def test_wrong_kind_is_refused(tmp_path):
    save_artifact(tmp_path / "enc", "encoder", BinaryLatentVAE((8, 8), latent_bits=8).state_dict(),
                {})
    with pytest.raises(ArtifactError, match="'encoder' artifact, expected 'model'"):
        load_model(tmp_path / "enc")


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_model(tmp_path / "nothing-here")


def test_a_file_instead_of_a_directory_is_refused(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="not a directory"):
        load_model(tmp_path / "model.bin")


def test_corrupt_meta_is_refused(saved):
    (saved / META_NAME).write_bytes((saved / META_NAME).read_bytes()[:40])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_model(saved)


def test_future_format_version_is_refused(saved):
    edit_meta(saved, lambda m: m.update(format_version=99))
    with pytest.raises(ArtifactError, match="format version 99 is not supported"):
        load_model(saved)


def test_unknown_architecture_is_refused(saved):
    edit_meta(saved, lambda m: m["config"].update(arch="transformer"))
    with pytest.raises(ArtifactError, match="unknown architecture 'transformer'"):
        load_model(saved)


def test_config_that_does_not_fit_the_weights_is_refused(saved):
    edit_meta(saved, lambda m: m["config"]["arch_config"].update(in_bits=200))
    with pytest.raises(ArtifactError, match="do not fit the model"):
        load_model(saved)


def test_config_with_unknown_argument_is_refused(saved):
    edit_meta(saved, lambda m: m["config"]["arch_config"].update(depth=3))
    with pytest.raises(ArtifactError, match="does not fit architecture 'head'"):
        load_model(saved)


def test_build_model_rebuilds_from_json_config():
    model = build_model("bcnn", {"image_size": [8, 8], "num_classes": 3})
    assert isinstance(model, BinaryCNN) and model.config["num_classes"] == 3


@pytest.mark.parametrize(
    "config",
    ["abc", [1], None, {"arch": "hybnn"}, {"arch": "hybnn", "arch_config": [1, 2]},
     {"arch": "hybnn", "arch_config": {"in_bits": "x"}},
     {"arch": "hybnn", "arch_config": {"hidden": 5}},
     {"arch": "hybnn", "arch_config": {"scaling": "bad"}}],
    ids=["str", "list", "null", "no-arch-config", "list-arch-config", "bad-int", "bad-hidden",
         "bad-scaling"],
)
def test_malformed_model_config_is_an_artifact_error(saved, config):
    edit_meta(saved, lambda m: m.update(config=config))
    with pytest.raises(ArtifactError):
        load_model(saved)
