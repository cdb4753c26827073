"""Image folders (one subfolder per class): listed, split, read on demand; bad ones refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybnn.data.folder import FolderImages, folder_splits, list_images, read_image
from hybnn.errors import DataError
from hybnn.pipeline.resnet import StreamedImages


def test_classes_sorted_split_per_class_and_task(image_folder):
    every = list_images(image_folder)
    assert every.label_space.names == ("cat", "dog", "fox") and len(every) == 12
    train, test = folder_splits(f"folder:{image_folder}")
    assert len(train) == 9 and len(test) == 3
    assert sorted(test.labels.tolist()) == [0, 1, 2]
    pair, _ = folder_splits(f"folder:{image_folder}", "cat,fox")
    assert pair.label_space.names == ("cat", "fox") and set(pair.labels.tolist()) == {0, 1}


def test_train_and_val_subfolders_are_the_splits(image_folder, tmp_path):
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for c in ("cat", "dog"):
            (root / split / c).symlink_to(image_folder / c)
    train, test = folder_splits(f"folder:{root}")
    assert len(train) == len(test) == 8


def test_images_are_resized_and_centre_cropped_to_rgb(image_folder):
    path = image_folder / "cat" / "3.png"  # 18 x 16
    img = read_image(path, 8)
    assert img.shape == (3, 8, 8) and img.dtype == np.uint8
    x, label = FolderImages(list_images(image_folder), 8)[0]
    assert x.shape == (3, 8, 8) and label == 0


def test_non_image_and_empty_class_are_refused(image_folder):
    (image_folder / "dog" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt is not an image file"):
        list_images(image_folder)
    (image_folder / "dog" / "notes.txt").unlink()
    (image_folder / "eel").mkdir()
    with pytest.raises(DataError, match="eel: empty class folder"):
        list_images(image_folder)
    with pytest.raises(DataError, match="image folder not found"):
        folder_splits(f"folder:{image_folder}/nowhere")


def test_unreadable_image_from_a_worker_is_one_line(image_folder):
    (image_folder / "fox" / "0.png").write_bytes(b"not a png")
    data = StreamedImages(list_images(image_folder), 8, "centered", workers=1)
    with pytest.raises(DataError) as err:
        list(data.batches(torch.arange(12).split(4)))
    assert str(err.value).startswith(str(image_folder / "fox" / "0.png"))
    assert "\n" not in str(err.value)


def _gray_folder(root, classes, n=3, size=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return root


def test_a_folder_loads_into_memory_labelled_by_number_or_name(tmp_path):
    from PIL import Image

    from hybnn.data.folder import load_folder

    root = _gray_folder(tmp_path / "site", ["3", "cat"])
    data = load_folder(str(root), {"cat": 7})
    assert data.x.shape == (6, 1, 8, 8) and data.x.dtype == np.float32
    assert data.label_space.labels == (3, 7) and data.label_space.names == ("3", "cat")
    pixels = np.asarray(Image.open(root / "cat" / "0.png"), dtype=np.float32) / 255
    assert np.array_equal(data.x[3, 0], pixels) and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert load_folder(f"folder:{root / '3'}/..", {"cat": 7}).num_classes == 2
    with pytest.raises(DataError, match=r"cat: a class folder is named by its label"):
        load_folder(str(root))


def test_an_unreadable_odd_sized_or_oversized_folder_is_refused(tmp_path, monkeypatch):
    from PIL import Image

    from hybnn.data import folder

    root = _gray_folder(tmp_path / "site", ["0", "1"])
    monkeypatch.setattr(folder, "MAX_LOADED_IMAGES", 5)
    with pytest.raises(DataError, match=r"6 images, above the limit of 5 for a folder"):
        folder.load_folder(str(root))
    monkeypatch.undo()
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(root / "1" / "2.png")
    with pytest.raises(DataError, match=r"2\.png: image of 8x9 pixels, but 0\.png is 8x8"):
        folder.load_folder(str(root))
    (root / "1" / "2.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"1/2\.png: (cannot read image|not an image)") as err:
        folder.load_folder(str(root))
    assert "\n" not in str(err.value)
