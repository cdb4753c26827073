"""The IDX reader: exact roundtrip for every IDX type, and one DataError for every bad file."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybnn.data.idx import read_idx, read_idx_bytes
from hybnn.errors import DataError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def sample(dtype, shape=(3, 4, 5)) -> np.ndarray:
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.floating):
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_roundtrip_every_idx_type_raw_and_gzip(tmp_path, write_idx, dtype, compress):
    arr = sample(dtype)
    out = read_idx(write_idx(tmp_path / "a.idx", arr, compress))

    assert out.dtype == np.dtype(dtype)  # native byte order, same kind and width
    assert out.dtype.isnative
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_gzip_is_detected_from_content_not_name(tmp_path, write_idx):
    arr = sample(np.uint8, (2, 28, 28))
    path = write_idx(tmp_path / "images.idx", arr, compress=True)  # no .gz suffix
    np.testing.assert_array_equal(read_idx(path), arr)


def test_result_is_writable_copy_not_view_of_file_bytes(idx_bytes):
    out = read_idx_bytes(idx_bytes(np.arange(6, dtype=np.uint8)))
    out[0] = 9  # a frombuffer view would be read-only
    assert out[0] == 9


def test_empty_first_dimension_is_a_valid_file(idx_bytes):
    out = read_idx_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    assert out.shape == (0, 28, 28)


# A 3x4 uint8 IDX file written out by hand: magic 00 00, type 08, 2 dims, sizes, data.
GOOD = b"\x00\x00\x08\x02" + struct.pack(">2I", 3, 4) + bytes(range(12))


def test_hand_written_file_parses():
    np.testing.assert_array_equal(read_idx_bytes(GOOD), np.arange(12).reshape(3, 4))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "too short"),
        (b"\x00\x00", "too short"),
        (b"\x01\x00" + GOOD[2:], "bad magic"),
        (b"\x00\x07" + GOOD[2:], "bad magic"),
        (GOOD[:2] + b"\x0a" + GOOD[3:], "unknown IDX data type 0x0a"),
        (GOOD[:3] + b"\x00", "zero dimensions"),
        (GOOD[:6], "truncated IDX header"),
        (GOOD[:-1], "truncated"),
        (GOOD[:12], "truncated"),
        (GOOD + b"\x00", "trailing bytes"),
    ],
    ids=["empty", "two-bytes", "magic0", "magic1", "type", "ndim0", "header", "payload-1",
         "payload-empty", "trailing"],
)
def test_bad_bytes_raise_data_error_with_reason(raw, message):
    with pytest.raises(DataError, match=message):
        read_idx_bytes(raw, "f.idx")


def test_error_names_the_file(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(GOOD[:-3])
    with pytest.raises(DataError, match=r"labels\.idx.*truncated.*need 12 data bytes, found 9"):
        read_idx(path)


def test_dimension_product_overflow_is_a_data_error():
    # 2**31 * 2**31 * 4 wraps to 0 in int64: a crafted header must not pass as "0 items".
    raw = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**31, 2**31, 4)
    with pytest.raises(DataError, match="above the limit"):
        read_idx_bytes(raw)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope.idx")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda z: z[: len(z) // 2],  # truncated stream
        lambda z: z[:-4] + b"\xff\xff\xff\xff",  # wrong length in the trailer
        lambda z: z[:12] + bytes(b ^ 0x55 for b in z[12:]),  # garbage deflate data
        lambda z: z[:3],  # magic only
    ],
    ids=["truncated", "bad-trailer", "garbage", "magic-only"],
)
def test_corrupt_gzip_raises_data_error(tmp_path, mangle):
    path = tmp_path / "x.idx.gz"
    path.write_bytes(mangle(gzip.compress(GOOD)))
    with pytest.raises(DataError, match=r"x\.idx\.gz"):
        read_idx(path)


def test_directory_is_not_an_idx_file(tmp_path):
    with pytest.raises(DataError):
        read_idx(tmp_path)


idx_arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(
        dt,
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
        elements=hnp.from_dtype(np.dtype(dt), allow_nan=False) if dt in (np.float32, np.float64)
        else None,
    )
)


@settings(max_examples=60, deadline=None)
@given(idx_arrays)
def test_property_written_arrays_read_back_equal(idx_bytes, arr):
    out = read_idx_bytes(idx_bytes(arr))
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(idx_arrays, st.data())
def test_property_truncation_only_ever_raises_data_error(idx_bytes, arr, data):
    raw = idx_bytes(arr)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DataError):
        read_idx_bytes(raw[:cut])


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64))
def test_property_arbitrary_bytes_give_an_array_or_data_error(raw):
    try:
        out = read_idx_bytes(raw)
    except DataError:
        return
    assert isinstance(out, np.ndarray)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 10_000))
def test_property_damaged_gzip_gives_an_array_or_data_error(tmp_path_factory, payload, pos):
    z = bytearray(gzip.compress(GOOD))
    z[pos % len(z)] ^= payload[0] or 1
    path = tmp_path_factory.mktemp("gz") / "d.idx.gz"
    path.write_bytes(bytes(z))
    try:
        out = read_idx(path)
    except DataError:
        return
    assert isinstance(out, np.ndarray)
