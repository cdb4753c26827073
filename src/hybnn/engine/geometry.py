"""Geometry of a packed network: its limits, checked before any size reaches C.

* Every dimension (channels, output features, height, width, kernel, stride) is an integer in
  ``[1, MAX_DIM]``; padding is in ``[0, kernel_size)``; a kernel fits its padded input.
* Every count derived from one layer (values and words per sample in and out, a dense layer's
  ``in_bits`` and ``in_words``, values per dot product, weight words) is at most
  ``MAX_ELEMENTS``.
* Each layer's input is the previous layer's output; only the last layer is the float output.

The C extension checks the same limits again (``csrc/engine.h``), with overflow-checked
arithmetic. Violations raise ``ValueError``; the file loader turns them into ``ArtifactError``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hybnn.engine.packing import words_for

MAX_DIM = (1 << 24) - 1
MAX_ELEMENTS = 1 << 26
OPS = ("conv2d", "dense", "output")


def _dim(name: str, value: Any, low: int = 1, high: int = MAX_DIM) -> int:
    try:  # an int or numpy integer; not a bool, a float or a string
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None or not low <= n <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return n


def _count(name: str, *factors: int) -> int:
    n = math.prod(factors)
    if n > MAX_ELEMENTS:
        raise ValueError(f"{name} is {n}, more than the limit of {MAX_ELEMENTS}")
    return n


@dataclass(frozen=True)
class Layer:
    """One binary layer; dense and output layers have ``in_channels = in_bits`` and H = W = 1."""

    op: str
    in_channels: int
    in_height: int
    in_width: int
    out_channels: int
    in_words: int
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0

    @property
    def out_height(self) -> int:
        return (self.in_height + 2 * self.padding - self.kernel_size) // self.stride + 1

    @property
    def out_width(self) -> int:
        return (self.in_width + 2 * self.padding - self.kernel_size) // self.stride + 1

    @property
    def kbits(self) -> int:
        """±1 values per dot product."""
        return self.kernel_size**2 * self.in_channels

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.in_height, self.in_width)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.out_channels, self.out_height, self.out_width)

    @property
    def out_words(self) -> int:
        """Packed words per output sample (NHWC pixels of ceil(out/64) words)."""
        return self.out_height * self.out_width * words_for(self.out_channels)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.op == "conv2d":
            k = self.kernel_size
            return (self.out_channels, k, k, words_for(self.in_channels))
        return (self.out_channels, self.in_words)


def conv2d(
    in_channels: object,
    height: object,
    width: object,
    out_channels: object,
    kernel_size: object,
    stride: object = 1,
    padding: object = 0,
) -> Layer:
    """A checked convolution (square kernel, the same stride and padding on both axes).

    Arguments may come from an untrusted file: each must be an integer in range."""
    c, h, w = _dim("in_channels", in_channels), _dim("height", height), _dim("width", width)
    o, k, s = (
        _dim("out_channels", out_channels),
        _dim("kernel_size", kernel_size),
        _dim("stride", stride),
    )
    p = _dim("padding", padding, 0, k - 1)
    if k > h + 2 * p or k > w + 2 * p:
        raise ValueError(f"kernel {k} does not fit the {h}x{w} input padded by {p}")
    layer = Layer("conv2d", c, h, w, o, h * w * words_for(c), k, s, p)
    _count("input values per sample", c, h, w)
    _count("input words per sample", layer.in_words)
    _count("values per dot product", layer.kbits)
    _count("output values per sample", *layer.out_shape)
    _count("output words per sample", layer.out_words)
    _count("weight words", *layer.weight_shape)
    return layer


def dense(in_bits: object, in_words: object, out_features: object, op: str = "dense") -> Layer:
    """A checked dense (``op="dense"``) or float output (``op="output"``) layer."""
    if op not in ("dense", "output"):
        raise ValueError(f"unknown dense op {op!r}")
    k = _dim("in_bits", in_bits, high=MAX_ELEMENTS)
    words = _dim("in_words", in_words, high=MAX_ELEMENTS)
    o = _dim("out_features", out_features)
    if words < words_for(k):
        raise ValueError(f"in_words {words} cannot hold {k} in_bits")
    layer = Layer(op, k, 1, 1, o, words)
    _count("weight words", *layer.weight_shape)
    return layer


def input_layer(kind: Any, dims: Sequence[Any]) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), words per sample) of a network input: ("rows", bits) or ("image", c, h, w)."""
    if kind == "rows" and len(dims) == 1:
        shape = (_dim("input bits", dims[0], high=MAX_ELEMENTS), 1, 1)
    elif kind == "image" and len(dims) == 3:
        shape = (
            _dim("input channels", dims[0]),
            _dim("input height", dims[1]),
            _dim("input width", dims[2]),
        )
    else:
        raise ValueError(f"input must be rows (bits) or an image (C, H, W), got {kind!r}")
    _count("input values per sample", *shape)
    return shape, _count("input words per sample", shape[1], shape[2], words_for(shape[0]))


def check_chain(
    input_shape: tuple[int, int, int], input_words: int, layers: Sequence[Layer]
) -> None:
    """Each layer reads what the previous one writes; only the last is the output layer."""
    if not layers:
        raise ValueError("a network needs at least one layer")
    shape, words = input_shape, input_words
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        if (layer.op == "output") != last:
            raise ValueError(f"layer {i} ({layer.op}): the output layer must be last, and only it")
        if layer.op == "conv2d" and layer.in_shape != shape:
            raise ValueError(f"layer {i} (conv2d) reads {layer.in_shape}, gets {shape} (C, H, W)")
        if layer.op != "conv2d" and (layer.in_channels, layer.in_words) != (
            math.prod(shape),
            words,
        ):
            raise ValueError(
                f"layer {i} ({layer.op}) reads {layer.in_channels} bits in {layer.in_words} "
                f"words, gets {math.prod(shape)} bits in {words} words"
            )
        shape, words = layer.out_shape, layer.out_words
