"""Run an engine file: :func:`load` returns a :class:`PackedModel` held in C memory."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from hybnn.data.labels import LabelSpace
from hybnn.engine import format as fmt
from hybnn.engine import geometry
from hybnn.engine.dispatch import _kernels
from hybnn.engine.graph import GraphModel
from hybnn.engine.packing import words_for
from hybnn.errors import ArtifactError, DataError

IN_FLOAT, IN_PACKBITS, IN_WORDS = 0, 1, 2
OUT_LOGITS, OUT_ARGMAX, OUT_WORDS, OUT_ACC = 0, 1, 2, 3
_STATUS = {
    1: "input contains NaN; the sign of NaN is undefined",
    2: "packed input has bits set past the input width",
}
_CONV_FIELDS = (
    "in_channels",
    "in_height",
    "in_width",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
)
# Input preparation recorded in the header, applied before the sign: None (the caller's
# input is signed as given) or "centered" (x - 0.5 first: a fully binary HyBNN takes [0, 1]).
INPUT_PREPS = (None, "centered")
_ARRAY_FIELDS = ("weights", "thresholds", "flips", "alpha", "bn_scale", "bn_shift")
# The largest |logit| an output layer may reach (float32 ends at 3.4e38): a finite scale of
# 3e38 would otherwise overflow every logit to +-inf. A model the torch loader accepts
# (hybnn.models.weights: |alpha|, batch-norm weight and bias <= 1e6) stays orders below.
LOGIT_LIMIT = 1e30


def _array(
    arrays: dict[str, np.ndarray], spec: dict[str, Any], key: str, dtype: str, shape: tuple
) -> np.ndarray:
    name = spec.get(key)
    if not isinstance(name, str) or name not in arrays:
        raise ValueError(f"array {key!r} is missing")
    arr = arrays[name]
    if arr.dtype != np.dtype(dtype) or arr.shape != shape:
        raise ValueError(
            f"array {name!r} is {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} {shape}"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"array {name!r} has non-finite values")
    return arr


def _check_logit_bound(
    in_bits: int, alpha: np.ndarray, scale: np.ndarray, shift: np.ndarray
) -> None:
    """logit = fma(alpha * d, scale, shift) with |d| <= in_bits: refuse values that can
    take it (or alpha * d) past :data:`LOGIT_LIMIT`."""
    z = np.abs(alpha.astype(np.float64)) * in_bits
    bound = z * np.abs(scale.astype(np.float64)) + np.abs(shift.astype(np.float64))
    worst = max(float(z.max(initial=0.0)), float(bound.max(initial=0.0)))
    if worst > LOGIT_LIMIT:
        raise ValueError(
            f"alpha, bn_scale and bn_shift give outputs up to {worst:.3g}, above the limit "
            f"of {LOGIT_LIMIT:g} (they would overflow float32)"
        )


def _layer(spec: Any) -> geometry.Layer:
    if not isinstance(spec, dict):
        raise ValueError("layer entries must be objects")
    op = spec.get("op")
    if op == "conv2d":
        layer = geometry.conv2d(*(spec.get(k) for k in _CONV_FIELDS))
        derived = {
            "out_height": layer.out_height,
            "out_width": layer.out_width,
            "kbits": layer.kbits,
        }
        for key, value in derived.items():
            if key in spec and spec[key] != value:
                raise ValueError(f"{key} is {spec[key]!r}, the geometry gives {value}")
        return layer
    if op in ("dense", "output"):
        return geometry.dense(
            spec.get("in_bits"), spec.get("in_words"), spec.get("out_features"), op
        )
    raise ValueError(f"unknown layer op {op!r}")


def _native(layer: geometry.Layer, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple:
    """The C extension's tuple for one validated layer (see csrc/module.c parse_layer)."""
    n = (layer.out_channels,)
    w = _array(arrays, spec, "weights", "<u8", layer.weight_shape)
    if layer.op == "output":
        floats = [_array(arrays, spec, k, "<f4", n) for k in ("alpha", "bn_scale", "bn_shift")]
        _check_logit_bound(layer.in_channels, *floats)
        return ("out", layer.in_channels, layer.in_words, layer.out_channels, w, *floats)
    thr, flips = (
        _array(arrays, spec, "thresholds", "<i4", n),
        _array(arrays, spec, "flips", "i1", n),
    )
    if layer.op == "dense":
        return ("dense", layer.in_channels, layer.in_words, layer.out_channels, w, thr, flips)
    return (
        "conv",
        *layer.in_shape,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        w,
        thr,
        flips,
    )


def _network(
    header: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[tuple, list[geometry.Layer], list[tuple]]:
    """(C input spec, layers, C layer specs) of a header, every size checked first."""
    inp, specs = header.get("input"), header.get("layers")
    if not isinstance(inp, dict) or not isinstance(specs, list):
        raise ValueError("header lacks input or layers")
    kind = inp.get("kind")
    dims = (
        [inp.get("bits")]
        if kind == "rows"
        else [inp.get(k) for k in ("channels", "height", "width")]
    )
    shape, words = geometry.input_layer(kind, dims)
    if inp.get("prep") not in INPUT_PREPS or (inp.get("prep") and kind != "image"):
        raise ValueError(f"unknown input preparation {inp.get('prep')!r}")
    layers = []
    for i, spec in enumerate(specs):
        try:
            layers.append(_layer(spec))
        except ValueError as exc:
            raise ValueError(f"layer {i}: {exc}") from None
    geometry.check_chain(shape, words, layers)
    native = []
    for i, (layer, spec) in enumerate(zip(layers, specs, strict=True)):
        try:
            native.append(_native(layer, spec, arrays))
        except ValueError as exc:
            raise ValueError(f"layer {i}: {exc}") from None
    used = {spec[k] for spec in specs for k in _ARRAY_FIELDS if isinstance(spec.get(k), str)}
    if set(arrays) - used:
        raise ValueError(f"arrays no layer uses: {sorted(set(arrays) - used)[:5]}")
    if header.get("num_classes", layers[-1].out_channels) != layers[-1].out_channels:
        raise ValueError("num_classes does not match the output layer")
    if not isinstance(header.get("metadata", {}), dict):
        raise ValueError("metadata must be a JSON object")
    # a centred input's signs are those of x - 0.5: the engine compares with 0.5 while packing
    shift = 0.5 if inp.get("prep") == "centered" else 0.0
    in_spec = ("rows", shape[0]) if kind == "rows" else ("image", *shape, shift)
    return in_spec, layers, native


class PackedModel:
    """A bit-packed BNNHead / BinaryCNN / fully binary HyBNN.

    ``predict``/``logits`` take what the torch model takes: codes, prepared images, or (fully
    binary HyBNN, ``input_prep == "centered"``) images in [0, 1], centred here.
    """

    def __init__(
        self,
        header: dict[str, Any],
        arrays: dict[str, np.ndarray],
        fingerprint: str,
        threads: int = 1,
        where: str = "engine file",
    ) -> None:
        try:
            in_spec, layers, native = _network(header, arrays)
            self._net = _kernels.Network(in_spec, native)  # checks every size again
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{where} is invalid: {exc}") from None
        self.header = header
        self.fingerprint = fingerprint
        self.threads = int(threads)
        self.arch: str = str(header.get("arch"))
        self.metadata: dict[str, Any] = header.get("metadata") or {}
        self.layers: list[dict[str, Any]] = header["layers"]
        self.geometry: list[geometry.Layer] = layers
        self.num_classes = layers[-1].out_channels
        source = self.metadata.get("source")
        recorded = source.get("label_space") if isinstance(source, dict) else None
        try:  # what each output means, recorded from the model's artifact at export
            self.label_space = LabelSpace.from_json(recorded, self.num_classes)
        except ArtifactError as exc:
            raise ArtifactError(f"{where} is invalid: {exc}") from None
        self.input_shape: tuple[int, ...] = (
            tuple(in_spec[1:4]) if in_spec[0] == "image" else (in_spec[1],)
        )
        self.in_bits = in_spec[1] if in_spec[0] == "rows" else None
        self.input_prep: str | None = header["input"].get("prep")
        self.weight_bytes = 8 * sum(math.prod(g.weight_shape) for g in layers)
        self.float32_weight_bytes = 4 * sum(g.out_channels * g.kbits for g in layers)

    def __repr__(self) -> str:
        return (
            f"PackedModel(arch={self.arch!r}, input={self.input_shape}, "
            f"classes={self.num_classes}, layers={len(self.layers)})"
        )

    # ---- inputs ---------------------------------------------------------------------
    def _floats(self, x: Any) -> np.ndarray:
        """x as a C-contiguous float32 array of the input shape (centring happens in C)."""
        if (
            type(x) is np.ndarray
            and x.dtype == np.float32
            and x.shape[1:] == self.input_shape
            and x.ndim == len(self.input_shape) + 1
            and x.flags.c_contiguous
        ):
            return x  # fast path: no copy, no further checks
        arr = np.asarray(x)
        if arr.dtype != np.float32:
            raise DataError(f"input must be float32, got {arr.dtype} (use x.astype(np.float32))")
        if arr.ndim != len(self.input_shape) + 1 or arr.shape[1:] != self.input_shape:
            layout = (
                "(N, C, H, W) images (NCHW, like the torch model)"
                if len(self.input_shape) == 3
                else "(N, bits) rows of ±1 codes"
            )
            raise DataError(
                f"input must have shape (N, {', '.join(map(str, self.input_shape))}): "
                f"{layout}; got {arr.shape}"
            )
        return np.ascontiguousarray(arr)

    def _codes(self, codes: Any) -> np.ndarray:
        if self.in_bits is None:
            raise DataError("packed codes are only accepted by models on codes (BNNHead)")
        arr = np.asarray(codes)
        nbytes = (self.in_bits + 7) // 8
        if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != nbytes:
            raise DataError(
                f"packed codes must be uint8 of shape (N, {nbytes}) "
                f"(numpy.packbits of {self.in_bits}-bit codes), got {arr.dtype} {arr.shape}"
            )
        return np.ascontiguousarray(arr)

    def _run(
        self, x: np.ndarray, kind: int, out: np.ndarray, out_kind: int, threads: int | None
    ) -> np.ndarray:
        status = self._net.run(x, kind, x.shape[0], out, out_kind, threads or self.threads)
        if status:
            raise DataError(_STATUS.get(status, f"engine status {status}"))
        return out

    # ---- outputs --------------------------------------------------------------------
    def logits(self, x: Any, threads: int | None = None) -> np.ndarray:
        """float32 logits (N, classes) of float32 input (signs taken like the torch model)."""
        x = self._floats(x)
        return self._run(
            x, IN_FLOAT, np.empty((x.shape[0], self.num_classes), np.float32), OUT_LOGITS, threads
        )

    def predict(self, x: Any, threads: int | None = None) -> np.ndarray:
        """int64 class indices (N,): argmax of :meth:`logits` (first maximum on ties)."""
        x = self._floats(x)
        return self._run(x, IN_FLOAT, np.empty(x.shape[0], np.int64), OUT_ARGMAX, threads)

    def logits_packed(self, codes: Any, threads: int | None = None) -> np.ndarray:
        """Logits of ``numpy.packbits`` codes (uint8, big-endian, bit 1 = +1)."""
        c = self._codes(codes)
        return self._run(
            c,
            IN_PACKBITS,
            np.empty((c.shape[0], self.num_classes), np.float32),
            OUT_LOGITS,
            threads,
        )

    def predict_packed(self, codes: Any, threads: int | None = None) -> np.ndarray:
        """Class indices of ``numpy.packbits`` codes: 25 bytes per 200-bit code, bit 1 = +1."""
        c = self._codes(codes)
        return self._run(c, IN_PACKBITS, np.empty(c.shape[0], np.int64), OUT_ARGMAX, threads)

    def accumulators(self, x: Any) -> list[np.ndarray]:
        """Each binary layer's integer ±1 dot products d = K - 2*popcount (int32).

        Dense layers give (N, out), convolutions (N, C, H, W) like torch; flipped channels
        (see :mod:`hybnn.engine.thresholds`) are reported in the model's own sign.
        """
        x = self._floats(x)
        n = x.shape[0]
        outs = [
            np.empty((n, g.out_height, g.out_width, g.out_channels), np.int32)
            if g.op == "conv2d"
            else np.empty((n, g.out_channels), np.int32)
            for g in self.geometry
        ]
        status = self._net.trace(x, IN_FLOAT, n, outs, self.threads)
        if status:
            raise DataError(_STATUS.get(status, f"engine status {status}"))
        return [o.transpose(0, 3, 1, 2) if o.ndim == 4 else o for o in outs]


def load(path: str | os.PathLike[str], threads: int = 1) -> PackedModel | GraphModel:
    """Load and validate an engine file written by :func:`hybnn.engine.export_model`: a chain
    (:class:`PackedModel`) or a graph of binary and float nodes
    (:class:`~hybnn.engine.graph.GraphModel`)."""
    header, arrays, digest = fmt.read(path)
    if header.get("format_version") == fmt.GRAPH_VERSION:
        return GraphModel(header, arrays, digest, threads=threads, where=str(path))
    return PackedModel(header, arrays, digest, threads=threads, where=str(path))


def words_per_sample(model: PackedModel) -> int:
    """Packed words of one input sample (rows: ceil(bits/64); images: H*W*ceil(C/64))."""
    if model.in_bits is not None:
        return words_for(model.in_bits)
    c, h, w = model.input_shape
    return h * w * words_for(c)
