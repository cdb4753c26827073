"""Data sources by name or path, the .npz and IDX-pair readers, and the download cache."""

from __future__ import annotations

import hashlib
import io
import pickle
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hybnn.data import load_npz, load_source, train_test
from hybnn.data.download import RemoteFile, cache_dir, fetch
from hybnn.data.sources import FASHION_DEBIAN_DIR
from hybnn.errors import DataError

# ---------------------------------------------------------------------------- built-in sources


@pytest.fixture(scope="module")
def mnist_5k():
    return load_source("mnist-5k")


def test_mnist_5k_is_5000_unit_images_balanced_over_ten_digits(mnist_5k):
    assert mnist_5k.x.shape == (5000, 1, 28, 28)
    assert mnist_5k.x.dtype == np.float32
    assert mnist_5k.x.min() == 0.0 and mnist_5k.x.max() == 1.0
    assert mnist_5k.y.dtype == np.int64
    assert np.bincount(mnist_5k.y).tolist() == [500] * 10
    assert mnist_5k.num_classes == 10
    assert mnist_5k.test_mask is None  # no official split: splits come from a seed
    assert mnist_5k.image_size == (28, 28)


def test_digits_is_1797_images_of_8x8(digits):
    assert digits.x.shape == (1797, 1, 8, 8)
    assert digits.x.dtype == np.float32
    assert digits.x.min() >= 0.0 and digits.x.max() <= 1.0
    assert digits.x.max() == 1.0  # 16 grey levels scaled by 1/16: full range used
    assert digits.num_classes == 10 and len(digits) == 1797


@pytest.mark.skipif(not FASHION_DEBIAN_DIR.is_dir(),
                    reason=f"Debian dataset-fashion-mnist not installed ({FASHION_DEBIAN_DIR})")
def test_fashion_mnist_uses_the_official_60k_10k_split():
    data = load_source("fashion-mnist")
    assert data.x.shape == (70_000, 1, 28, 28)
    assert data.num_classes == 10
    assert data.test_mask is not None
    assert not data.test_mask[:60_000].any() and data.test_mask[60_000:].all()
    train, test = train_test(data, test_fraction=0.5, seed=123)  # seed and fraction ignored
    assert (len(train), len(test)) == (60_000, 10_000)
    assert np.bincount(test.y).tolist() == [1000] * 10


def test_unknown_source_names_the_alternatives():
    with pytest.raises(DataError) as err:
        load_source("mnist5k")
    msg = str(err.value)
    assert "'mnist5k'" in msg
    for name in ("mnist", "mnist-5k", "fashion-mnist", "digits", ".npz", "IDX"):
        assert name in msg


# ------------------------------------------------------------------------------------ .npz files


def save_npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_uint8_images_are_scaled_to_unit_range(tmp_path):
    x = np.array([[[0, 255], [51, 102]]] * 3, dtype=np.uint8)
    data = load_npz(save_npz(tmp_path / "u.npz", x=x, y=np.array([0, 1, 2])))
    assert data.x.shape == (3, 1, 2, 2) and data.x.dtype == np.float32
    np.testing.assert_allclose(data.x[0, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    assert data.name == "u.npz" and data.num_classes == 3


@pytest.mark.parametrize("shape", [(4, 16), (4, 4, 4), (4, 1, 4, 4), (4, 3, 4, 4)])
def test_npz_float_images_in_unit_range_accepted_in_any_layout(tmp_path, shape):
    x = np.random.default_rng(0).random(shape).astype(np.float64)
    data = load_source(save_npz(tmp_path / "f.npz", x=x, y=np.arange(4)))
    channels = shape[1] if len(shape) == 4 else 1
    assert data.x.shape == (4, channels, 4, 4) and data.x.dtype == np.float32
    np.testing.assert_allclose(data.x.reshape(4, -1), x.reshape(4, -1), rtol=1e-6)


def test_npz_integral_float_labels_are_accepted(tmp_path):
    data = load_npz(save_npz(tmp_path / "l.npz", x=np.zeros((2, 4, 4), np.uint8),
                             y=np.array([1.0, 0.0])))
    assert data.y.dtype == np.int64 and data.y.tolist() == [1, 0]


X = np.zeros((3, 4, 4), np.uint8)
Y = np.array([0, 1, 1])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.full((3, 4, 4), 1.5), "y": Y}, r"\[0, 1\]"),
        ({"x": np.full((3, 4, 4), -0.1, np.float32), "y": Y}, r"\[0, 1\]"),
        ({"x": np.full((3, 4, 4), np.nan), "y": Y}, "NaN"),
        ({"x": np.full((3, 4, 4), np.inf), "y": Y}, "infinite"),
        ({"x": X, "y": np.array([0, 1])}, "3 images but 2 labels"),
        ({"x": X, "y": Y.reshape(3, 1)}, "one-dimensional"),
        ({"x": X, "y": np.array([0, -1, 1])}, "negative label"),
        ({"x": X, "y": np.array([0.0, 0.5, 1.0])}, "integers"),
        ({"x": X, "y": np.array(["a", "b", "c"])}, "integers"),
        ({"x": X.astype(np.int64), "y": Y}, "uint8 or float"),
        ({"x": X.astype(bool), "y": Y}, "uint8 or float"),
        ({"x": np.zeros((3, 15)), "y": Y}, "not square"),
        ({"x": np.zeros(3), "y": Y}, "2-4 dimensions"),
        ({"x": np.float32(0.5), "y": np.zeros(1, np.int64)}, "2-4 dimensions"),
        ({"x": X}, r"missing array\(s\) \['y'\]"),
        ({"images": X, "labels": Y}, r"\['x', 'y'\]"),
        ({"x": np.array([object()] * 3), "y": Y}, r"pickles\) are refused"),
    ],
    ids=["float>1", "float<0", "nan", "inf", "len", "2d-labels", "neg-label", "frac-label",
         "str-label", "int64-images", "bool-images", "flat-not-square", "1d-images",
         "scalar-images", "missing-y", "wrong-keys", "object-array"],
)
def test_npz_bad_content_is_a_data_error_naming_the_file(tmp_path, arrays, message):
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as err:
        load_source(path)
    assert "bad.npz" in str(err.value)


class _Touch:
    """Unpickling this would create a file: proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_npz_pickles_are_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    inner = tmp_path / "obj.npz"
    np.savez(inner, x=np.array([_Touch(marker)], dtype=object), y=np.array([0]))
    raw_pickle = tmp_path / "raw.npz"
    raw_pickle.write_bytes(pickle.dumps({"x": _Touch(marker), "y": [0]}))

    for path in (inner, raw_pickle):
        with pytest.raises(DataError, match=r"not a readable \.npz|pickles\) are refused"):
            load_npz(path)
    assert not marker.exists()


def corrupt_member(path: Path) -> None:
    """Flip bytes in the middle of a compressed member (the zip directory stays intact)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x.npy")
    start = info.header_offset + 30 + len(info.filename) + 10
    for i in range(start, start + 20):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"this is not a zip file at all"),
        lambda p: p.write_bytes(b"PK\x03\x04" + bytes(40)),
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        lambda p: p.write_bytes(b""),
        corrupt_member,
        lambda p: np.save(p.with_suffix(".npy"), np.zeros((3, 4, 4), np.uint8))
        or p.write_bytes(p.with_suffix(".npy").read_bytes()),
    ],
    ids=["text", "zip-magic-only", "truncated", "empty", "corrupt-member", "npy-not-npz"],
)
def test_npz_corrupt_file_is_a_data_error(tmp_path, damage):
    path = tmp_path / "c.npz"
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x=rng.integers(0, 256, (50, 8, 8), dtype=np.uint8),
                        y=rng.integers(0, 2, 50))
    damage(path)
    with pytest.raises(DataError, match=r"c\.npz"):
        load_source(str(path))


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_source(str(tmp_path / "absent.npz"))


# ---------------------------------------------------------------------------------- IDX pairs


def test_idx_pair_spec_images_comma_labels(tmp_path, write_idx):
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    images = write_idx(tmp_path / "imgs-idx3-ubyte.gz", x, compress=True)
    labels = write_idx(tmp_path / "labels-idx1-ubyte", np.array([7, 3], np.uint8))

    data = load_source(f"{images},{labels}")

    assert data.x.shape == (2, 1, 28, 28)
    np.testing.assert_allclose(data.x[:, 0] * 255, x, atol=1e-4)
    assert data.y.tolist() == [7, 3] and data.num_classes == 8
    assert data.name == "imgs-idx3-ubyte.gz"


def test_idx_pair_of_different_lengths_is_a_data_error(tmp_path, write_idx):
    images = write_idx(tmp_path / "i.idx", np.zeros((3, 4, 4), np.uint8))
    labels = write_idx(tmp_path / "l.idx", np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load_source(f"{images},{labels}")


def test_idx_pair_with_truncated_file_is_a_data_error(tmp_path, write_idx):
    images = write_idx(tmp_path / "i.idx", np.zeros((3, 4, 4), np.uint8))
    images.write_bytes(images.read_bytes()[:-5])
    labels = write_idx(tmp_path / "l.idx", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="truncated"):
        load_source(f"{images},{labels}")


# ------------------------------------------------------------------------ download and cache


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty cache in tmp_path and a network that refuses every request (counted)."""
    monkeypatch.setenv("HYBNN_CACHE", str(tmp_path / "cache"))
    calls: list[str] = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


def serve(monkeypatch, content: bytes) -> list[str]:
    """Make every URL answer with ``content``; returns the list of requested URLs."""
    calls: list[str] = []

    def answer(url, *args, **kwargs):
        calls.append(url)
        return io.BytesIO(content)

    monkeypatch.setattr(urllib.request, "urlopen", answer)
    return calls


PAYLOAD = b"hybnn test payload\n" * 10
REMOTE = RemoteFile("payload.bin", hashlib.sha256(PAYLOAD).hexdigest())
MIRRORS = ("https://mirror-a.invalid/files/", "https://mirror-b.invalid/")


def test_cache_dir_follows_hybnn_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBNN_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path


def test_mnist_offline_is_one_clear_error_naming_offline_alternatives(offline):
    with pytest.raises(DataError) as err:
        load_source("mnist")
    msg = str(err.value)
    assert "\n" not in msg
    assert "cannot download mnist" in msg and "offline" in msg
    assert "mnist-5k" in msg and "digits" in msg
    assert "network is unreachable" in msg
    assert len(offline) == 3  # every mirror tried once for the first file, then give up


def test_good_file_in_cache_is_used_without_network(offline):
    path = cache_dir() / "toy" / REMOTE.name
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD)
    assert fetch("toy", [REMOTE], MIRRORS, "nothing") == {REMOTE.name: path}
    assert offline == []


def test_cached_file_with_wrong_checksum_is_not_accepted(offline):
    path = cache_dir() / "toy" / REMOTE.name
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD[:-1])  # a partial download
    with pytest.raises(DataError, match="cannot download toy"):
        fetch("toy", [REMOTE], MIRRORS, "something offline")
    assert len(offline) == len(MIRRORS)


def test_download_is_verified_then_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBNN_CACHE", str(tmp_path))
    calls = serve(monkeypatch, PAYLOAD)
    paths = fetch("toy", [REMOTE], MIRRORS, "nothing")
    assert calls == ["https://mirror-a.invalid/files/payload.bin"]
    assert paths[REMOTE.name].read_bytes() == PAYLOAD
    assert paths[REMOTE.name] == tmp_path / "toy" / "payload.bin"
    assert [p.name for p in (tmp_path / "toy").iterdir()] == ["payload.bin"]  # no temp files


def test_download_with_wrong_checksum_never_enters_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBNN_CACHE", str(tmp_path))
    bad = tmp_path / "toy" / REMOTE.name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"old partial")
    serve(monkeypatch, b"tampered payload")
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch("toy", [REMOTE], MIRRORS, "nothing")
    assert bad.read_bytes() == b"old partial"


def test_checksum_of_content_accepts_a_recompressed_copy(offline):
    import gzip

    remote = RemoteFile("p.gz", hashlib.sha256(PAYLOAD).hexdigest(), checksum_of_content=True)
    path = cache_dir() / "toy" / "p.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(PAYLOAD, compresslevel=1, mtime=12345))
    assert fetch("toy", [remote], MIRRORS, "nothing") == {"p.gz": path}
    assert remote.verify(gzip.compress(PAYLOAD, compresslevel=9))
    assert not remote.verify(PAYLOAD)  # not gzip at all
    assert not remote.verify(gzip.compress(PAYLOAD)[:-8])  # truncated
