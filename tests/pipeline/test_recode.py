"""`hybnn recode`: one frozen VAE read at another layer, its codes under their own identity,
through extraction, training and the bundle; a forged code layer gets one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hybnn import api
from hybnn.artifacts import save_artifact
from hybnn.cli import main
from hybnn.encoders.vae import KIND as ENCODER_KIND
from hybnn.encoders.vae import load as load_encoder
from hybnn.errors import ArtifactError, FingerprintMismatch


@pytest.fixture(scope="module")
def recoded(tmp_path_factory, tiny_encoder):
    """The tiny (8 x 8 digits) encoder recoded at conv2 and conv3: {layer: (dir, encoder)}."""
    root = tmp_path_factory.mktemp("recode")
    out = {}
    for code in ("conv2", "conv3"):
        enc = api.recode(api.RecodeOptions(encoder=str(tiny_encoder[0]), code=code,
                                           out=str(root / code)))
        out[code] = (root / code, enc)
    return out


def test_recoded_codes_are_the_signs_of_the_conv_maps(recoded, tiny_encoder):
    _, source, images = tiny_encoder
    x = np.ascontiguousarray(images[:64])
    for code, channels in (("conv2", 64), ("conv3", 128)):
        directory, enc = recoded[code]
        side = {"conv2": 2, "conv3": 1}[code]  # 8 -> 4 -> 2 -> 1
        assert enc.latent_bits == channels * side * side
        bits = load_encoder(directory).encode(x)
        with torch.inference_mode():
            h = source.vae.eval().encoder[:3 * (int(code[-1])) - 1](torch.from_numpy(x))
        np.testing.assert_array_equal(bits, (h.flatten(1) >= 0).numpy())
        assert 0.05 < bits.mean() < 0.95  # the map's signs vary, not a constant code
    # the latent codes are unchanged, and the same weights
    np.testing.assert_array_equal(source.encode(x), source.vae.encode(torch.from_numpy(x)))


def test_each_layer_is_its_own_code_identity(recoded, tiny_encoder, tmp_path):
    source = tiny_encoder[1]
    prints = {source.fingerprint, *(enc.fingerprint for _, enc in recoded.values())}
    assert len(prints) == 3
    for directory, enc in recoded.values():
        meta = json.loads((directory / "meta.json").read_text())
        assert meta["recoded_from"] == source.fingerprint
        assert meta["pretrain"] == source.meta["pretrain"]  # its history travels with it
        assert load_encoder(directory).fingerprint == enc.fingerprint
    # back to the latent: the very artifact it came from, by fingerprint
    back = api.recode(api.RecodeOptions(encoder=str(recoded["conv2"][0]), code="latent",
                                        out=str(tmp_path / "latent")))
    assert back.fingerprint == source.fingerprint
    assert json.loads((tmp_path / "latent" / "meta.json").read_text())["config"] == \
        source.vae.config


def test_a_head_on_recoded_codes_is_refused_beside_the_latent_encoder(recoded, tiny_encoder,
                                                                      tmp_path):
    directory, enc = recoded["conv2"]
    for split in ("train", "test"):
        api.extract(api.ExtractOptions(encoder=str(directory), data="digits", split=split,
                                       out=str(tmp_path / f"{split}.safetensors")))
    api.train(api.TrainOptions(codes=str(tmp_path / "train.safetensors"), out=str(tmp_path / "h"),
                               epochs=3, hidden=[64], progress=False))
    meta = json.loads((tmp_path / "h" / "meta.json").read_text())
    assert meta["encoder_fingerprint"] == enc.fingerprint
    with pytest.raises(FingerprintMismatch):
        api.evaluate(api.EvaluateOptions(model=str(tmp_path / "h"), data="digits",
                                         encoder=str(tiny_encoder[0])))
    result = api.evaluate(api.EvaluateOptions(model=str(tmp_path / "h"), data="digits",
                                              encoder=str(directory)))
    assert result["accuracy"] > 0.3  # ten classes, 3 epochs: well above chance


def test_the_bundle_of_a_recoded_encoder_computes_its_codes(recoded, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from hybnn import runtime
    from hybnn.bundle.export import export_bundle
    from hybnn.data import load_split
    from hybnn.pipeline.config import TrainConfig
    from hybnn.pipeline.extract import encode_to_codes
    from hybnn.pipeline.fit import train_head

    directory, enc = recoded["conv3"]
    train = encode_to_codes(enc, load_split("digits", "all", "train"), {"task": "all"})
    train_head(train, None, TrainConfig(epochs=2, seed=0), [32], out=tmp_path / "h",
               progress=False)
    header = export_bundle(tmp_path / "h", directory, tmp_path / "m.bundle")
    assert header["encoder"]["fingerprint"] == enc.fingerprint
    model = runtime.load(tmp_path / "m.bundle")
    test = load_split("digits", "all", "test")
    same = np.mean(model.codes(test.x) == enc.encode(test.x))
    assert same > 0.9999 and model.latent_bits == 128


@pytest.mark.parametrize("code", ["bogus", 5, None, ["conv2"]])
def test_a_forged_code_layer_with_a_valid_hash_is_one_clear_error(tmp_path, tiny_encoder, code):
    source = tiny_encoder[1]
    config = {**source.vae.config, "code": code}
    save_artifact(tmp_path / "enc", ENCODER_KIND, source.vae.state_dict(), config)
    with pytest.raises(ArtifactError, match="code layer must be one of"):
        load_encoder(tmp_path / "enc")


def test_cli_recode(tiny_encoder, tmp_path, capsys):
    assert main(["recode", "--encoder", str(tiny_encoder[0]), "--code", "conv2",
                 "--out", str(tmp_path / "c2")]) == 0
    assert "codes from conv2: 256 bits, 32 B a code" in capsys.readouterr().out
    assert main(["recode", "--encoder", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybnn: error:") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_distillation_refuses_a_recoded_teacher(recoded, tiny_encoder):
    from hybnn.errors import DataError
    from hybnn.pipeline.config import DistillConfig
    from hybnn.pipeline.distill import train_binary_encoder

    with pytest.raises(DataError, match="recoded from"):
        train_binary_encoder(recoded["conv2"][1], tiny_encoder[2], DistillConfig(epochs=1))
