"""The shipped `general` encoder: it opens by name everywhere an encoder is taken, matches the
pinned fingerprint, refuses a damaged copy with one clear error, and its codes of real
digits (never trained on labels) carry the classes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import hybnn
from hybnn import api
from hybnn.cli import main
from hybnn.data.general import resize_bilinear, source_splits
from hybnn.encoders import open_encoder, resolve, shipped
from hybnn.errors import ArtifactError
from hybnn.pipeline.codes import CodeStore

META_SHA, WEIGHTS_SHA = shipped.SHIPPED["general"]


@pytest.fixture
def damaged(tmp_path, monkeypatch):
    """A copy of the package's shipped encoders that a test may break."""
    copy = tmp_path / "package"
    shutil.copytree(shipped.shipped_dir("general"), copy / "general")
    monkeypatch.setattr(shipped, "PACKAGE_DIR", copy)
    return copy / "general"


def test_it_loads_by_name_with_the_pinned_fingerprint():
    enc = hybnn.Encoder.load("general")
    assert enc.fingerprint == WEIGHTS_SHA
    assert (enc.kind, enc.latent_bits, enc.input_shape) == ("encoder", 200, (1, 28, 28))
    assert resolve("general") == shipped.shipped_dir("general")
    assert [r["source"] for r in enc.encoder.meta["data"]["sources"]] == [
        "fashion-mnist", "mnist-5k", "digits-28"]
    assert all(len(r["sha256"]) == 64 for r in enc.encoder.meta["data"]["sources"])


def test_a_path_is_not_a_name():
    assert resolve("runs/encoder") == Path("runs/encoder")
    assert resolve("./general") == Path("general")


def test_options_and_the_cli_take_the_name(tmp_path, monkeypatch):
    opts = api.ExtractOptions(encoder="general", data="mnist-5k", task="0v1", split="test",
                              out=str(tmp_path / "a.safetensors"))
    assert Path(opts.encoder) == shipped.shipped_dir("general")
    monkeypatch.chdir(tmp_path)
    assert main(["extract", "--encoder", "general", "--data", "mnist-5k", "--task", "0v1",
                 "--split", "test", "--out", "codes.safetensors"]) == 0
    store = CodeStore.load(tmp_path / "codes.safetensors")
    assert store.encoder_fingerprint == WEIGHTS_SHA and len(store) == 200


def test_a_head_on_its_codes_of_real_digits_beats_chance_by_far(tmp_path):
    train, test = source_splits("digits-28")
    enc = hybnn.Encoder.load("general")
    head = hybnn.Head(epochs=10).fit(enc.encode(train.x), train.y, encoder=enc)
    model = hybnn.Model(enc, head)
    assert model.evaluate(test.x, test.y).accuracy > 0.8  # chance: 0.1
    head.save(tmp_path / "head")  # the shipped encoder in a bundle, by name
    assert main(["export", str(tmp_path / "head"), "--encoder", "general",
                 "--out", str(tmp_path / "digits.bundle")]) == 0
    assert (tmp_path / "digits.bundle").stat().st_size > 0


@pytest.mark.parametrize("damage", ["weights byte", "meta byte", "truncated", "missing"])
def test_a_damaged_copy_is_one_clear_error(damaged, damage, capsys):
    weights, meta = damaged / "weights.safetensors", damaged / "meta.json"
    if damage == "weights byte":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 1
        weights.write_bytes(bytes(data))
    elif damage == "meta byte":
        meta.write_text(meta.read_text().replace('"encoder"', '"encodes"', 1))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        shutil.rmtree(damaged)
    for load in (lambda: hybnn.Encoder.load("general"), lambda: open_encoder("general")):
        with pytest.raises(ArtifactError, match=r"shipped encoder 'general'.*reinstall hybnn"):
            load()
    capsys.readouterr()
    assert main(["extract", "--encoder", "general", "--out", "never.safetensors"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybnn: error: the shipped encoder 'general'")
    assert len(err.splitlines()) == 1 and "reinstall hybnn" in err


def test_resize_keeps_the_corners_and_the_range():
    x = np.random.default_rng(0).random((3, 8, 8))
    y = resize_bilinear(x, 28)
    assert y.shape == (3, 28, 28) and y.dtype == np.float32
    assert np.allclose(y[:, [0, 0, -1, -1], [0, -1, 0, -1]], x[:, [0, 0, -1, -1], [0, -1, 0, -1]])
    assert 0 <= y.min() and y.max() <= 1


def test_calibration_reads_every_source_the_encoder_records():
    from hybnn.bundle.encoder_graph import recorded_sources

    assert recorded_sources({"source": "digits"}) == ["digits"]
    assert recorded_sources({"sources": [{"source": "fashion-mnist"}, {"source": "digits-28"}]}
                            ) == ["fashion-mnist", "digits-28"]
    assert recorded_sources({"sources": [{"name": 1}]}) == [] == recorded_sources(None)


@pytest.mark.slow
def test_an_int8_bundle_of_the_general_encoder_is_calibrated_on_its_sources(tmp_path):
    from hybnn.cli import main

    assert main(["extract", "--encoder", "general", "--data", "digits-28", "--task", "0v1",
                 "--out", str(tmp_path / "tr.st")]) == 0
    assert main(["train", "--codes", str(tmp_path / "tr.st"), "--epochs", "3", "--out",
                 str(tmp_path / "head"), "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "head"), "--encoder", "general", "--int8",
                 "--calibration-samples", "64", "--out", str(tmp_path / "m.bundle")]) == 0
    from hybnn.bundle.format import read

    calibration = read(tmp_path / "m.bundle").encoder["quantization"]["calibration"]
    assert calibration["source"] == "fashion-mnist,mnist-5k,digits-28"
    assert calibration["size"] == 64
