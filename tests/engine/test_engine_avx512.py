"""The AVX-512 kernels' logic, run anywhere: kernels_avx512.c compiled against portable C
stand-ins for its intrinsics (avx512_shim.h) must match the scalar kernels bit for bit. On a
CPU with AVX-512 VPOPCNTDQ, test_engine_isa.py also runs the real instructions."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import hybnn.engine

CSRC = Path(hybnn.engine.__file__).parent / "csrc"
SHIM = Path(__file__).parent / "avx512_shim.h"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")

P = ctypes.c_void_p
MK = ctypes.CFUNCTYPE(None, P, ctypes.c_int, P, P, ctypes.c_int)
PACK = ctypes.CFUNCTYPE(ctypes.c_int, P, ctypes.c_size_t, ctypes.c_size_t, P)
PACK4 = ctypes.CFUNCTYPE(ctypes.c_int, P, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t, P)
THR = ctypes.CFUNCTYPE(ctypes.c_uint32, P, P)


class Kernels(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("split", ctypes.c_int),
        ("mk_contig", MK),
        ("mk_ind", MK),
        ("pack_rows", PACK),
        ("pack_nchw", PACK4),
        ("split_words", P),
        ("thr_bits", THR),
    ]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    if CC is None or not (CSRC / "kernels_avx512.c").exists():
        pytest.skip("needs a C compiler and the engine's C sources")
    lib = tmp_path_factory.mktemp("shim") / "avx512_shim.so"
    cmd = [
        CC,
        "-O1",
        "-shared",
        "-fPIC",
        "-std=gnu11",
        f'-DHYB_AVX512_SHIM="{SHIM}"',
        f"-I{CSRC}",
        str(CSRC / "kernels_avx512.c"),
        str(CSRC / "kernels_scalar.c"),
        "-o",
        str(lib),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    so = ctypes.CDLL(str(lib))
    return (Kernels.in_dll(so, "hyb_kernels_avx512"), Kernels.in_dll(so, "hyb_kernels_scalar"))


def ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element (np.bitwise_count needs NumPy 2)."""
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


@pytest.mark.parametrize("nk", [1, 7, 31])
def test_microkernels_match_scalar(kernels, nk):
    avx512, scalar = kernels
    rng = np.random.default_rng(nk)
    a = rng.integers(0, 2**64, nk, dtype=np.uint64)
    w = rng.integers(0, 2**64, (nk, 32), dtype=np.uint64)
    expected = popcount64(a[:, None] ^ w).sum(0).astype(np.uint32) + 5
    ptrs = np.array([ptr(a) + 8 * i for i in range(nk)], dtype=np.uintp)
    for k in (avx512, scalar):
        for add in (0, 1):  # add = 0 stores, 1 adds to what acc holds
            acc = np.full(32, 5, np.uint32)
            k.mk_contig(ptr(a), nk, ptr(w), ptr(acc), add)
            np.testing.assert_array_equal(acc, expected - 5 * (1 - add))
            acc = np.full(32, 5, np.uint32)
            k.mk_ind(ptr(ptrs), nk, ptr(w), ptr(acc), add)
            np.testing.assert_array_equal(acc, expected - 5 * (1 - add))


def test_pack_and_thresholds_match_scalar(kernels):
    avx512, scalar = kernels
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 200)).astype(np.float32)
    x[0, :10] = [0.0, -0.0, np.inf, -np.inf, 1, -1, 0, 0, 0, 0]
    outs = []
    for k in (avx512, scalar):
        out = np.zeros((3, 4), np.uint64)
        assert k.pack_rows(ptr(x), 3, 200, ptr(out)) == 0
        outs.append(out)
    np.testing.assert_array_equal(*outs)
    x[2, 150] = np.nan
    assert avx512.pack_rows(ptr(x), 3, 200, ptr(np.zeros((3, 4), np.uint64))) != 0
    x[2, 150] = 0
    x[1, 5] = np.nan  # inside a full 64-float block
    assert avx512.pack_rows(ptr(x), 3, 200, ptr(np.zeros((3, 4), np.uint64))) != 0
    pop = rng.integers(0, 1000, 32).astype(np.uint32)
    thr = rng.integers(-1, 1000, 32).astype(np.int32)
    assert avx512.thr_bits(ptr(pop), ptr(thr)) == scalar.thr_bits(ptr(pop), ptr(thr))
