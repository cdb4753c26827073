"""Reading ``.npy`` and ``.npz`` files safely: headers first, never a pickle.

Each array's header (shape, dtype) is read with ``numpy.lib.format`` and checked against
:mod:`hybnn.data.limits` before its data is read; a zip member's declared size is checked
before it is decompressed, and at most the bytes its header promises are ever read.
Object arrays (pickles) are refused; only regular files are opened (a FIFO is refused at
once). Every failure, whatever the bytes, is a :class:`DataError` naming the file.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
from numpy.lib import format as npformat

from hybnn.artifacts import open_regular
from hybnn.data.limits import check_bytes, check_elements
from hybnn.errors import DataError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


class Stream(Protocol):
    """A binary file, or a member of a zip archive."""

    def read(self, size: int = ..., /) -> bytes: ...


# What reading hostile bytes raises: zipfile adds NotImplementedError (a compression method,
# a zip version), RuntimeError (encryption) and OverflowError to the usual types.
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
                TypeError, SyntaxError, RuntimeError, OverflowError)


def read_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """One array from a ``.npy`` file, its header checked before its data is read."""
    path = Path(path)
    try:
        with open_regular(path, ".npy file", DataError) as fh:
            if fh.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise DataError(f"{path}: not a .npy file")
            fh.seek(0)
            return _read_array(fh, str(path))
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None


def read_npz(path: str | os.PathLike[str], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays ``names`` from a ``.npz`` archive (all required), each checked before reading."""
    path = Path(path)
    try:
        with open_regular(path, ".npz file", DataError) as fh:
            if fh.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
                raise DataError(f"{path}: not a readable .npz file (not a zip archive)")
            fh.seek(0)
            return _read_members(fh, path, names)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _read_members(fh: BinaryIO, path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(fh) as zf:
        members = {n.removesuffix(".npy"): n for n in zf.namelist()}
        missing = sorted(set(names) - set(members))
        if missing:
            raise DataError(f"{path}: missing array(s) {missing}; need "
                            f"{' and '.join(names)}")
        out = {}
        for name in names:
            info = zf.getinfo(members[name])
            check_bytes(info.file_size, f"{path}[{name}]")
            with zf.open(info) as member:
                out[name] = _read_array(member, f"{path}[{name}]")
        return out


def _read_array(fh: Stream, name: str) -> np.ndarray:
    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        else:
            raise DataError(f"{name}: unsupported .npy format version {version}")
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # numpy's header parser raises many types (tokenize.TokenError,
        # SyntaxError, ...) for hostile bytes: every one is a bad file here
        raise DataError(f"{name}: not a readable .npy header ({type(exc).__name__}: "
                        f"{exc})") from None
    if dtype.hasobject:
        raise DataError(f"{name}: object arrays (pickles) are refused")
    check_elements(shape, dtype.itemsize, name)
    count = math.prod(shape)
    data = _read_exactly(fh, count * dtype.itemsize, name)
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


def _read_exactly(fh: Stream, nbytes: int, name: str) -> bytearray:
    """Exactly ``nbytes`` from ``fh``, in blocks, into one writable buffer."""
    data = bytearray()
    while len(data) < nbytes:
        block = fh.read(min(nbytes - len(data), 1 << 24))
        if not block:
            raise DataError(f"{name}: truncated array data ({len(data)} of {nbytes} bytes)")
        data += block
    return data


def npz_members(path: str | os.PathLike[str]) -> set[str]:
    """The array names in an ``.npz`` archive (read from its directory, nothing decoded)."""
    try:
        with open_regular(path, ".npz file", DataError) as fh, zipfile.ZipFile(fh) as zf:
            return {n.removesuffix(".npy") for n in zf.namelist()}
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
