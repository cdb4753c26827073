"""Answers in the user's terms: every artifact carries its label space; predict prints the
label the user gave (a digit, a Fashion-MNIST name); evaluate reports per-class results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hybnn.data import load_source, select_task
from hybnn.data.labels import FASHION_MNIST_NAMES, MAX_NAME_LENGTH, LabelSpace
from hybnn.engine import export_artifact, load
from hybnn.errors import ArtifactError
from hybnn.pipeline.codes import CodeStore
from hybnn.pipeline.metrics import confusion_matrix, per_class, per_class_table
from hybnn.plots import integer_axis, plt


def hybnn(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "hybnn", *args], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def pair_2v3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("labels")
    hybnn("pretrain", "--data", "digits", "--epochs", "3", "--out", str(d / "enc"),
          "--no-progress")
    for split in ("train", "test"):
        hybnn("extract", "--encoder", str(d / "enc"), "--data", "digits", "--task", "2v3",
              "--split", split, "--out", str(d / f"{split}.safetensors"))
    hybnn("train", "--codes", str(d / "train.safetensors"), "--test-codes",
          str(d / "test.safetensors"), "--epochs", "30", "--out", str(d / "head"),
          "--no-progress")
    return d


def test_a_task_keeps_the_original_labels_and_names():
    space = select_task(load_source("digits"), "8v9").label_space
    assert space == LabelSpace((8, 9), ("8", "9"))
    assert LabelSpace.identity(10, FASHION_MNIST_NAMES).select([2, 3]).names == (
        "Pullover", "Dress")


@pytest.mark.slow
def test_labels_round_trip_through_code_store_model_and_engine_file(pair_2v3: Path):
    want = {"labels": [2, 3], "names": ["2", "3"]}
    assert CodeStore.load(pair_2v3 / "train.safetensors").meta["label_space"] == want
    assert json.loads((pair_2v3 / "head" / "meta.json").read_text())["label_space"] == want
    export_artifact(pair_2v3 / "head", pair_2v3 / "head.engine")
    assert load(pair_2v3 / "head.engine").label_space.to_json() == want


@pytest.mark.slow
def test_predict_on_a_png_of_a_known_digit_prints_that_digit(pair_2v3: Path):
    from PIL import Image

    test = select_task(load_source("digits"), "2v3")
    twos = [i for i in range(len(test)) if test.y[i] == 0][-3:]  # the source's last 2s
    paths = []
    for k, i in enumerate(twos):
        path = pair_2v3 / f"two-{k}.png"
        Image.fromarray((test.x[i, 0] * 255).round().astype(np.uint8)).save(path)
        paths.append(str(path))
    out = hybnn("predict", "--model", str(pair_2v3 / "head"), "--encoder",
                str(pair_2v3 / "enc"), *paths)
    assert [line.split(": ")[1].split(" ")[0] for line in out.splitlines()] == ["2", "2", "2"]
    rows = json.loads(hybnn("predict", "--model", str(pair_2v3 / "head"), "--encoder",
                            str(pair_2v3 / "enc"), paths[0], "--json"))
    assert {k: rows[0][k] for k in ("index", "label", "name")} == {"index": 0, "label": 2,
                                                                   "name": "2"}


@pytest.mark.slow
def test_evaluate_writes_per_class_results_and_a_confusion_png(pair_2v3: Path, tmp_path):
    result = json.loads(hybnn("evaluate", "--model", str(pair_2v3 / "head"), "--codes",
                              str(pair_2v3 / "test.safetensors"), "--json", "--out",
                              str(tmp_path)))
    assert [r["label"] for r in result["per_class"]] == [2, 3]
    assert sum(map(sum, result["confusion"])) == result["samples"]
    assert Path(result["confusion_png"]).parent == tmp_path
    assert Path(result["confusion_png"]).stat().st_size > 1000
    table = hybnn("evaluate", "--model", str(pair_2v3 / "head"), "--codes",
                  str(pair_2v3 / "test.safetensors"), "--out", str(tmp_path))
    assert "confusion (rows: true, columns: predicted)" in table


def test_confusion_matrix_on_a_hand_made_example():
    m = confusion_matrix(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 1, 0, 2]), 3)
    assert m.tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    rows = per_class(m, LabelSpace((4, 7, 9), ("four", "seven", "nine")))
    assert [r["accuracy"] for r in rows] == [0.5, 2 / 3, 1.0]
    assert [r["samples"] for r in rows] == [2, 3, 1]
    assert "seven" in per_class_table(rows, m)
    assert per_class(np.zeros((1, 1), int), LabelSpace.identity(1))[0]["accuracy"] is None


def test_a_forged_label_space_is_refused():
    with pytest.raises(ArtifactError, match="2 entries for a model with 3 outputs"):
        LabelSpace.from_json({"labels": [0, 1], "names": ["a", "b"]}, 3)
    with pytest.raises(ArtifactError, match="invalid label space"):
        LabelSpace.from_json({"labels": ["x"], "names": ["a"]}, 1)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"labels": [0, 1], "names": ["a", "b\nfake.png[9]: 7 (p=1.000)"]}, "printable"),
        ({"labels": [0, 1], "names": ["a", "\x1b[2J"]}, r"'\\x1b\[2J'"),
        ({"labels": [0, 1], "names": ["a", "x" * 1000]}, r"\(1000 characters\)"),
        ({"labels": [0, 1], "names": ["a", ""]}, r"\(0 characters\)"),
        ({"labels": [1, 1], "names": ["a", "b"]}, "not distinct"),
        ({"labels": [-3, 1], "names": ["a", "b"]}, "class label -3"),
        ({"labels": [2**31, 1], "names": ["a", "b"]}, "class label 2147483648"),
        ({"labels": [False, 1], "names": ["a", "b"]}, "class label False"),
        ({"labels": [0, 1], "names": ["a", 7]}, "must be strings"),
        ({"labels": "01", "names": "ab"}, "lists 'labels' and 'names'"),
    ],
)
def test_labels_and_names_from_an_artifact_are_checked_not_trimmed(obj, message):
    with pytest.raises(ArtifactError, match=message):
        LabelSpace.from_json(obj, 2)


def test_printable_names_in_any_script_are_kept():
    names = ("Ankle boot", "T-shirt/top", "café", "猫", "x" * MAX_NAME_LENGTH)
    space = LabelSpace.from_json({"labels": [0, 3, 9, 2**31 - 1, 4], "names": list(names)}, 5)
    assert space.names == names


def test_class_names_from_data_with_control_characters_are_refused(tmp_path):
    from hybnn.errors import DataError

    x, y = np.zeros((6, 8, 8), np.uint8), np.arange(6) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, names=np.array(["cat", "\x1b[2J", "emu"]))
    with pytest.raises(DataError, match=r"class name '\\x1b\[2J'"):
        load_source(str(tmp_path / "d.npz"))


def test_predict_escapes_what_it_prints(monkeypatch, capsys, tmp_path):
    """Even a name or input that got past every check prints as one escaped line."""
    from hybnn import api
    from hybnn.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("m", "x.npy"):  # options check that what they read exists
        (tmp_path / name).write_bytes(b"")

    rows = [{"input": "a\nb.png", "index": 0, "label": 0, "probability": 0.5,
             "name": "7 (p=1.000)\nfake.png[9]: 7 \x1b[2J\u202e\x9b"}]
    monkeypatch.setattr(api, "predict", lambda opts: rows)
    assert main(["predict", "--model", "m", "x.npy"]) == 0
    out = capsys.readouterr().out
    assert out == ("a\\nb.png: 7 (p=1.000)\\nfake.png[9]: 7 \\x1b[2J\\u202e\\x9b "
                   "(p=0.500)\n")
    assert main(["predict", "--model", "m", "x.npy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == rows


def test_counted_axes_get_whole_number_ticks():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [0.1, 0.5, 0.9])
    integer_axis(ax.xaxis)
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)


def test_users_own_class_names_come_from_npz_and_idx_files(tmp_path):
    from hybnn.data import load_source

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), np.arange(12) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, names=np.array(["cat", "dog", "emu"]))
    data = select_task(load_source(str(tmp_path / "d.npz")), "0v2")
    assert data.label_space == LabelSpace((0, 2), ("cat", "emu"))
    idx_images = tmp_path / "images.idx"
    idx_labels = tmp_path / "labels.idx"
    idx_images.write_bytes(b"\x00\x00\x08\x03" + np.array([12, 8, 8], ">i4").tobytes()
                           + x.tobytes())
    idx_labels.write_bytes(b"\x00\x00\x08\x01" + np.array([12], ">i4").tobytes()
                           + y.astype(np.uint8).tobytes())
    (tmp_path / "names.txt").write_text("cat\ndog\nemu\n")
    data = load_source(f"{idx_images},{idx_labels},{tmp_path / 'names.txt'}")
    assert data.label_space.names == ("cat", "dog", "emu")
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    from hybnn.errors import DataError

    with pytest.raises(DataError, match="label 2 >= 2 classes"):
        load_source(f"{idx_images},{idx_labels},{tmp_path / 'two.txt'}")


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_tasks_are_named():
    from hybnn.data import load_source

    assert select_task(load_source("fashion-mnist"), "2v3").label_space.names == (
        "Pullover", "Dress")
