"""Input size limits: small files that claim (or inflate to) gigabytes are refused before
anything is decoded, with one `hybnn: error:` line and little memory."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from hybnn.data.idx import read_idx
from hybnn.data.inputs import read_inputs
from hybnn.data.limits import MAX_ARRAY_ELEMENTS, MAX_INPUT_IMAGES
from hybnn.data.npfiles import read_npy, read_npz
from hybnn.errors import DataError
from hybnn.models import BinaryCNN
from hybnn.models.io import save_model

MIB = 1 << 20


def zeros_deflated(nbytes: int, wbits: int = zlib.MAX_WBITS) -> bytes:
    """``nbytes`` zero bytes, deflated (zlib, raw or gzip framing by ``wbits``)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(MIB)
    parts = [comp.compress(block) for _ in range(nbytes // MIB)]
    parts.append(comp.compress(bytes(nbytes % MIB)))
    return b"".join([*parts, comp.flush()])


def png_bytes(width: int, height: int) -> bytes:
    """A real, complete grayscale PNG of black pixels (a few hundred KB for 144 M pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zeros_deflated(height * (width + 1))  # each row: filter byte 0, then pixels
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gzip_idx(dims: tuple[int, ...], payload_bytes: int) -> bytes:
    """A gzip IDX file with header ``dims`` (uint8) and ``payload_bytes`` zero data bytes."""
    header = bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [comp.compress(header)]
    parts += [comp.compress(bytes(MIB)) for _ in range(payload_bytes // MIB)]
    parts.append(comp.compress(bytes(payload_bytes % MIB)))
    return b"".join([*parts, comp.flush()])


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """A .npy file's header alone (version 1.0) claiming ``shape``; no data follows."""
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def npz_with_inflating_member(path: Path, items: int) -> Path:
    """An .npz whose ``x.npy`` (uint8, ``items`` zeros) is deflated to a few hundred KB."""
    header = npy_header((items,), "|u1")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            fh.write(header)
            for _ in range(items // MIB):
                fh.write(bytes(MIB))
        zf.writestr("y.npy", b"")
    return path


# In process: the readers refuse what the limits exclude, before reading the data.


def test_npy_header_with_a_huge_shape_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(npy_header((10**12,)))
    with pytest.raises(DataError, match=r"huge\.npy.*1,000,000,000,000 items.*limit"):
        read_npy(path)


def test_npy_up_to_the_limit_reads_and_matches_numpy(tmp_path):
    arr = np.arange(24, dtype=">i2").reshape(2, 3, 4)
    for order in ("C", "F"):
        np.save(tmp_path / "a.npy", np.asarray(arr, order=order))
        out = read_npy(tmp_path / "a.npy")
        assert out.dtype == arr.dtype and out.flags.writeable
        np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("cut", [0, 5, 40, 128, 140])
def test_truncated_npy_is_a_data_error(tmp_path, cut):
    np.save(tmp_path / "a.npy", np.zeros((4, 8), np.float32))
    raw = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:cut])
    with pytest.raises(DataError, match=r"t\.npy"):
        read_npy(tmp_path / "t.npy")


def test_npz_member_over_the_limit_is_refused_before_inflating(tmp_path):
    path = npz_with_inflating_member(tmp_path / "bomb.npz", MAX_ARRAY_ELEMENTS + MIB)
    assert path.stat().st_size < 2 * MIB
    with pytest.raises(DataError, match=r"bomb\.npz\[x\].*items.*limit"):
        read_npz(path, ["x", "y"])


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04", b"PK\x03\x04" + bytes(60),
                                     b"not a zip at all"], ids=["empty", "magic", "zeros", "text"])
def test_empty_or_truncated_npz_is_a_data_error(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"bad\.npz: not a readable \.npz"):
        read_npz(path, ["x"])


def test_gzip_idx_claiming_gigabytes_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.idx.gz"
    path.write_bytes(gzip_idx((4_000_000, 28, 28), 1000))
    with pytest.raises(DataError, match=r"huge\.idx\.gz.*3,136,000,000 items.*limit"):
        read_idx(path)


def test_gzip_idx_with_inflating_trailing_data_stops_after_the_promised_bytes(tmp_path):
    path = tmp_path / "trail.idx.gz"
    path.write_bytes(gzip_idx((2, 3), 64 * MIB))
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path)


def test_too_many_input_images_are_refused(tmp_path):
    np.save(tmp_path / "many.npy", np.zeros((MAX_INPUT_IMAGES + 1, 1, 1), np.uint8))
    with pytest.raises(DataError, match="more than 100,000 images"):
        read_inputs([str(tmp_path / "many.npy")])


def test_png_above_the_pixel_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(5000, 5000))  # above the limit, below Pillow's bomb error
    with pytest.raises(DataError, match=r"big\.png.*limit"):
        read_inputs([str(path)])


# Through the CLI in a subprocess: one error line, and the child's peak memory stays small.

# The child's own peak: VmHWM of its address space. (ru_maxrss would carry the parent's peak
# across fork and exec: a large pytest process made every child look 1.5 GB.)
CHILD = ("import re, sys\nfrom hybnn.cli import main\nrc = main(sys.argv[1:])\n"
         "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())\n"
         "print('maxrss_kib', hwm.group(1))\n"
         "sys.exit(rc)\n")
HOSTILE = {
    "png-12000": lambda d: _write(d / "a.png", png_bytes(12000, 12000)),
    "png-20000": lambda d: _write(d / "a.png", png_bytes(20000, 20000)),
    "npy-1e12": lambda d: _write(d / "a.npy", npy_header((10**12,))),
    "npz-bomb": lambda d: npz_with_inflating_member(d / "a.npz", 200 * MIB),
    "idx-gz-claims-gb": lambda d: _write(d / "a.idx.gz", gzip_idx((4_000_000, 28, 28),
                                                                   256 * MIB)),
    "idx-gz-trailing": lambda d: _write(d / "a.idx.gz", gzip_idx((10, 8, 8), 256 * MIB)),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _argv(path: Path) -> list[str]:
    if ".idx" in path.name:
        labels = path.with_name("labels.idx")
        labels.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 10]) + bytes(10))
        return ["train", "--model", "fpcnn", "--data", f"{path},{labels}", "--out",
                str(path.parent / "out"), "--epochs", "1", "--no-progress"]
    return ["predict", "--model", str(path.parent.parent / "model"), str(path)]


@pytest.fixture(scope="module")
def memory_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    torch.manual_seed(0)
    save_model(root / "model", BinaryCNN((8, 8), 1, 2), prep="centered")
    cases = {"baseline": None, **HOSTILE}
    procs = {}
    for name, make in cases.items():
        d = root / name
        d.mkdir()
        # the baseline: a valid 8x8 image through the same command, torch and model loaded
        path = make(d) if make else _write(d / "ok.png", png_bytes(8, 8))
        argv = [sys.executable, "-c", CHILD, *_argv(path)]
        env = {**os.environ, "HYBNN_NO_PROGRESS": "1"}
        procs[name] = subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        rss = [int(line.split()[1]) for line in out.splitlines() if line.startswith("maxrss")]
        results[name] = (proc.returncode, err, rss[0] * 1024 if rss else None)
    return results


@pytest.mark.slow  # a child process per hostile file
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_gives_one_error_line_and_little_memory(memory_runs, name):
    rc, err, peak = memory_runs[name]
    base = memory_runs["baseline"][2]
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybnn: error: "), err
    assert "Traceback" not in err
    assert peak is not None and base is not None
    assert peak < 1024 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
    assert peak - base < 128 * MIB, f"peak RSS {peak / MIB:.0f} MiB, baseline {base / MIB:.0f}"
