"""CIFAR-10's binary version: records read as the format defines them, damaged files refused."""

from __future__ import annotations

import numpy as np
import pytest

from hybnn.cli import main
from hybnn.data import load_source, load_split
from hybnn.data.cifar import RECORD_BYTES, read_cifar10
from hybnn.errors import DataError


def test_records_are_label_then_red_green_blue_planes(tmp_path, write_cifar):
    folder = write_cifar(tmp_path / "cifar", records=3)
    raw = np.frombuffer((folder / "data_batch_2.bin").read_bytes(), np.uint8).reshape(3, -1)
    data = read_cifar10(folder)
    assert data.x.shape == (18, 3, 32, 32) and data.num_classes == 10
    first = data.x[3]  # the first record of the second file
    assert data.y[3] == raw[0, 0]
    assert np.allclose(first[0].ravel() * 255, raw[0, 1:1025])  # red plane, rows of 32
    assert np.allclose(first[2, 31, 31] * 255, raw[0, -1])  # blue, last pixel
    assert data.test_mask.sum() == 3 and data.test_mask[-3:].all()  # test_batch.bin
    assert data.label_space.names[0] == "airplane"


def test_named_or_as_a_folder_path_with_the_official_split(tmp_path, write_cifar):
    folder = write_cifar(tmp_path / "cifar", records=2)
    assert len(load_source(f"cifar10:{folder}")) == len(load_source(str(folder))) == 12
    assert len(load_split(f"cifar10:{folder}", "all", "test")) == 2


def test_truncated_file_is_refused_by_name(tmp_path, write_cifar):
    folder = write_cifar(tmp_path / "cifar")
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"data_batch_3\.bin.*whole number of CIFAR-10 records"):
        read_cifar10(folder)


def test_cifar100_labels_and_wrong_class_names_are_refused(tmp_path, write_cifar):
    folder = write_cifar(tmp_path / "cifar")
    rec = bytearray((folder / "test_batch.bin").read_bytes())
    rec[RECORD_BYTES] = 42
    (folder / "test_batch.bin").write_bytes(bytes(rec))
    with pytest.raises(DataError, match="label 42"):
        read_cifar10(folder)
    folder = write_cifar(tmp_path / "other")
    (folder / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="2 class names"):
        read_cifar10(folder)


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_cli_gives_one_error_line(tmp_path, write_cifar, capsys, damage):
    folder = tmp_path / "cifar"
    if damage == "truncated":
        write_cifar(folder)
        (folder / "test_batch.bin").write_bytes(b"\x01" * 100)
    rc = main(["train", "--model", "resnet18", "--data", f"cifar10:{folder}", "--width", "4",
               "--epochs", "1", "--out", str(tmp_path / "m"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("hybnn: error:")
    assert ("test_batch.bin" in err[0]) and (damage != "missing" or "put the binary" in err[0])
    assert not (tmp_path / "m").exists()
