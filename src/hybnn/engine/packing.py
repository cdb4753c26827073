"""Sign-packing of float activations into uint64 words (the engine's only activation format).

Bit order: bit ``j`` of word ``k`` holds value ``64*k + j`` of a row (for images: of a pixel's
channels, NHWC). Bit 1 means -1 and bit 0 means +1, so ``x < 0`` packs to 1 and ``x >= 0``
(including -0.0) packs to 0: exactly ``sign`` with sign(0) = +1. Bits past the row's width
are 0; they XOR to 0 against the zero padding of the weights and never count. An all-zero
word is a pixel of +1 values, which is the +1 padding of ``BinaryConv2d``.

Binary codes use the opposite convention: ``codes()`` and the encoders give True = +1, as do
``numpy.packbits`` bytes (big-endian bit order, bit 1 = +1). :func:`pack_codes` converts
either to the engine's words; the C export's ``NAME_pack_codes`` does the same on the device.
"""

from __future__ import annotations

import numpy as np

from hybnn.engine.dispatch import _kernels
from hybnn.errors import DataError


def words_for(bits: int) -> int:
    """uint64 words holding ``bits`` values."""
    return (int(bits) + 63) // 64


def _float_input(x: object, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != np.float32:
        raise DataError(f"{what} must be float32, got {arr.dtype} (use x.astype(np.float32))")
    return np.ascontiguousarray(arr)


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Pack the signs of float32 ``x`` along its last axis: (..., K) -> (..., ceil(K/64)) words."""
    arr = _float_input(x, "x")
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise DataError(f"x must have a non-empty last axis, got shape {arr.shape}")
    k = arr.shape[-1]
    rows = arr.size // k
    out = np.empty((*arr.shape[:-1], words_for(k)), dtype=np.uint64)
    if _kernels.pack_rows(arr, out, rows, k):
        raise DataError("x contains NaN; the sign of NaN is undefined")
    return out


def pack_images(x: np.ndarray) -> np.ndarray:
    """Pack float32 NCHW images into NHWC words: (N, C, H, W) -> (N, H, W, ceil(C/64))."""
    arr = _float_input(x, "images")
    if arr.ndim != 4 or 0 in arr.shape[1:]:
        raise DataError(f"images must have shape (N, C, H, W), got {arr.shape}")
    n, c, h, w = arr.shape
    out = np.empty((n, h, w, words_for(c)), dtype=np.uint64)
    if _kernels.pack_nchw(arr, out, n, c, h * w):
        raise DataError("images contain NaN; the sign of NaN is undefined")
    return out


def pack_codes(codes: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Binary codes (True = +1) -> the engine's words (bit 1 = -1), as the engine reads them.

    ``codes``: bool (..., K) as ``codes()`` and the encoders return them ->
    (..., ceil(K/64)) words; with ``bits``: ``numpy.packbits`` rows (uint8, big-endian,
    bit 1 = +1) of ``bits``-bit codes -> (N, ceil(bits/64)) words.
    """
    arr = np.asarray(codes)
    if bits is None:
        if arr.dtype != np.bool_ or arr.ndim == 0 or arr.shape[-1] == 0:
            raise DataError(
                f"codes must be bool (..., bits) with True = +1 (or numpy.packbits bytes "
                f"with bits=), got {arr.dtype} {arr.shape}"
            )
        return pack_sign_words(~arr)
    nbytes = (int(bits) + 7) // 8
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != nbytes:
        raise DataError(
            f"packed codes must be uint8 of shape (N, {nbytes}) (numpy.packbits of {bits}-bit "
            f"codes), got {arr.dtype} {arr.shape}"
        )
    arr = np.ascontiguousarray(arr)
    out = np.empty((arr.shape[0], words_for(bits)), dtype=np.uint64)
    _kernels.pack_bytes(arr, out, arr.shape[0], int(bits))
    return out


def unpack_signs(words: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_signs`: (..., W) words -> (..., bits) float32 of ±1."""
    arr = np.ascontiguousarray(np.asarray(words, dtype=np.uint64))
    if arr.ndim == 0 or arr.shape[-1] != words_for(bits):
        raise DataError(
            f"expected {words_for(bits)} words per row for {bits} bits, got {arr.shape}"
        )
    raw = arr.astype("<u8").view(np.uint8).reshape(*arr.shape[:-1], arr.shape[-1] * 8)
    neg = np.unpackbits(raw, axis=-1, bitorder="little")[..., :bits]
    return (1.0 - 2.0 * neg).astype(np.float32)


def pack_sign_words(negative: np.ndarray) -> np.ndarray:
    """Pack a boolean array (True = -1) along its last axis: (..., K) -> (..., ceil(K/64)) words."""
    neg = np.asarray(negative, dtype=bool)
    k = neg.shape[-1]
    padded = np.zeros((*neg.shape[:-1], words_for(k) * 64), dtype=bool)
    padded[..., :k] = neg
    raw = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(raw).view("<u8").astype(np.uint64)
