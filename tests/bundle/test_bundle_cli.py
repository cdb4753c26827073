"""`hybnn export HEAD --encoder ENC --out BUNDLE` and `hybnn predict --model BUNDLE`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybnn.cli import main

pytestmark = pytest.mark.slow  # whole-CLI runs in subprocesses

pytest.importorskip("onnxruntime")


def test_predict_on_a_bundle_prints_labels_like_a_model_directory(
        tmp_path, capsys, bundle_fp32, head_dir, tiny_encoder, test_split):
    x = tmp_path / "x.npy"
    np.save(x, test_split.x[:5])
    assert main(["predict", "--model", str(bundle_fp32[0]), str(x), "--json"]) == 0
    from_bundle = json.loads(capsys.readouterr().out)
    assert main(["predict", "--model", str(head_dir), "--encoder", str(tiny_encoder[0]),
                 str(x), "--json"]) == 0
    from_dir = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in from_bundle] == [r["index"] for r in from_dir]
    assert [r["name"] for r in from_bundle] == [r["name"] for r in from_dir]
    for a, b in zip(from_bundle, from_dir, strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)
    assert main(["predict", "--model", str(bundle_fp32[0]), str(x)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith(f"{x}[0]: ")


def test_export_writes_a_bundle_and_refuses_a_foreign_encoder(tmp_path, capsys, head_dir,
                                                              tiny_encoder, bundle_fp32):
    out = tmp_path / "m.bundle"
    assert main(["export", str(head_dir), "--encoder", str(tiny_encoder[0]),
                 "--out", str(out)]) == 0
    assert "bundle: fp32 encoder" in capsys.readouterr().out
    assert out.is_file()
    other = tmp_path / "enc2"
    for name in ("weights.safetensors", "meta.json"):
        (other / name).parent.mkdir(exist_ok=True)
        (other / name).write_bytes((tiny_encoder[0] / name).read_bytes())
    meta = json.loads((other / "meta.json").read_text())
    weights = other / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # another encoder: other weights, so another fingerprint
    weights.write_bytes(bytes(data))
    from hybnn.artifacts import sha256_file

    meta["fingerprint"] = sha256_file(weights)
    (other / "meta.json").write_text(json.dumps(meta))
    assert main(["export", str(head_dir), "--encoder", str(other), "--out",
                 str(tmp_path / "n.bundle")]) == 2
    assert "trained on codes of encoder" in capsys.readouterr().err
    assert main(["export", str(head_dir), "--int8", "--out", str(tmp_path / "e")]) == 2
    assert "--encoder" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    assert main(["predict", "--model", str(bundle_fp32[0]), "--encoder",
                 str(tiny_encoder[0]), str(tmp_path / "x.npy")]) == 2
    assert "a bundle carries its encoder" in capsys.readouterr().err
