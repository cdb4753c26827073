"""What an engine file means, in plain numpy: accumulators and logits straight from its arrays.

Independent of the C code and of torch, so any file the loader accepts, even a forged one, can
be checked against the numbers it describes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _signs_of_words(words: np.ndarray, channels: int) -> np.ndarray:
    """(..., cw) uint64 words -> (..., channels) int64 of ±1 (bit 1 = -1)."""
    raw = np.ascontiguousarray(words, dtype="<u8").view(np.uint8)
    bits = np.unpackbits(raw.reshape(*words.shape[:-1], -1), axis=-1, bitorder="little")
    return 1 - 2 * bits[..., :channels].astype(np.int64)


def _conv(a: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """a (N, C, H, W) ±1, w (O, k, k, C) ±1 -> (N, O, Ho, Wo); padding is +1."""
    k = w.shape[1]
    a = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=1)
    ho, wo = (a.shape[2] - k) // stride + 1, (a.shape[3] - k) // stride + 1
    out = np.zeros((a.shape[0], w.shape[0], ho, wo), np.int64)
    for ky in range(k):
        for kx in range(k):
            rows, cols = slice(ky, ky + stride * (ho - 1) + 1, stride), slice(kx, None, stride)
            win = a[:, :, rows, cols][:, :, :, :wo]
            out += np.einsum("nchw,oc->nohw", win, w[:, ky, kx, :])
    return out


def run(header: dict[str, Any], arrays: dict[str, np.ndarray], x: np.ndarray):
    """(accumulators per layer as the engine reports them, float32 logits) for float32 ``x``."""
    a = np.where(x < 0, -1, 1).astype(np.int64)  # sign(0) = +1
    if a.ndim == 2:
        a = a[:, :, None, None]
    accs = []
    logits = None
    for spec in header["layers"]:
        w_words = arrays[spec["weights"]]
        c, h, wd = a.shape[1:]
        if spec["op"] == "conv2d":
            d = _conv(a, _signs_of_words(w_words, c), spec["stride"], spec["padding"])
            kbits = spec["kernel_size"] ** 2 * c
        else:  # NHWC pixels of ceil(C/64) words, each holding its C channels
            w = _signs_of_words(w_words.reshape(len(w_words), h, wd, -1), c)
            d = np.einsum("nchw,ohwc->no", a, w)
            kbits = c * h * wd
        if spec["op"] == "output":
            z = arrays[spec["alpha"]] * d.astype(np.float32)
            logits = (z.astype(np.float64) * arrays[spec["bn_scale"]] + arrays[spec["bn_shift"]])
            accs.append(d)
            break
        flips = arrays[spec["flips"]].astype(np.int64)
        shape = (1, -1) + (1,) * (d.ndim - 2)
        accs.append(d * flips.reshape(shape))
        pop = (kbits - d) // 2
        neg = pop > arrays[spec["thresholds"]].astype(np.int64).reshape(shape)
        a = np.where(neg, -1, 1)
        if a.ndim == 2:
            a = a[:, :, None, None]
    return accs, logits.astype(np.float32)
