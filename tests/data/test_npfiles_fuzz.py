"""Any bytes given as a .npy or .npz are read or refused with a DataError naming the file.

Headers cut short at every byte (the file truncated, or its header length shortened so the
header text ends early) and every byte of a small archive changed: numpy's header parser and
zipfile raise many exception types; none may escape as a traceback.
"""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from hybnn.data.inputs import read_inputs
from hybnn.data.npfiles import read_npy, read_npz
from hybnn.errors import DataError


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def cut_headers(raw):
    """Each shortening of a .npy header, and whether it cuts the header's dict: the file
    truncated inside the header, and the header's declared length reduced with and without
    the data following."""
    hlen = struct.unpack("<H", raw[8:10])[0]
    end = 10 + hlen
    closing = raw.index(b"}")
    for k in range(end):
        yield raw[:k], True
    for k in range(hlen):
        yield raw[:8] + struct.pack("<H", k) + raw[10:10 + k] + raw[end:], 10 + k <= closing
        yield raw[:8] + struct.pack("<H", k) + raw[10:10 + k], 10 + k <= closing


RAW = npy_bytes(np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8))


def refused(read, path):
    """True: a DataError naming ``path``; False: read. Any other exception fails the test."""
    try:
        read(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return True
    return False


def test_a_npy_header_cut_short_anywhere_is_a_data_error(tmp_path):
    path = tmp_path / "x.npy"
    cases = list(cut_headers(RAW))
    for data, cut_dict in cases:
        path.write_bytes(data)
        assert refused(read_npy, path) or not cut_dict, data[:80]
    assert len(cases) > 300


def test_a_npz_member_with_a_header_cut_short_is_a_data_error(tmp_path):
    path = tmp_path / "x.npz"
    for data, cut_dict in cut_headers(RAW):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x.npy", data)
        assert refused(lambda p: read_npz(p, ["x"]), path) or not cut_dict


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_a_npz_truncated_or_changed_at_any_byte_is_read_or_refused(tmp_path, compressed):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, x=np.zeros((2, 8, 8), np.uint8))
    raw = buf.getvalue()
    path = tmp_path / "x.npz"
    rng = np.random.default_rng(0)
    for k in range(len(raw)):
        changed = bytearray(raw)
        changed[k] = (raw[k] + int(rng.integers(1, 256))) % 256
        for data in (raw[:k], bytes(changed)):
            path.write_bytes(data)
            refused(lambda p: read_npz(p, ["x"]), path)


def test_predict_inputs_with_a_cut_header_are_a_data_error(tmp_path):
    hlen = struct.unpack("<H", RAW[8:10])[0]
    cut = RAW[:8] + struct.pack("<H", hlen // 2) + RAW[10:10 + hlen // 2] + RAW[10 + hlen:]
    (tmp_path / "x.npy").write_bytes(cut)
    with pytest.raises(DataError, match=r"x\.npy: not a readable \.npy header"):
        read_inputs([str(tmp_path / "x.npy")])
