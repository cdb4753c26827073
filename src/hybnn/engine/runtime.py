"""Run an engine file: :func:`load` returns a :class:`PackedModel` held in C memory."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hybnn.engine import format as fmt
from hybnn.engine.dispatch import _kernels
from hybnn.engine.packing import words_for
from hybnn.errors import ArtifactError, DataError

IN_FLOAT, IN_PACKBITS, IN_WORDS = 0, 1, 2
OUT_LOGITS, OUT_ARGMAX, OUT_WORDS, OUT_ACC = 0, 1, 2, 3
_STATUS = {
    1: "input contains NaN; the sign of NaN is undefined",
    2: "packed input has bits set past the input width",
}


def _int(spec: dict[str, Any], key: str) -> int:
    value = spec.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 24:
        raise ArtifactError(f"engine file: layer field {key!r} is missing or invalid")
    return value


def _array(arrays: dict[str, np.ndarray], spec: dict[str, Any], key: str, dtype: str) -> np.ndarray:
    name = spec.get(key)
    if not isinstance(name, str) or name not in arrays:
        raise ArtifactError(f"engine file: layer array {key!r} is missing")
    arr = arrays[name]
    if arr.dtype != np.dtype(dtype):
        raise ArtifactError(f"engine file: array {name!r} has dtype {arr.dtype}, expected {dtype}")
    return arr


def _native_layers(
    header: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[tuple, list[tuple]]:
    inp = header.get("input")
    layers = header.get("layers")
    if not isinstance(inp, dict) or not isinstance(layers, list) or not layers:
        raise ArtifactError("engine file: header lacks input or layers")
    if inp.get("kind") == "rows":
        in_spec: tuple = ("rows", _int(inp, "bits"))
    elif inp.get("kind") == "image":
        in_spec = ("image", _int(inp, "channels"), _int(inp, "height"), _int(inp, "width"))
    else:
        raise ArtifactError(f"engine file: unknown input kind {inp.get('kind')!r}")
    native = []
    for spec in layers:
        if not isinstance(spec, dict):
            raise ArtifactError("engine file: layer entries must be objects")
        op = spec.get("op")
        if op == "conv2d":
            native.append(
                (
                    "conv",
                    _int(spec, "in_channels"),
                    _int(spec, "in_height"),
                    _int(spec, "in_width"),
                    _int(spec, "out_channels"),
                    _int(spec, "kernel_size"),
                    _int(spec, "stride"),
                    _int(spec, "padding"),
                    _array(arrays, spec, "weights", "<u8"),
                    _array(arrays, spec, "thresholds", "<i4"),
                    _array(arrays, spec, "flips", "i1"),
                )
            )
        elif op == "dense":
            native.append(
                (
                    "dense",
                    _int(spec, "in_bits"),
                    _int(spec, "in_words"),
                    _int(spec, "out_features"),
                    _array(arrays, spec, "weights", "<u8"),
                    _array(arrays, spec, "thresholds", "<i4"),
                    _array(arrays, spec, "flips", "i1"),
                )
            )
        elif op == "output":
            native.append(
                (
                    "out",
                    _int(spec, "in_bits"),
                    _int(spec, "in_words"),
                    _int(spec, "out_features"),
                    _array(arrays, spec, "weights", "<u8"),
                    _array(arrays, spec, "alpha", "<f4"),
                    _array(arrays, spec, "bn_scale", "<f4"),
                    _array(arrays, spec, "bn_shift", "<f4"),
                )
            )
        else:
            raise ArtifactError(f"engine file: unknown layer op {op!r}")
    if native[-1][0] != "out":
        raise ArtifactError("engine file: the last layer must be the float output layer")
    return in_spec, native


class PackedModel:
    """A bit-packed BNNHead / BinaryCNN. ``predict``/``logits`` take what the torch model takes."""

    def __init__(
        self,
        header: dict[str, Any],
        arrays: dict[str, np.ndarray],
        fingerprint: str,
        threads: int = 1,
    ) -> None:
        in_spec, native = _native_layers(header, arrays)
        try:
            self._net = _kernels.Network(in_spec, native)
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"engine file has inconsistent layers: {exc}") from None
        self.header = header
        self.fingerprint = fingerprint
        self.threads = int(threads)
        self.arch: str = str(header.get("arch"))
        self.metadata: dict[str, Any] = header.get("metadata") or {}
        self.layers: list[dict[str, Any]] = header["layers"]
        self.num_classes = int(self.layers[-1]["out_features"])
        self.input_shape: tuple[int, ...] = (
            tuple(in_spec[1:]) if in_spec[0] == "image" else (in_spec[1],)
        )
        self.in_bits = in_spec[1] if in_spec[0] == "rows" else None
        self.weight_bytes = sum(int(arrays[s["weights"]].nbytes) for s in self.layers)
        self.float32_weight_bytes = 4 * sum(_weight_count(s) for s in self.layers)

    def __repr__(self) -> str:
        return (
            f"PackedModel(arch={self.arch!r}, input={self.input_shape}, "
            f"classes={self.num_classes}, layers={len(self.layers)})"
        )

    # ---- inputs ---------------------------------------------------------------------
    def _floats(self, x: Any) -> np.ndarray:
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
        (see :mod:`hybnn.engine.fold`) are reported in the model's own sign.
        """
        x = self._floats(x)
        n = x.shape[0]
        outs = []
        for s in self.layers:
            if s["op"] == "conv2d":
                outs.append(
                    np.empty((n, s["out_height"], s["out_width"], s["out_channels"]), np.int32)
                )
            else:
                outs.append(np.empty((n, s["out_features"]), np.int32))
        status = self._net.trace(x, IN_FLOAT, n, outs, self.threads)
        if status:
            raise DataError(_STATUS.get(status, f"engine status {status}"))
        return [o.transpose(0, 3, 1, 2) if o.ndim == 4 else o for o in outs]


def _weight_count(spec: dict[str, Any]) -> int:
    if spec["op"] == "conv2d":
        return spec["out_channels"] * spec["in_channels"] * spec["kernel_size"] ** 2
    return spec["out_features"] * spec["in_bits"]


def load(path: str | os.PathLike[str], threads: int = 1) -> PackedModel:
    """Load and validate an engine file written by :func:`hybnn.engine.export_model`."""
    header, arrays, digest = fmt.read(path)
    if header.get("format") != "hybnn-engine":
        raise ArtifactError(f"{path}: header does not describe a hybnn engine model")
    try:
        return PackedModel(header, arrays, digest, threads=threads)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: malformed engine header ({exc!r})") from None


def words_per_sample(model: PackedModel) -> int:
    """Packed words of one input sample (rows: ceil(bits/64); images: H*W*ceil(C/64))."""
    if model.in_bits is not None:
        return words_for(model.in_bits)
    c, h, w = model.input_shape
    return h * w * words_for(c)
