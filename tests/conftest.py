"""Shared fixtures: one torch thread, quiet progress bars, small real data, a tiny encoder."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import torch

# Progress bars only draw on a terminal, but a developer running pytest has one.
os.environ["HYBNN_NO_PROGRESS"] = "1"
# The suite shares a couple of cores with other jobs; one thread also keeps CPU results
# bit-identical between this process and the subprocesses some tests start.
torch.set_num_threads(1)


IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def _idx_bytes(arr: np.ndarray) -> bytes:
    dtype = np.dtype(arr.dtype).newbyteorder("=")
    header = bytes([0, 0, IDX_CODES[dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dtype.newbyteorder(">")).tobytes()


@pytest.fixture(scope="session")
def idx_bytes():
    """``idx_bytes(arr)``: serialize an array as IDX, the format the reader is specified by."""
    return _idx_bytes


@pytest.fixture(scope="session")
def write_idx():
    """``write_idx(path, arr, compress=False)``: write an IDX file (gzip when asked)."""

    def write(path, arr, compress=False):
        data = _idx_bytes(np.asarray(arr))
        path.write_bytes(gzip.compress(data) if compress else data)
        return path

    return write


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits as a hybnn Dataset (offline, 1,797 images)."""
    from hybnn.data import load_source

    return load_source("digits")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, digits):
    """An encoder pretrained for one epoch on 200 digits, saved with plots and bit usage.

    Returns (directory, encoder, images it was trained on).
    """
    from hybnn.pipeline.config import PretrainConfig
    from hybnn.pipeline.pretrain import pretrain

    out = tmp_path_factory.mktemp("encoder")
    images = np.ascontiguousarray(digits.x[:200])
    config = PretrainConfig(latent_bits=200, epochs=1, batch_size=64, seed=0)
    encoder = pretrain(images, out, config, {"source": "digits", "n": 200}, progress=False)
    return out, encoder, images


@pytest.fixture(scope="session")
def distilled(tmp_path_factory, digits):
    """A VAE pretrained 3 epochs on the digits training split (the teacher) and a binary
    encoder distilled from it for 4 epochs, both saved.

    Returns a dict: teacher_dir, teacher, student_dir, student, train, test (Datasets).
    """
    from hybnn.data import train_test
    from hybnn.pipeline.config import DistillConfig, PretrainConfig
    from hybnn.pipeline.distill import distill
    from hybnn.pipeline.pretrain import pretrain

    root = tmp_path_factory.mktemp("distill")
    train, test = train_test(digits)
    teacher = pretrain(train.x, root / "vae", PretrainConfig(epochs=3, batch_size=64, seed=0),
                       {"source": "digits"}, progress=False, plots=False)
    student = distill(teacher, train.x, root / "bin", DistillConfig(epochs=4, shift=0, seed=0),
                      {"source": "digits"}, test.x, progress=False, teacher_path="vae")
    return {"teacher_dir": root / "vae", "teacher": teacher, "student_dir": root / "bin",
            "student": student, "train": train, "test": test}


@pytest.fixture(scope="session")
def distilled_resnet(distilled):
    """The resnet18 student (width 4) distilled for 4 epochs from the ``distilled`` teacher,
    saved. Returns a dict: dir, student (the DistilledEncoder)."""
    from hybnn.pipeline.config import DistillConfig
    from hybnn.pipeline.distill import distill

    out = distilled["student_dir"].parent / "resnet"
    config = DistillConfig(epochs=4, shift=0, seed=0, student="resnet18", width=4)
    student = distill(distilled["teacher"], distilled["train"].x, out, config,
                      {"source": "digits"}, distilled["test"].x, progress=False,
                      teacher_path="vae")
    return {"dir": out, "student": student}


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def _write_cifar(folder, records=4, seed=0):
    """CIFAR-10's binary version in ``folder``: each file ``records`` records of a label
    byte and 3,072 pixel bytes (red, green, blue planes of 32 x 32)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (records, 3073), dtype=np.uint8)
        rec[:, 0] = np.arange(records) % 10
        (folder / name).write_bytes(rec.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR_CLASSES) + "\n\n")
    return folder


@pytest.fixture(scope="session")
def write_cifar():
    """``write_cifar(folder, records=4, seed=0)``: tiny CIFAR-10 binary-version files."""
    return _write_cifar


@pytest.fixture
def image_folder(tmp_path):
    """``tmp_path/images``: 3 class folders of 4 RGB PNGs of different sizes each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in ("cat", "dog", "fox"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (12 + 2 * i, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root
