"""Update encodings: how a model's state travels between the server and the clients.

The federated state of a model is its ``state_dict`` without ``num_batches_tracked``
(unused: batch norm runs with a fixed momentum). Batch-norm running statistics are part of
it and are averaged like the weights (FedAvg weights them by the clients' sample counts).

- ``fp32``: every tensor as float32, one array per tensor; binary layers send their float
  *latent* weights (the paper's setting).
- ``1bit``: a binary layer's weight travels as its signs, packed 8 per byte (numpy
  ``packbits`` order, sign(0) = +1), plus one float32 scale per tensor (mean |w|); every
  other tensor (batch norm affine and running statistics, learned scales) stays float32.
  Two arrays in all: ``signs`` (uint8) and ``floats`` (float32: the scales, then the float
  tensors flattened, in state order). Decoding gives ``scale · sign(w)``: the binary weights
  are exact, only the latent magnitudes are lost. Clients keep their own magnitudes between
  rounds (see :func:`hybnn.federated.task.restore_latent`), so with FedAvg on the decoded
  models the server's global sign is a sample-weighted majority vote of the clients' signs.
- ``xor`` (uplink only; the downlink is ``1bit``, see :func:`downlink`): what ``1bit``
  says, told as a difference from the global model the client received this round (the
  ``reference``). Few signs flip in a round's local training (2–5 % measured on mnist-5k
  pair tasks), so the client sends the positions of the flips, Rice-coded, instead of
  every sign; its scales stay float32 and every float tensor travels as 8-bit codes on a
  per-tensor affine range (its float32 min and max; error at most (max - min) / 510).
  One uint8 array, ``update``::

      header   version u8, Rice k u8, flips u32, unary bytes u32, reference digest 4 B
      scales   float32, one per binary tensor
      ranges   float32 (min, max), one pair per float tensor
      codes    uint8, one per float value, in state order
      low      the k low bits of every gap between flips, packed
      unary    each gap >> k in unary (that many 0 bits, then a 1), packed

  A gap is the number of unflipped signs before a flip (Golomb–Rice coding of a sparse
  bit vector: within 1–2 % of its entropy on real updates; zlib level 9 took ~40 % more).
  The digest (BLAKE2b, 4 bytes, of the reference's packed signs) catches an update coded
  against another model; it is a consistency check, not authentication. Decoding needs
  the reference and never inflates anything: every length follows from the header and
  the layout and must add up to the array's size exactly, so memory stays bounded by the
  model's size whatever the bytes.

:func:`decode` is the first step of the server's validation: wrong names, shapes, dtypes or
sizes and non-finite values raise :class:`UpdateError`, and such an update is never
aggregated; :mod:`hybnn.federated.validation` then checks every value's domain.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hybnn.binary.layers import binary_layers
from hybnn.errors import HybnnError
from hybnn.federated.config import ENCODINGS


class UpdateError(HybnnError):
    """A client reply the server must not use (wrong layout, a value outside its domain)."""


XOR_VERSION = 1
XOR_HEADER = struct.Struct("<BBII4s")  # version, Rice k, flips, unary bytes, digest
MAX_RICE_K = 30
LEVELS = 255  # 8-bit codes of a float tensor: min + code * (max - min) / LEVELS


@dataclass(frozen=True)
class Layout:
    """Names and shapes of a model's federated tensors, and which of them are binary."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    binary: tuple[bool, ...]

    @classmethod
    def of(cls, model: nn.Module) -> Layout:
        binary_keys = {f"{name}.weight" for name, _ in binary_layers(model)}
        items = [(k, tuple(v.shape)) for k, v in model.state_dict().items()
                 if not k.endswith("num_batches_tracked")]
        return cls(tuple(k for k, _ in items), tuple(s for _, s in items),
                   tuple(k in binary_keys for k, _ in items))

    def sizes(self) -> list[int]:
        return [int(np.prod(s)) for s in self.shapes]

    @property
    def num_binary(self) -> int:
        return sum(n for n, b in zip(self.sizes(), self.binary, strict=True) if b)


def model_state(model: nn.Module, layout: Layout) -> dict[str, np.ndarray]:
    """The federated tensors of ``model`` as float32 numpy copies."""
    sd = model.state_dict()
    return {k: sd[k].detach().cpu().numpy().astype(np.float32, copy=True) for k in layout.keys}


def load_state(model: nn.Module, state: dict[str, np.ndarray]) -> None:
    """Copy a federated state into ``model`` (other buffers are left as they are)."""
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            sd[k].copy_(torch.from_numpy(np.asarray(v)).to(sd[k].dtype))


def downlink(encoding: str) -> str:
    """The encoding of the server's messages when clients reply in ``encoding``: ``xor``
    replies are told against the global signs, which travel as ``1bit``."""
    return "1bit" if encoding == "xor" else encoding


def encode(state: dict[str, np.ndarray], layout: Layout, encoding: str,
           reference: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The arrays that carry ``state`` in ``encoding``; ``xor`` codes the signs against
    those of ``reference``, the global state the client received."""
    if encoding == "xor":
        if reference is None:
            raise ValueError("the xor encoding needs the reference (the global state received)")
        return {"update": _encode_xor(state, layout, reference)}
    if encoding == "fp32":
        return {k: np.ascontiguousarray(state[k], dtype=np.float32) for k in layout.keys}
    if encoding == "1bit":
        signs, scales, floats = [], [], []
        for k, is_binary in zip(layout.keys, layout.binary, strict=True):
            w = np.asarray(state[k], dtype=np.float32).ravel()
            if is_binary:
                signs.append(w >= 0)
                scales.append(np.abs(w).mean() if w.size else 0.0)
            else:
                floats.append(w)
        bits = np.concatenate(signs) if signs else np.zeros(0, bool)
        return {"signs": np.packbits(bits),
                "floats": np.concatenate([np.asarray(scales, np.float32), *floats])}
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")


def wire_keys(layout: Layout, encoding: str) -> tuple[str, ...]:
    """The names of the arrays :func:`encode` gives, in order (Flower's legacy messages carry
    a list of arrays, not a mapping)."""
    if encoding == "fp32":
        return layout.keys
    if encoding == "1bit":
        return ("signs", "floats")
    if encoding == "xor":
        return ("update",)
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")


def decode(arrays: dict[str, np.ndarray], layout: Layout, encoding: str,
           reference: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Float32 state from ``arrays``; raises :class:`UpdateError` unless it fits ``layout``
    (and, for ``xor``, was coded against ``reference``)."""
    if encoding == "xor":
        _expect_keys(arrays, {"update"})
        if reference is None:
            raise UpdateError("xor update without a reference: no global model was sent to "
                              "this client this round")
        data = np.asarray(arrays["update"])
        if data.dtype != np.uint8 or data.ndim != 1:
            raise UpdateError(f"update: dtype {data.dtype} with {data.ndim} dimension(s), "
                              "expected uint8 with one")
        return _decode_xor(np.ascontiguousarray(data), layout, reference)
    if encoding == "fp32":
        _expect_keys(arrays, set(layout.keys))
        state = {}
        for k, shape in zip(layout.keys, layout.shapes, strict=True):
            a = _expect_array(arrays[k], k, np.float32, shape)
            state[k] = a.copy()
        return state
    if encoding == "1bit":
        _expect_keys(arrays, {"signs", "floats"})
        n_bin = layout.num_binary
        n_scales = sum(layout.binary)
        n_float = sum(n for n, b in zip(layout.sizes(), layout.binary, strict=True) if not b)
        packed = _expect_array(arrays["signs"], "signs", np.uint8, ((n_bin + 7) // 8,))
        floats = _expect_array(arrays["floats"], "floats", np.float32, (n_scales + n_float,))
        if (floats[:n_scales] < 0).any():
            raise UpdateError("1bit update has a negative scale")
        bits = np.unpackbits(packed, count=n_bin).astype(np.float32) * 2.0 - 1.0
        state, b_at, s_at, f_at = {}, 0, 0, n_scales
        for k, shape, n, is_binary in zip(layout.keys, layout.shapes, layout.sizes(),
                                          layout.binary, strict=True):
            if is_binary:
                state[k] = (floats[s_at] * bits[b_at:b_at + n]).reshape(shape)
                b_at, s_at = b_at + n, s_at + 1
            else:
                state[k] = floats[f_at:f_at + n].reshape(shape).copy()
                f_at += n
        return state
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")


def _encode_xor(state: dict[str, np.ndarray], layout: Layout,
                reference: Mapping[str, np.ndarray]) -> np.ndarray:
    signs, scales, ranges, codes = [], [], [], []
    for key, is_binary in zip(layout.keys, layout.binary, strict=True):
        w = np.asarray(state[key], dtype=np.float32).ravel()
        if is_binary:
            signs.append(w >= 0)
            scales.append(np.abs(w).mean() if w.size else 0.0)
            continue
        lo, hi = (w.min(), w.max()) if w.size else (np.float32(0), np.float32(0))
        step = (np.float64(hi) - np.float64(lo)) / LEVELS
        q = np.rint((w.astype(np.float64) - lo) / step) if step > 0 else np.zeros(w.size)
        ranges += [lo, hi]
        codes.append(np.clip(q, 0, LEVELS).astype(np.uint8))
    ref = _reference_bits(reference, layout)
    bits = np.concatenate(signs) if signs else np.zeros(0, bool)
    gaps = np.diff(np.flatnonzero(bits != ref), prepend=-1) - 1
    k = _rice_parameter(gaps, layout.num_binary)
    low, unary = _rice_encode(gaps, k)
    header = XOR_HEADER.pack(XOR_VERSION, k, gaps.size, len(unary), _digest(ref))
    parts = [header, np.asarray(scales, "<f4").tobytes(), np.asarray(ranges, "<f4").tobytes(),
             *(c.tobytes() for c in codes), low, unary]
    return np.frombuffer(b"".join(parts), np.uint8).copy()


def _decode_xor(data: np.ndarray, layout: Layout,
                reference: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    n_bin, n_scales = layout.num_binary, sum(layout.binary)
    float_sizes = [n for n, b in zip(layout.sizes(), layout.binary, strict=True) if not b]
    if data.size < XOR_HEADER.size:
        raise UpdateError(f"xor update of {data.size} bytes is shorter than its "
                          f"{XOR_HEADER.size}-byte header")
    version, k, n_flips, n_unary, digest = XOR_HEADER.unpack(data[:XOR_HEADER.size].tobytes())
    if version != XOR_VERSION:
        raise UpdateError(f"xor update of version {version}; this server reads {XOR_VERSION}")
    if k > MAX_RICE_K:
        raise UpdateError(f"xor update with Rice parameter {k} (at most {MAX_RICE_K})")
    if n_flips > n_bin:
        raise UpdateError(f"xor update flips {n_flips} signs; the model has {n_bin}")
    if n_unary > (n_flips + (n_bin >> k) + 7) // 8:
        raise UpdateError(f"xor update with {n_unary} unary bytes, more than {n_flips} "
                          f"gaps within {n_bin} signs can need")
    n_low = (n_flips * k + 7) // 8
    sizes = [4 * n_scales, 8 * len(float_sizes), sum(float_sizes), n_low, n_unary]
    if data.size != XOR_HEADER.size + sum(sizes):
        raise UpdateError(f"xor update of {data.size} bytes; its header and the model make "
                          f"{XOR_HEADER.size + sum(sizes)}")
    ref = _reference_bits(reference, layout)
    if digest != _digest(ref):
        raise UpdateError("xor update coded against another global model (reference digest "
                          "mismatch)")
    cuts = np.cumsum([XOR_HEADER.size, *sizes])
    scales = data[cuts[0]:cuts[1]].view("<f4")
    ranges = data[cuts[1]:cuts[2]].view("<f4").reshape(-1, 2)
    codes, low, unary = (data[cuts[i]:cuts[i + 1]] for i in (2, 3, 4))
    if not (np.isfinite(scales).all() and np.isfinite(ranges).all()):
        raise UpdateError("xor update: contains NaN or infinite values")
    if (scales < 0).any():
        raise UpdateError("xor update has a negative scale")
    if (ranges[:, 0] > ranges[:, 1]).any():
        raise UpdateError("xor update has a float range whose minimum is above its maximum")
    bits = ref ^ _rice_decode(low, unary, n_flips, k, n_bin)
    state, b_at, s_at, f_at, t_at = {}, 0, 0, 0, 0
    for key, shape, n, is_binary in zip(layout.keys, layout.shapes, layout.sizes(),
                                        layout.binary, strict=True):
        if is_binary:
            sign = bits[b_at:b_at + n].astype(np.float32) * 2.0 - 1.0
            state[key] = (scales[s_at] * sign).reshape(shape)
            b_at, s_at = b_at + n, s_at + 1
        else:
            lo, hi = np.float64(ranges[t_at, 0]), np.float64(ranges[t_at, 1])
            values = lo + codes[f_at:f_at + n] * ((hi - lo) / LEVELS)
            state[key] = np.clip(values, lo, hi).astype(np.float32).reshape(shape)
            f_at, t_at = f_at + n, t_at + 1
    return state


def _reference_bits(reference: Mapping[str, np.ndarray], layout: Layout) -> np.ndarray:
    """The signs (w >= 0) of the reference's binary tensors, concatenated in state order."""
    parts = [np.asarray(reference[k]).ravel() >= 0
             for k, is_binary in zip(layout.keys, layout.binary, strict=True) if is_binary]
    bits = np.concatenate(parts) if parts else np.zeros(0, bool)
    if bits.size != layout.num_binary:
        raise ValueError(f"the reference holds {bits.size} binary weights, the model "
                         f"{layout.num_binary}")
    return bits


def _digest(bits: np.ndarray) -> bytes:
    return hashlib.blake2b(np.packbits(bits).tobytes(), digest_size=4).digest()


def _rice_parameter(gaps: np.ndarray, n_bin: int) -> int:
    """The k that codes ``gaps`` in the fewest bits: each costs k + 1 + (gap >> k)."""
    if not gaps.size:
        return 0
    ks = range(min(MAX_RICE_K, max(n_bin, 1).bit_length()) + 1)
    return min(ks, key=lambda k: gaps.size * k + int((gaps >> k).sum()))


def _rice_encode(gaps: np.ndarray, k: int) -> tuple[bytes, bytes]:
    """(low, unary): the k low bits of every gap, most significant first; then every
    ``gap >> k`` in unary, as that many 0 bits and a 1."""
    low = (gaps[:, None] >> np.arange(k - 1, -1, -1)) & 1
    ends = np.cumsum((gaps >> k) + 1) - 1
    unary = np.zeros(int(ends[-1]) + 1 if ends.size else 0, bool)
    unary[ends] = True
    return np.packbits(low.astype(bool).ravel()).tobytes(), np.packbits(unary).tobytes()


def _rice_decode(low: np.ndarray, unary: np.ndarray, n: int, k: int, n_bin: int
                 ) -> np.ndarray:
    """The flip mask (``n_bin`` bools) of ``n`` Rice-coded gaps; UpdateError unless the
    sections hold exactly ``n`` gaps that end within the mask, and nothing after them."""
    ends = np.flatnonzero(np.unpackbits(unary))
    if ends.size != n:
        raise UpdateError(f"xor update holds {ends.size} unary codes, its header says {n}")
    if unary.size != (int(ends[-1]) // 8 + 1 if n else 0):
        raise UpdateError("xor update has bytes after its last unary code")
    low_bits = np.unpackbits(low)
    if low_bits[n * k:].any():
        raise UpdateError("xor update has padding bits set after its last low bits")
    lows = low_bits[:n * k].reshape(n, k).astype(np.int64) @ (1 << np.arange(k - 1, -1, -1))
    gaps = ((np.diff(ends, prepend=-1).astype(np.int64) - 1) << k) | lows
    if n and gaps.max() >= n_bin:
        raise UpdateError(f"xor update has a gap of {gaps.max()} signs; the model has {n_bin}")
    where = np.cumsum(gaps + 1) - 1
    if n and where[-1] >= n_bin:
        raise UpdateError(f"xor update flips sign {where[-1]}; the model has {n_bin}")
    flips = np.zeros(n_bin, bool)
    flips[where] = True
    return flips


def payload_bytes(arrays: dict[str, np.ndarray]) -> int:
    """Raw bytes of the arrays' data (no names, shapes or framing)."""
    return sum(int(a.nbytes) for a in arrays.values())


def _expect_keys(arrays: dict[str, np.ndarray], want: set[str]) -> None:
    got = set(arrays)
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        raise UpdateError(f"update arrays do not match the model: missing {missing[:4]}, "
                          f"unexpected {extra[:4]}")


def _expect_array(a: np.ndarray, name: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != dtype:
        raise UpdateError(f"{name}: dtype {a.dtype}, expected {np.dtype(dtype)}")
    if tuple(a.shape) != tuple(shape):
        raise UpdateError(f"{name}: shape {tuple(a.shape)}, expected {tuple(shape)}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise UpdateError(f"{name}: contains NaN or infinite values")
    return a
