"""Only regular files are read as data: a FIFO, a directory or a device given as an input
is refused at once with a DataError naming it (a FIFO with no writer never hangs a reader)."""

from __future__ import annotations

import os

import pytest

from blocking import deadline
from hybnn.data import load_source
from hybnn.data.idx import read_idx
from hybnn.data.inputs import read_inputs
from hybnn.data.npfiles import npz_members, read_npy, read_npz
from hybnn.data.sources import load_idx_pair, read_names
from hybnn.errors import DataError

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")


READERS = {
    "image.png": lambda p: read_inputs([str(p)]),
    "x.npy": lambda p: read_inputs([str(p)]),
    "x.npz": lambda p: read_inputs([str(p)]),
    "npy": read_npy,
    "npz": lambda p: read_npz(p, ["x"]),
    "npz-members": npz_members,
    "data.npz": lambda p: load_source(str(p)),
    "images.idx": read_idx,
    "names.txt": read_names,
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_fifo_is_refused_at_once(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    with deadline(), pytest.raises(DataError, match="not a regular file") as caught:
        READERS[name](fifo)
    assert str(fifo) in str(caught.value)


@pytest.mark.parametrize("name", ["image.png", "x.npy", "x.npz", "images.idx", "names.txt"])
def test_a_directory_is_refused_by_its_name(tmp_path, name):
    directory = tmp_path / name
    directory.mkdir()
    reader = READERS[name]
    with pytest.raises(DataError, match=rf"{name}: it is a directory"):
        reader(directory)


def test_an_idx_pair_with_a_fifo_as_labels_is_refused(tmp_path, write_idx):
    import numpy as np

    images = write_idx(tmp_path / "images.idx", np.zeros((2, 4, 4), np.uint8))
    os.mkfifo(tmp_path / "labels.idx")
    with deadline(), pytest.raises(DataError, match=r"labels\.idx: it is not a regular file"):
        load_idx_pair(images, tmp_path / "labels.idx")


def test_a_class_name_file_above_its_cap_is_refused(tmp_path, monkeypatch):
    from hybnn.data import sources

    monkeypatch.setattr(sources, "MAX_NAMES_BYTES", 16)
    (tmp_path / "names.txt").write_text("zero\none\ntwo\nthree\nfour\n")
    with pytest.raises(DataError, match=r"names\.txt has 24 bytes, more than the limit of 16"):
        read_names(tmp_path / "names.txt")


def test_a_missing_input_is_still_not_found(tmp_path):
    with pytest.raises(DataError, match="input not found"):
        read_inputs([str(tmp_path / "absent.png")])
