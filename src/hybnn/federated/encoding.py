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

:func:`decode` is the first step of the server's validation: wrong names, shapes, dtypes or
sizes and non-finite values raise :class:`UpdateError`, and such an update is never
aggregated; :mod:`hybnn.federated.validation` then checks every value's domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hybnn.binary.layers import binary_layers
from hybnn.errors import HybnnError
from hybnn.federated.config import ENCODINGS


class UpdateError(HybnnError):
    """A client reply the server must not use (wrong layout, a value outside its domain)."""


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


def encode(state: dict[str, np.ndarray], layout: Layout, encoding: str) -> dict[str, np.ndarray]:
    """The arrays that carry ``state`` in ``encoding``."""
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
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")


def decode(arrays: dict[str, np.ndarray], layout: Layout, encoding: str) -> dict[str, np.ndarray]:
    """Float32 state from ``arrays``; raises :class:`UpdateError` unless it fits ``layout``."""
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
