"""The three phases through the `hybnn` command, as a user runs them (digits, tiny budgets)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # whole-CLI runs in subprocesses


def hybnn(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "hybnn.cli", *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    hybnn("pretrain", "--data", "digits", "--epochs", "1", "--out", str(d / "enc"),
          "--no-progress")
    for split in ("train", "test"):
        hybnn("extract", "--encoder", str(d / "enc"), "--data", "digits", "--task", "0v1",
              "--split", split, "--out", str(d / f"{split}.safetensors"))
    hybnn("train", "--model", "head", "--codes", str(d / "train.safetensors"),
          "--test-codes", str(d / "test.safetensors"), "--epochs", "5", "--out", str(d / "head"),
          "--no-progress")
    return d


def test_pretrain_writes_a_fingerprinted_encoder(workdir: Path) -> None:
    meta = json.loads((workdir / "enc" / "meta.json").read_text())
    assert meta["kind"] == "encoder" and len(meta["fingerprint"]) == 64
    assert meta["config"]["latent_bits"] == 200
    for png in ("reconstructions.png", "bit_usage.png"):
        assert (workdir / "enc" / png).stat().st_size > 1000


def test_extract_stores_25_bytes_per_code(workdir: Path) -> None:
    from hybnn.pipeline.codes import CodeStore

    store = CodeStore.load(workdir / "train.safetensors")
    assert store.bytes_per_sample == 25 and store.num_bits == 200
    assert set(np.unique(store.labels)) == {0, 1}
    enc_meta = json.loads((workdir / "enc" / "meta.json").read_text())
    assert store.encoder_fingerprint == enc_meta["fingerprint"]


def test_evaluate_reports_accuracy_on_codes_and_on_images(workdir: Path) -> None:
    on_codes = json.loads(hybnn("evaluate", "--model", str(workdir / "head"), "--codes",
                                str(workdir / "test.safetensors"), "--json").stdout)
    on_images = json.loads(hybnn("evaluate", "--model", str(workdir / "head"), "--encoder",
                                 str(workdir / "enc"), "--data", "digits", "--task", "0v1",
                                 "--json").stdout)
    assert on_codes["accuracy"] == pytest.approx(on_images["accuracy"])
    assert on_codes["accuracy"] > 0.8
    assert on_codes["samples"] == on_images["samples"] > 0


def test_predict_classifies_an_array_file(workdir: Path) -> None:
    from hybnn.data import load_source, select_task

    pair = select_task(load_source("digits"), "0v1")
    np.save(workdir / "x.npy", (pair.x[:6] * 255).astype(np.uint8))
    rows = json.loads(hybnn("predict", "--model", str(workdir / "head"), "--encoder",
                            str(workdir / "enc"), "--json", str(workdir / "x.npy")).stdout)
    assert len(rows) == 6
    assert all(0.0 <= r["probability"] <= 1.0 for r in rows)
    assert sum(r["index"] == y for r, y in zip(rows, pair.y[:6], strict=True)) >= 4


def test_summary_counts_binary_weights(workdir: Path) -> None:
    out = hybnn("summary", str(workdir / "head")).stdout
    assert "BinaryLinear" in out and "25600" in out and "smaller" in out


def test_baseline_cnn_trains_from_the_cli(tmp_path: Path) -> None:
    out = hybnn("train", "--model", "bcnn", "--data", "digits", "--task", "0v1", "--prep",
                "unit", "--epochs", "1", "--out", str(tmp_path / "bcnn"), "--no-progress")
    assert "test accuracy" in out.stdout
    meta = json.loads((tmp_path / "bcnn" / "meta.json").read_text())
    assert meta["prep"] == "unit" and meta["config"]["arch"] == "bcnn"


def test_packed_engine_predicts_like_torch(workdir: Path) -> None:
    from hybnn.data import load_source, select_task

    pair = select_task(load_source("digits"), "0v1")
    np.save(workdir / "x20.npy", (pair.x[:20] * 255).astype(np.uint8))
    common = ("predict", "--model", str(workdir / "head"), "--encoder", str(workdir / "enc"),
              "--json", str(workdir / "x20.npy"))
    torch_rows = json.loads(hybnn(*common).stdout)
    packed_rows = json.loads(hybnn(*common, "--engine", "packed").stdout)
    assert [r["index"] for r in packed_rows] == [r["index"] for r in torch_rows]
    for a, b in zip(packed_rows, torch_rows, strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
    out = hybnn("export", str(workdir / "head"), "--out", str(workdir / "head.hybe")).stdout
    assert "exported head" in out and (workdir / "head.hybe").stat().st_size > 0


def test_extract_defaults_to_the_encoders_data_and_warns_on_other_data(tmp_path, capsys):
    """An encoder records its training data (source and content hash); extract encodes that
    data unless told otherwise, and says so when told to encode another."""
    from hybnn.cli import main

    enc = tmp_path / "enc"
    assert main(["pretrain", "--data", "digits", "--epochs", "1", "--out", str(enc),
                 "--no-progress"]) == 0
    data = json.loads((enc / "meta.json").read_text())["data"]
    assert data["source"] == "digits" and len(data["sha256"]) == 64
    capsys.readouterr()
    assert main(["extract", "--encoder", str(enc), "--out", str(tmp_path / "a.st")]) == 0
    assert "warning" not in capsys.readouterr().err
    store = json.loads((tmp_path / "a.st").read_bytes()[8:8 + int.from_bytes(
        (tmp_path / "a.st").read_bytes()[:8], "little")])["__metadata__"]["hybnn"]
    assert json.loads(store)["source"] == "digits"
    from hybnn.data import load_source

    digits = load_source("digits")  # the same images under another name: still other data
    np.savez(tmp_path / "mine.npz", x=(digits.x[:100, 0] * 255).astype(np.uint8),
             y=digits.y[:100])
    assert main(["extract", "--encoder", str(enc), "--data", str(tmp_path / "mine.npz"),
                 "--out", str(tmp_path / "b.st")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("hybnn: warning: encoder ") and "trained on digits" in err
