"""Single packed layers outside a model: for tests, benchmarks and chained custom pipelines.

Weights are packed like activations (:mod:`hybnn.engine.packing`): a dense layer takes rows
``(out, ceil(K/64))``, a convolution ``(out, k, k, ceil(C/64))`` (OHWI). Inputs are either
float32 (sign-packed on the way in: rows ``(N, K)`` / images ``(N, C, H, W)``) or already
packed uint64 words (rows ``(N, ceil(K/64))`` / NHWC ``(N, H, W, ceil(C/64))``). Geometry
beyond the limits of :mod:`hybnn.engine.geometry` raises ``ValueError``.
"""

from __future__ import annotations

import numpy as np

from hybnn.engine import geometry
from hybnn.engine.dispatch import _kernels
from hybnn.engine.packed import IN_FLOAT, IN_WORDS, OUT_ACC, OUT_WORDS
from hybnn.engine.packing import words_for
from hybnn.errors import DataError


class PackedLayer:
    """One binary dense or conv layer; ``thresholds`` (int32 per channel) enable :meth:`signs`."""

    def __init__(
        self, spec: tuple, in_shape: tuple[int, ...], out_shape: tuple[int, ...], input_spec: tuple
    ) -> None:
        self._net = _kernels.Network(input_spec, [spec])
        self.in_shape = in_shape  # float input per sample
        self.out_shape = out_shape  # accumulators per sample (NHWC for convolutions)
        self.has_thresholds = spec[-2] is not None

    @classmethod
    def dense(
        cls,
        weights: np.ndarray,
        in_bits: int,
        thresholds: np.ndarray | None = None,
        flips: np.ndarray | None = None,
    ) -> PackedLayer:
        w = np.ascontiguousarray(weights, dtype=np.uint64)
        g = geometry.dense(int(in_bits), words_for(in_bits), int(w.shape[0]))
        n = g.out_channels
        spec = ("dense", g.in_channels, g.in_words, n, w, _thr(thresholds), _flips(flips, n))
        return cls(spec, (g.in_channels,), (n,), ("rows", g.in_channels))

    @classmethod
    def conv2d(
        cls,
        weights: np.ndarray,
        in_channels: int,
        height: int,
        width: int,
        stride: int = 1,
        padding: int = 0,
        thresholds: np.ndarray | None = None,
        flips: np.ndarray | None = None,
    ) -> PackedLayer:
        w = np.ascontiguousarray(weights, dtype=np.uint64)
        if w.ndim != 4:
            raise ValueError(f"conv weights must be (out, k, k, ceil(C/64)) words, got {w.shape}")
        out, k = int(w.shape[0]), int(w.shape[1])
        g = geometry.conv2d(int(in_channels), int(height), int(width), out, k, stride, padding)
        t, f = _thr(thresholds), _flips(flips, out)
        spec = ("conv", *g.in_shape, out, k, g.stride, g.padding, w, t, f)
        return cls(spec, g.in_shape, (g.out_height, g.out_width, out), ("image", *g.in_shape))

    def _input(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        arr = np.ascontiguousarray(x)
        if arr.dtype == np.uint64:
            return arr, IN_WORDS
        if arr.dtype != np.float32 or arr.shape[1:] != self.in_shape:
            raise DataError(f"input must be float32 (N, {self.in_shape}) or packed uint64 words")
        return arr, IN_FLOAT

    def accumulators(self, x: np.ndarray, threads: int = 1) -> np.ndarray:
        """int32 d = K - 2*popcount per output (N, out) or (N, Ho, Wo, out)."""
        arr, kind = self._input(x)
        out = np.empty((arr.shape[0], *self.out_shape), dtype=np.int32)
        _check(self._net.run(arr, kind, arr.shape[0], out, OUT_ACC, threads))
        return out

    def signs(self, x: np.ndarray, threads: int = 1) -> np.ndarray:
        """Packed output words (bit 1 = -1 where popcount > threshold): the next layer's input."""
        arr, kind = self._input(x)
        *spatial, n = self.out_shape
        out = np.empty((arr.shape[0], *spatial, words_for(n)), dtype=np.uint64)
        _check(self._net.run(arr, kind, arr.shape[0], out, OUT_WORDS, threads))
        return out


def maxpool2d(words: np.ndarray, kernel: int, stride: int | None = None) -> np.ndarray:
    """Max-pool packed NHWC words (N, H, W, CW): the max of ±1 values is an AND of bits."""
    x = np.ascontiguousarray(words, dtype=np.uint64)
    if x.ndim != 4:
        raise DataError(f"expected packed NHWC words (N, H, W, CW), got shape {x.shape}")
    stride = kernel if stride is None else stride
    n, h, w, cw = x.shape
    if not 0 < kernel <= min(h, w) or stride <= 0:
        raise DataError(f"pooling window {kernel} (stride {stride}) does not fit {h}x{w}")
    out = np.empty((n, (h - kernel) // stride + 1, (w - kernel) // stride + 1, cw), np.uint64)
    _kernels.maxpool(x, out, n, h, w, cw, kernel, stride)
    return out


def _thr(t: np.ndarray | None) -> np.ndarray | None:
    return None if t is None else np.ascontiguousarray(t, dtype=np.int32)


def _flips(f: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n, np.int8) if f is None else np.ascontiguousarray(f, dtype=np.int8)


def _check(status: int) -> None:
    if status == 1:
        raise DataError("input contains NaN; the sign of NaN is undefined")
    if status == 2:
        raise DataError("packed input has bits set past the input width")
