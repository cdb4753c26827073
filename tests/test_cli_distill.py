"""`hybnn distill`, then the usual extract/train on distilled codes, then one fully binary
engine file: the commands a user runs (in process, digits, tiny budgets)."""

from __future__ import annotations

import json

import numpy as np

from hybnn.cli import main
from hybnn.engine import load


def test_distill_extract_train_export_predict(distilled, tmp_path, capsys):
    d = tmp_path
    assert main(["distill", "--encoder", str(distilled["teacher_dir"]), "--data", "digits",
                 "--epochs", "1", "--out", str(d / "bin"), "--no-progress"]) == 0
    assert "bit agreement with the teacher" in capsys.readouterr().out
    for split in ("train", "test"):
        assert main(["extract", "--encoder", str(d / "bin"), "--data", "digits", "--task",
                     "0v1", "--split", split, "--out", str(d / f"{split}.st")]) == 0
    assert main(["train", "--model", "head", "--codes", str(d / "train.st"), "--test-codes",
                 str(d / "test.st"), "--epochs", "2", "--out", str(d / "head"),
                 "--no-progress"]) == 0
    meta = json.loads((d / "bin" / "meta.json").read_text())
    head_meta = json.loads((d / "head" / "meta.json").read_text())
    assert head_meta["encoder_fingerprint"] == meta["fingerprint"]
    assert meta["teacher"]["fingerprint"] == distilled["teacher"].fingerprint
    assert main(["export", str(d / "head"), "--encoder", str(d / "bin"), "--out",
                 str(d / "fb.st")]) == 0
    assert "fully-binary" in capsys.readouterr().out
    images = distilled["test"].x[:20]
    np.save(d / "x.npy", images)
    capsys.readouterr()
    assert main(["predict", "--model", str(d / "head"), "--encoder", str(d / "bin"),
                 "--engine", "packed", "--json", str(d / "x.npy")]) == 0
    rows = json.loads(capsys.readouterr().out)
    np.testing.assert_array_equal([r["index"] for r in rows], load(d / "fb.st").predict(images))


def test_export_refuses_a_head_of_the_vae(distilled, tmp_path, capsys):
    d = tmp_path
    assert main(["extract", "--encoder", str(distilled["teacher_dir"]), "--data", "digits",
                 "--task", "0v1", "--out", str(d / "vae.st")]) == 0
    assert main(["train", "--model", "head", "--codes", str(d / "vae.st"), "--epochs", "1",
                 "--out", str(d / "head"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(d / "head"), "--encoder", str(distilled["student_dir"]),
                 "--out", str(d / "fb.st")]) == 2
    assert "hybnn: error:" in capsys.readouterr().err
    assert not (d / "fb.st").exists()


def test_distill_the_resnet18_student_and_export_it_as_a_graph(distilled, tmp_path, capsys):
    d = tmp_path
    assert main(["distill", "--encoder", str(distilled["teacher_dir"]), "--data", "digits",
                 "--student", "resnet18", "--width", "4", "--epochs", "1", "--out",
                 str(d / "res"), "--no-progress"]) == 0
    assert "(resnet18 student, teacher" in capsys.readouterr().out
    assert json.loads((d / "res" / "meta.json").read_text())["student"] == "resnet18"
    assert main(["extract", "--encoder", str(d / "res"), "--data", "digits", "--task", "0v1",
                 "--out", str(d / "train.st")]) == 0
    assert main(["train", "--model", "head", "--codes", str(d / "train.st"), "--epochs", "1",
                 "--out", str(d / "head"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(d / "head"), "--encoder", str(d / "res"), "--out",
                 str(d / "fb.st")]) == 0
    assert "fully-binary" in capsys.readouterr().out
    images = distilled["test"].x[:20]
    np.save(d / "x.npy", images)
    assert main(["predict", "--model", str(d / "head"), "--encoder", str(d / "res"),
                 "--json", str(d / "x.npy")]) == 0
    rows = json.loads(capsys.readouterr().out)
    np.testing.assert_array_equal([r["index"] for r in rows], load(d / "fb.st").predict(images))


def test_bad_student_flags_give_one_error_line(distilled, tmp_path, capsys):
    from hybnn.models import BNNHead
    from hybnn.models.io import save_model

    save_model(tmp_path / "head", BNNHead(200, 2, [8]))
    base = ["distill", "--encoder", str(distilled["teacher_dir"]), "--data", "digits",
            "--epochs", "1", "--out", str(tmp_path / "out"), "--no-progress"]
    for flags, says in [
        (["--stem", "imagenet"], "--stem is the resnet18 student's"),
        (["--student-init", str(tmp_path / "head")], "--student-init starts the resnet18"),
        (["--student", "resnet18", "--student-init", str(tmp_path / "none")],
         "--student-init model not found"),
        (["--student", "resnet18", "--student-init", str(tmp_path / "head")],
         "a head model; the student starts from a binary resnet18"),
        (["--student", "resnet18", "--width", "0"], "--width must be"),
    ]:
        assert main([*base, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("hybnn: error:") and says in err[0], err
    assert not (tmp_path / "out").exists()
