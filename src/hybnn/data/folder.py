"""An image folder with one subfolder of images per class (the ImageNet layout), streamed.

``folder:DIR`` names ``DIR/CLASS/*.png|jpg|...``; with ``DIR/train`` and ``DIR/val`` (both
in that layout, as ImageNet is usually unpacked) those are the splits, otherwise every class
is split from a seed as other sources without an official test set are
(:func:`hybnn.data.splits.stratified_split`). Only the file list is held in memory:
:class:`FolderImages` reads, converts and resizes one image when asked (a map-style data
set for torch's ``DataLoader`` and its worker processes; no torch import here).

A federated node's folder is small enough to hold: :func:`load_folder` reads it into memory
as a :class:`~hybnn.data.dataset.Dataset` (the encoder turns it into codes once), each
class folder named by its label number or by one of the federation's label names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybnn.data import cifar
from hybnn.data.dataset import Dataset
from hybnn.data.inputs import read_gray_image
from hybnn.data.labels import MAX_LABEL, MAX_NAME_LENGTH, LabelSpace
from hybnn.data.limits import MAX_INPUT_IMAGES, check_elements
from hybnn.data.names import FOLDER_PREFIX
from hybnn.data.splits import stratified_split
from hybnn.data.tasks import task_classes
from hybnn.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".webp", ".tif", ".tiff")
CHANNELS = 3  # every image is read as RGB
MAX_FOLDER_IMAGES = 100_000_000  # far above ImageNet's 1.3 million
MAX_LOADED_IMAGES = MAX_INPUT_IMAGES  # a folder read into memory (a node's data)


@dataclass(frozen=True)
class ImageFiles:
    """The images of one split: their paths, labels 0..k-1 and the classes' names."""

    root: Path
    files: tuple[Path, ...]
    labels: np.ndarray
    label_space: LabelSpace

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.label_space)

    def subset(self, index: np.ndarray) -> ImageFiles:
        return ImageFiles(self.root, tuple(self.files[i] for i in index), self.labels[index],
                          self.label_space)

    def select(self, task: str) -> ImageFiles:
        """The task's classes, relabelled 0..k-1 (as :func:`hybnn.data.tasks.select_task`)."""
        classes = task_classes(task, self.num_classes, self.label_space.names)
        keep = np.flatnonzero(np.isin(self.labels, classes))
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[classes] = np.arange(len(classes))
        return ImageFiles(self.root, tuple(self.files[i] for i in keep),
                          remap[self.labels[keep]], self.label_space.select(classes))


def folder_path(spec: str) -> Path:
    """The directory of a ``folder:DIR`` data spec."""
    return Path(spec[len(FOLDER_PREFIX):] if spec.startswith(FOLDER_PREFIX) else spec)


def absolute_spec(spec: str) -> str:
    """A data file's or image folder's spec with its path made absolute (``folder:`` kept)."""
    if spec.startswith(FOLDER_PREFIX):
        return FOLDER_PREFIX + str(folder_path(spec).resolve())
    return str(Path(spec).resolve())


def is_image_folder(spec: str) -> bool:
    """Whether a data spec names an image folder: ``folder:DIR``, or a directory that does
    not hold CIFAR-10's files."""
    return spec.startswith(FOLDER_PREFIX) or (Path(spec).is_dir()
                                               and not cifar.is_cifar10_folder(spec))


def folder_label_space(classes: tuple[str, ...], named: dict[str, int],
                       root: Path) -> LabelSpace:
    """The labels of class folders ``classes``: a folder named by a number (``7``) is that
    label, any other by its label in ``named`` (a label name -> its label)."""
    labels = []
    for name in classes:
        if name.isdigit() and int(name) <= MAX_LABEL:
            labels.append(int(name))
        elif name in named:
            labels.append(named[name])
        else:
            given = f" {sorted(named)[:10]}" if named else " (none given: --label-names)"
            raise DataError(f"{root / name}: a class folder is named by its label (e.g. 3) or "
                            f"by one of the federation's label names{given}")
    if len(set(labels)) != len(labels):
        raise DataError(f"{root}: two class folders name the same label ({classes})")
    return LabelSpace(tuple(labels), classes)


def load_folder(spec: str, named: dict[str, int] | None = None) -> Dataset:
    """Every image of an image folder in memory, as ``hybnn predict`` reads images
    (grayscale, at their own size, which must be one size for all), labelled by
    :func:`folder_label_space`. A folder of more than ``MAX_LOADED_IMAGES`` images, or whose
    pixels exceed :data:`~hybnn.data.limits.MAX_ARRAY_ELEMENTS`, is refused before it is read."""
    root = folder_path(spec)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    listed = list_images(root, min_classes=1)  # a federated node may hold one class
    space = folder_label_space(listed.label_space.names, dict(named or {}), root)
    if len(listed) > MAX_LOADED_IMAGES:
        raise DataError(f"{root}: {len(listed):,} images, above the limit of "
                        f"{MAX_LOADED_IMAGES:,} for a folder read into memory")
    first = read_gray_image(listed.files[0])  # list_images refuses an empty class
    check_elements((len(listed), *first.shape), 4, str(root))
    x = np.empty((len(listed), 1, *first.shape), dtype=np.float32)
    for i, path in enumerate(listed.files):
        pixels = first if i == 0 else read_gray_image(path)
        if pixels.shape != x.shape[2:]:
            raise DataError(f"{path}: image of {pixels.shape[1]}x{pixels.shape[0]} pixels, but "
                            f"{listed.files[0].name} is {x.shape[3]}x{x.shape[2]}; every image "
                            "of a folder has one size")
        x[i, 0] = pixels / np.float32(255) if pixels.dtype == np.uint8 else pixels
    return Dataset(root.name, x, listed.labels, len(space), label_space=space)


def folder_splits(spec: str, task: str = "all") -> tuple[ImageFiles, ImageFiles]:
    """(train, test) image files of ``folder:DIR`` restricted to ``task``."""
    root = folder_path(spec)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root} (expected {root}/CLASS/IMAGE.png, "
                        "one subfolder per class)")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, test = list_images(root / "train"), list_images(root / "val")
        if train.label_space.names != test.label_space.names:
            raise DataError(f"{root}: train/ and val/ have different class folders")
    else:
        every = list_images(root)
        tr, te = stratified_split(every.labels)
        train, test = every.subset(tr), every.subset(te)
    return train.select(task), test.select(task)


def list_images(root: Path, min_classes: int = 2) -> ImageFiles:
    """Every image of ``root/CLASS/``, classes in sorted order; hidden files are skipped,
    anything else that is not an image, and an empty class, are refused."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < min_classes:
        raise DataError(f"{root}: an image folder needs a subfolder per class, at least "
                        f"{min_classes}, found {len(classes)}")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if not p.name.startswith("."))
        others = [p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file()]
        if others:
            raise DataError(f"{others[0]} is not an image file ({', '.join(IMAGE_SUFFIXES)}); "
                            "a class folder holds images only")
        if not found:
            raise DataError(f"{root / name}: empty class folder (no images)")
        files += found
        labels += [label] * len(found)
        if len(files) > MAX_FOLDER_IMAGES:
            raise DataError(f"{root}: more than {MAX_FOLDER_IMAGES:,} images")
    space = LabelSpace.identity(len(classes), [c[:MAX_NAME_LENGTH] for c in classes])
    return ImageFiles(root, tuple(files), np.asarray(labels, dtype=np.int64), space)


class FolderImages:
    """Map-style data set: item i is (uint8 RGB image (3, size, size), label): the shorter
    side resized to ``size``, then the centre crop."""

    def __init__(self, images: ImageFiles, size: int) -> None:
        self.images = images
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return read_image(self.images.files[i], self.size), int(self.images.labels[i])


def read_image(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """One image as uint8 (3, size, size) (see :class:`FolderImages`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale where it can
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    w, h = rgb.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = rgb.resize((rw, rh), Image.Resampling.BILINEAR)
    left, top = (rw - size) // 2, (rh - size) // 2
    rgb = rgb.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def worker_error(exc: BaseException) -> DataError | None:
    """The one-line :class:`DataError` a DataLoader worker raised, from the multi-line one
    torch re-raises in the main process (None when ``exc`` is not one)."""
    if not isinstance(exc, DataError):
        return None
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else str(exc)
    return DataError(last.split("DataError: ", 1)[-1])
