"""Images given to `predict` are read at their full depth, whatever mode Pillow returns.

The test images are real digits (scikit-learn's 8x8 digits) written by Pillow in each mode;
the 8-bit grayscale copy is the reference every other copy must match.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from hybnn.data.inputs import gray_pixels, read_inputs
from hybnn.errors import DataError

ONE_LEVEL = 1 / 255 + 1e-6


@pytest.fixture(scope="module")
def gray():
    """20 real digits as uint8 8x8 images (0..255)."""
    images = load_digits().images[:20]
    return np.round(images * 255 / 16).astype(np.uint8)


def read_one(path):
    x, _ = read_inputs([str(path)])
    return x[0, 0]


def sixteen_bit(g, mode="I;16"):
    """The 8-bit image ``g`` at 16 bits (v * 257: 255 -> 65535) in a Pillow I;16* mode."""
    order = ">u2" if mode == "I;16B" else "<u2"
    return Image.frombytes(mode, g.shape[::-1], (g.astype(np.uint16) * 257).astype(order)
                           .tobytes())


def test_a_16_bit_png_reads_as_its_8_bit_copy(tmp_path, gray):
    eight = [tmp_path / f"d{i}-8.png" for i in range(len(gray))]
    sixteen = [tmp_path / f"d{i}-16.png" for i in range(len(gray))]
    for g, p8, p16 in zip(gray, eight, sixteen, strict=True):
        Image.fromarray(g).save(p8)
        sixteen_bit(g).save(p16)
        assert Image.open(p16).mode == "I;16"  # a real 16-bit PNG
    x8, _ = read_inputs([str(p) for p in eight])
    x16, _ = read_inputs([str(p) for p in sixteen])
    assert np.abs(x16 - x8).max() <= ONE_LEVEL
    assert np.allclose(x8[:, 0], gray / 255.0)
    assert (x16 < 1.0).mean() > 0.5  # not squashed to 0 / 1


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I;16B", "PNG"),
                                           ("I;16B", "TIFF"), ("I;16L", "TIFF")])
def test_16_bit_modes_scale_by_65535(tmp_path, gray, mode, fmt):
    path = tmp_path / f"d.{fmt.lower()}"
    sixteen_bit(gray[3], mode).save(path, fmt)
    assert Image.open(path).mode.startswith("I;16")
    assert np.abs(read_one(path) - gray[3] / 255.0).max() <= ONE_LEVEL


def test_16_bit_native_order_scales_by_65535(gray):
    img = Image.frombytes("I;16N", (8, 8), (gray[1].astype(np.uint16) * 257).tobytes())
    assert np.abs(gray_pixels(img, "x") - gray[1] / 255.0).max() <= ONE_LEVEL


def luma(rgb):
    """ITU-R 601-2 luma, as Pillow computes it (rounded)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.round((r * 299 + g * 587 + b * 114) / 1000) / 255.0


@pytest.mark.parametrize(("mode", "fmt"), [
    ("L", "PNG"), ("P", "PNG"), ("LA", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"),
    ("PA", "TIFF"), ("CMYK", "TIFF"), ("YCbCr", "TIFF"), ("LAB", "TIFF"), ("CMYK", "JPEG"),
])
def test_gray_and_colour_modes_read_as_the_gray_digit(tmp_path, gray, mode, fmt):
    img = Image.fromarray(gray[5]).convert("RGB" if mode in ("LAB",) else "L").convert(mode)
    if mode in ("LA", "RGBA", "PA"):  # alpha that varies: dropped, not blended
        img.putalpha(Image.fromarray(np.full((8, 8), 77, np.uint8)))
    path = tmp_path / f"d.{fmt.lower()}"
    img.save(path, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    assert Image.open(path).mode == mode
    assert np.abs(read_one(path) - gray[5] / 255.0).max() <= ONE_LEVEL


def test_colour_becomes_luma(tmp_path, gray):
    g = gray[7]
    rgb = np.stack([g, 255 - g, np.full_like(g, 40)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert np.abs(read_one(tmp_path / "c.png") - luma(rgb)).max() <= ONE_LEVEL


def test_a_1_bit_image_reads_as_0_and_1(tmp_path, gray):
    Image.fromarray(gray[2]).convert("1").save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    pixels = read_one(tmp_path / "b.png")
    assert set(np.unique(pixels)) <= {0.0, 1.0} and pixels.max() == 1.0


@pytest.mark.parametrize("mode", ["La", "RGBa", "HSV"])
def test_modes_no_file_format_writes_are_read_too(gray, mode):
    base = Image.fromarray(gray[4]).convert("LA" if mode == "La" else "RGBA")
    img = base.convert(mode) if mode != "HSV" else base.convert("RGB").convert("HSV")
    assert np.abs(gray_pixels(img, "x") / 255.0 - gray[4] / 255.0).max() <= ONE_LEVEL


def test_32_bit_integer_images_are_16_bit_values_or_refused(tmp_path, gray):
    g = gray[6].astype(np.int32)
    Image.fromarray(g * 257).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert np.abs(read_one(tmp_path / "i.tif") - gray[6] / 255.0).max() <= ONE_LEVEL
    for name, values in {"big": g * 257 + 65536, "negative": g - 300}.items():
        Image.fromarray(values).save(tmp_path / f"{name}.tif")
        with pytest.raises(DataError, match=r"i*\.tif: 32-bit integer image .*0\.\.65535"):
            read_inputs([str(tmp_path / f"{name}.tif")])


def test_float_images_must_lie_in_0_1(tmp_path, gray):
    unit = (gray[8] / 255.0).astype(np.float32)
    Image.fromarray(unit).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert np.abs(read_one(tmp_path / "f.tif") - unit).max() <= 1e-7
    for name, values in {"scaled": unit * 255, "nan": np.where(unit > 0.5, np.nan, unit)}.items():
        Image.fromarray(values.astype(np.float32)).save(tmp_path / f"{name}.tif")
        with pytest.raises(DataError, match=r"floating-point image with values outside"):
            read_inputs([str(tmp_path / f"{name}.tif")])


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_mode_pillow_has_gives_one_plane_in_0_1(mode):
    pixels = gray_pixels(Image.new(mode, (5, 3)), "x")
    assert pixels.shape == (3, 5) and pixels.dtype in (np.uint8, np.float32)


def test_a_tiff_with_a_tag_of_the_wrong_type_is_a_data_error(tmp_path):
    # One byte of a real TIFF's directory changed: a numeric tag becomes ASCII, and Pillow
    # raises TypeError while decoding.
    buf = io.BytesIO()
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.int32)).save(buf, "TIFF")
    raw = bytearray(buf.getvalue())
    raw[72] = 2
    (tmp_path / "bad.tif").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"bad\.tif: cannot read image"):
        read_inputs([str(tmp_path / "bad.tif")])
