"""User inputs to `predict`: each file validated on its own, then stacked if shapes agree."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hybnn.data.inputs import read_inputs
from hybnn.errors import DataError


def test_a_png_and_a_float_npy_of_the_same_size_mix(tmp_path):
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", np.full((2, 8, 8), 0.25, np.float32))
    x, names = read_inputs([str(tmp_path / "a.png"), str(tmp_path / "b.npy")])
    assert x.shape == (3, 1, 8, 8) and x.dtype == np.float32
    assert x[0].min() == 1.0 and np.all(x[1:] == 0.25)  # uint8 pixels scaled, floats kept
    assert names == [str(tmp_path / "a.png"), f"{tmp_path / 'b.npy'}[0]",
                     f"{tmp_path / 'b.npy'}[1]"]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"a.npy": np.zeros((1, 8, 8), np.uint8), "b.npy": np.zeros((1, 9, 9), np.uint8)},
         r"inputs differ in shape: .*a\.npy is 1x8x8, .*b\.npy is 1x9x9"),
        ({"a.npy": np.zeros((1, 8, 8), np.uint8), "b.npy": np.zeros((1, 3, 8, 8), np.uint8)},
         "inputs differ in shape"),
        ({"a.npy": np.float32(1.0)}, r"2-4 dimensions, got shape \(\)"),
        ({"a.npy": np.zeros(5, np.uint8)}, "2-4 dimensions"),
        ({"a.npy": np.zeros((0, 8, 8), np.uint8)}, "zero images"),
        ({"a.npy": np.full((1, 8, 8), 255.0)}, r"\[0, 1\]"),
    ],
    ids=["sizes", "channels", "0-d", "1-d", "empty", "float-255"],
)
def test_inputs_that_cannot_be_classified_are_a_data_error(tmp_path, arrays, message):
    for name, arr in arrays.items():
        np.save(tmp_path / name, arr)
    with pytest.raises(DataError, match=message):
        read_inputs([str(tmp_path / n) for n in arrays])
