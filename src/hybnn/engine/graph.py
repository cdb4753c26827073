"""A graph of binary and float32 ops in an engine file (format version 3), checked and run.

A version-2 engine file is a chain of binary layers; a version-3 file holds ``"graph"``:
``{"nodes": [...], "output": NAME}``. Each node is an object with a unique ``name``, an
``op``, its ``inputs`` (names of earlier nodes, or ``"input"`` for the image) and its
arrays by name (``nodes.I.KEY`` when :mod:`hybnn.engine.fx_export` writes them). A node
reads only nodes listed before it, so a graph has no cycles by construction; every node
must reach the output. Tensors are ``float`` (float32 NCHW) or ``bits`` (the engine's packed
NHWC words, :mod:`hybnn.engine.packing`):

=================  ===========  ===========================================================
op                 in -> out    parameters and arrays
=================  ===========  ===========================================================
sign               float->bits  ``shift`` (C,) optional: bit = -1 iff x + shift < 0 (RSign)
bconv2d            bits->mode   out_channels, kernel_size, stride, padding; ``weights``
                                (O, k, k, ceil(C/64)) u64; ``mode`` "signs" (``thresholds``
                                i4, ``flips`` i1, as a chain layer) or "float" (``alpha`` f4:
                                alpha * d, d the integer ±1 dot product)
bdense             bits->mode   out_features; ``weights`` (O, H*W*ceil(C/64)); modes as above
conv2d             float        out_channels, kernel_size, stride, padding (zeros);
                                ``weight`` (O, C, k, k), ``bias`` (O,) optional
dense              float        out_features; ``weight`` (O, C*H*W), ``bias`` optional
affine             float        ``scale``, ``shift`` (C,): x * scale + shift (batch norm)
prelu              float        ``slope`` (C,): x if x > 0 else slope * x
add                float        two inputs of one shape (a residual shortcut)
maxpool2d          float        kernel_size, stride, padding, ceil_mode (padding is -inf)
avgpool2d          float        kernel_size, stride, padding, ceil_mode, count_include_pad
global_avgpool     float        mean over H x W: (C, H, W) -> (C, 1, 1)
flatten            float        (C, H, W) -> (C*H*W, 1, 1), NCHW order
=================  ===========  ===========================================================

The sign of ``x + shift`` is exact: a float32 sum rounds to a negative number exactly when the
real sum is negative. Binary nodes run on the compiled packed kernels, float convolutions and
pooling on compiled float32 kernels, chains of per-channel float nodes fused into compiled passes
(:func:`fused_plan`), the other float nodes in numpy float32. Every geometry, size and array
is checked here before anything runs; violations raise ``ValueError`` (the loader's
``ArtifactError``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybnn.data.labels import LabelSpace
from hybnn.engine import geometry
from hybnn.engine.dispatch import _kernels
from hybnn.engine.packing import pack_images, words_for
from hybnn.errors import ArtifactError, DataError

IN_WORDS, OUT_WORDS, OUT_ACC = 2, 2, 3  # the C extension's codes (hybnn.engine.packed)
MAX_NODES = 4096
CHUNK_BYTES = 2 << 20  # a batch runs in chunks whose largest value per chunk is about this
FLOAT, BITS = "float", "bits"
MODES = ("signs", "float")
_STATUS = {1: "an activation is NaN; the sign of NaN is undefined",
           2: "packed input has bits set past the input width"}


@dataclass(frozen=True)
class Tensor:
    """What flows along an edge: its kind and its shape (C, H, W) per sample."""

    kind: str
    shape: tuple[int, int, int]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Node:
    """One checked node: its inputs (indices into the node list, -1 = the graph input)."""

    name: str
    op: str
    inputs: list[int]
    out: Tensor
    params: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


# ---- checks ----------------------------------------------------------------------------
def _int(spec: dict[str, Any], key: str, low: int = 1, high: int = geometry.MAX_DIM) -> int:
    return geometry._dim(key, spec.get(key), low, high)


def _flag(spec: dict[str, Any], key: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def _array(arrays: dict[str, np.ndarray], spec: dict[str, Any], key: str, dtype: str,
           shape: tuple[int, ...], optional: bool = False) -> np.ndarray | None:
    name = spec.get(key)
    if name is None and optional:
        return None
    if not isinstance(name, str) or name not in arrays:
        raise ValueError(f"array {key!r} is missing")
    arr = arrays[name]
    if arr.dtype != np.dtype(dtype) or arr.shape != shape:
        raise ValueError(f"array {name!r} is {arr.dtype} {arr.shape}, expected "
                         f"{np.dtype(dtype)} {shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"array {name!r} has non-finite values")
    return arr


def _pool_size(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """Output length of a pooling window, as torch computes it (ceil_mode included)."""
    if k > size + 2 * p:
        raise ValueError(f"window {k} does not fit the side {size} padded by {p}")
    span = size + 2 * p - k
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:  # the last window must start inside the input
        out -= 1
    return out


def _one(ins: list[Tensor], kind: str, op: str) -> Tensor:
    if len(ins) != 1:
        raise ValueError(f"{op} takes one input, got {len(ins)}")
    if ins[0].kind != kind:
        raise ValueError(f"{op} reads {kind}, gets {ins[0].kind}")
    return ins[0]


def _binary(spec: dict[str, Any], arrays: dict[str, np.ndarray], op: str, inp: Tensor
            ) -> tuple[Tensor, dict[str, Any], dict[str, Any], geometry.Layer]:
    c, h, w = inp.shape
    if op == "bconv2d":
        layer = geometry.conv2d(c, h, w, spec.get("out_channels"), spec.get("kernel_size"),
                                spec.get("stride"), spec.get("padding"))
    else:
        layer = geometry.dense(c * h * w, h * w * words_for(c), spec.get("out_features"))
    mode = spec.get("mode")
    if mode not in MODES:
        raise ValueError(f"mode must be 'signs' or 'float', got {mode!r}")
    o = (layer.out_channels,)
    found: dict[str, Any] = {"weights": _array(arrays, spec, "weights", "<u8",
                                                layer.weight_shape)}
    if mode == "signs":
        thr = _array(arrays, spec, "thresholds", "<i4", o)
        flips = _array(arrays, spec, "flips", "i1", o)
        assert thr is not None and flips is not None
        if thr.min() < -1 or thr.max() > layer.kbits:
            raise ValueError(f"thresholds must be in [-1, {layer.kbits}]")
        if not np.isin(flips, (-1, 1)).all():
            raise ValueError("flips must be -1 or 1")
        found |= {"thresholds": thr, "flips": flips}
    else:
        if layer.kbits > 1 << 24:
            raise ValueError(f"{layer.kbits} values per dot product: float mode needs at most "
                             "2^24 (exact in float32)")
        found["alpha"] = _array(arrays, spec, "alpha", "<f4", o)
    out = Tensor(BITS if mode == "signs" else FLOAT, layer.out_shape)
    return out, {"mode": mode}, found, layer


def _float_conv(spec: dict[str, Any], arrays: dict[str, np.ndarray], inp: Tensor
                ) -> tuple[Tensor, dict[str, Any], dict[str, Any]]:
    c, h, w = inp.shape
    o, k, s = _int(spec, "out_channels"), _int(spec, "kernel_size"), _int(spec, "stride")
    p = _int(spec, "padding", 0, k - 1)
    ho, wo = _pool_size(h, k, s, p, False), _pool_size(w, k, s, p, False)
    geometry._count("conv2d patch values per sample", c, k, k, ho, wo)
    geometry._count("conv2d weights", o, c, k, k)
    geometry._count("output values per sample", o, ho, wo)
    found = {"weight": _array(arrays, spec, "weight", "<f4", (o, c, k, k)),
             "bias": _array(arrays, spec, "bias", "<f4", (o,), optional=True)}
    return Tensor(FLOAT, (o, ho, wo)), {"kernel_size": k, "stride": s, "padding": p}, found


def _pool(spec: dict[str, Any], inp: Tensor, op: str) -> tuple[Tensor, dict[str, Any]]:
    c, h, w = inp.shape
    k = _int(spec, "kernel_size")
    s = _int(spec, "stride")
    p = _int(spec, "padding", 0, k // 2)  # torch's limit: at most half the window
    ceil = _flag(spec, "ceil_mode")
    params = {"kernel_size": k, "stride": s, "padding": p, "ceil_mode": ceil}
    if op == "avgpool2d":
        params["count_include_pad"] = _flag(spec, "count_include_pad")
    out = Tensor(FLOAT, (c, _pool_size(h, k, s, p, ceil), _pool_size(w, k, s, p, ceil)))
    return out, params


def _node(spec: dict[str, Any], ins: list[Tensor], arrays: dict[str, np.ndarray]
          ) -> tuple[Tensor, dict[str, Any], dict[str, Any], geometry.Layer | None]:
    """(output, parameters, arrays, binary geometry) of one node spec, every size checked."""
    op = spec.get("op")
    if op == "add":
        if len(ins) != 2 or {t.kind for t in ins} != {FLOAT}:
            raise ValueError("add takes two float inputs")
        if ins[0].shape != ins[1].shape:
            raise ValueError(f"add of shapes {ins[0].shape} and {ins[1].shape} (C, H, W): "
                             "the shortcut does not match")
        return ins[0], {}, {}, None
    if op in ("bconv2d", "bdense"):
        return _binary(spec, arrays, op, _one(ins, BITS, op))
    if op == "sign":
        inp = _one(ins, FLOAT, op)
        shift = _array(arrays, spec, "shift", "<f4", (inp.shape[0],), optional=True)
        return Tensor(BITS, inp.shape), {}, {"shift": shift}, None
    if op not in ("conv2d", "dense", "affine", "prelu", "maxpool2d", "avgpool2d",
                  "global_avgpool", "flatten"):
        raise ValueError(f"unknown op {op!r}")
    inp = _one(ins, FLOAT, op)
    c = inp.shape[0]
    if op == "conv2d":
        return (*_float_conv(spec, arrays, inp), None)
    if op == "dense":
        o = _int(spec, "out_features")
        geometry._count("dense weights", o, inp.size)
        return Tensor(FLOAT, (o, 1, 1)), {}, {
            "weight": _array(arrays, spec, "weight", "<f4", (o, inp.size)),
            "bias": _array(arrays, spec, "bias", "<f4", (o,), optional=True)}, None
    if op == "affine":
        found = {k: _array(arrays, spec, k, "<f4", (c,)) for k in ("scale", "shift")}
        return inp, {}, found, None
    if op == "prelu":
        return inp, {}, {"slope": _array(arrays, spec, "slope", "<f4", (c,))}, None
    if op in ("maxpool2d", "avgpool2d"):
        out, params = _pool(spec, inp, op)
        return out, params, {}, None
    if op == "global_avgpool":
        return Tensor(FLOAT, (c, 1, 1)), {}, {}, None
    return Tensor(FLOAT, (inp.size, 1, 1)), {}, {}, None  # flatten


def check_graph(header: dict[str, Any], arrays: dict[str, np.ndarray]
                ) -> tuple[tuple[int, int, int], list[Node], list[geometry.Layer | None]]:
    """(input shape, nodes, binary geometry per node) of a version-3 header; ValueError."""
    inp, graph = header.get("input"), header.get("graph")
    if not isinstance(inp, dict) or not isinstance(graph, dict):
        raise ValueError("header lacks input or graph")
    if inp.get("kind") != "image" or inp.get("prep") is not None:
        raise ValueError("a graph reads images (input kind 'image', no prep)")
    shape, _ = geometry.input_layer("image", [inp.get(k) for k in ("channels", "height",
                                                                    "width")])
    specs = graph.get("nodes")
    if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_NODES:
        raise ValueError(f"graph nodes must be a list of 1 to {MAX_NODES} nodes")
    index: dict[str, int] = {"input": -1}
    tensors: dict[int, Tensor] = {-1: Tensor(FLOAT, shape)}
    nodes: list[Node] = []
    layers: list[geometry.Layer | None] = []
    for i, spec in enumerate(specs):
        name = spec.get("name") if isinstance(spec, dict) else None
        where = f"node {i} ({name!r})" if isinstance(name, str) else f"node {i}"
        try:
            if not isinstance(spec, dict) or not isinstance(name, str) or not name:
                raise ValueError("a node is an object with a non-empty string name")
            if name in index:
                raise ValueError("its name is used twice")
            refs = spec.get("inputs")
            if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
                raise ValueError("inputs must be a list of node names")
            for r in refs:
                if r not in index:
                    later = any(isinstance(s, dict) and s.get("name") == r for s in specs)
                    raise ValueError(f"input {r!r} is " + (
                        "not an earlier node (a cycle or a forward edge)" if later
                        else "no node (a dangling edge)"))
            ins = [index[r] for r in refs]
            out, params, found, layer = _node(spec, [tensors[j] for j in ins], arrays)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        index[name] = i
        tensors[i] = out
        nodes.append(Node(name, spec["op"], ins, out, params,
                          {k: v for k, v in found.items() if v is not None}))
        layers.append(layer)
    _check_reach(graph.get("output"), index, nodes)
    used = {spec[k] for spec in specs for k in spec
            if k not in ("name", "op", "inputs", "mode") and isinstance(spec.get(k), str)}
    if set(arrays) - used:
        raise ValueError(f"arrays no node uses: {sorted(set(arrays) - used)[:5]}")
    return shape, nodes, layers


def _check_reach(output: Any, index: dict[str, int], nodes: list[Node]) -> None:
    """The output is a float node and every node reaches it (no dead ends)."""
    if not isinstance(output, str) or output not in index or index[output] < 0:
        raise ValueError(f"graph output {output!r} is no node")
    last = nodes[index[output]]
    if last.out.kind != FLOAT or last.out.shape[1:] != (1, 1):
        raise ValueError(f"graph output {output!r} must be float (classes, 1, 1), is "
                         f"{last.out.kind} {last.out.shape}")
    live = {index[output]}
    for i in range(len(nodes) - 1, -1, -1):
        if i in live:
            live.update(j for j in nodes[i].inputs if j >= 0)
    dead = [n.name for i, n in enumerate(nodes) if i not in live]
    if dead:
        raise ValueError(f"nodes that do not reach the output: {dead[:5]}")


# ---- float32 ops -----------------------------------------------------------------------
def _channels(v: np.ndarray) -> np.ndarray:
    return v[None, :, None, None]


def _conv_runner(node: Node, bn: dict[str, np.ndarray] | None = None
                 ) -> Callable[[list[np.ndarray], int], np.ndarray]:
    """A float convolution on the compiled kernel (csrc/float_ops.c: direct, no im2col copy,
    AVX2 FMA where the ISA has it), threaded over output rows; ``bn``: the scale and shift of
    an affine node that follows, applied as the kernel stores."""
    k, s, p = (node.params[key] for key in ("kernel_size", "stride", "padding"))
    w, bias = node.arrays["weight"], node.arrays.get("bias")
    o, c = w.shape[:2]
    scale, shift = (bn["scale"], bn["shift"]) if bn else (None, None)

    def run(xs: list[np.ndarray], threads: int) -> np.ndarray:
        x = np.ascontiguousarray(xs[0])
        n, _, h, wd = x.shape
        out = np.empty((n, *node.out.shape), np.float32)
        _kernels.conv2d(x, w, bias, out, n, c, h, wd, o, k, s, p, threads, scale, shift)
        return out

    return run


def _pool_runner(node: Node) -> Callable[[list[np.ndarray], int], np.ndarray]:
    """Max or average pooling with torch's windows on the compiled kernel (csrc/float_ops.c;
    max exact, NaN propagating; average summed in torch's window order), threaded over rows."""
    k, s, p = (node.params[key] for key in ("kernel_size", "stride", "padding"))
    avg = node.op == "avgpool2d"
    include_pad = bool(node.params.get("count_include_pad"))
    c, ho, wo = node.out.shape

    def run(xs: list[np.ndarray], threads: int) -> np.ndarray:
        x = np.ascontiguousarray(xs[0])
        n, _, h, w = x.shape
        out = np.empty((n, c, ho, wo), np.float32)
        _kernels.pool2d(x, out, n * c, h, w, ho, wo, k, s, p, avg, include_pad, threads)
        return out

    return run


def binary_spec(node: Node, layer: geometry.Layer) -> tuple:
    """The layer tuple the C extension's ``Network`` takes for one binary node (float mode:
    no thresholds, the dot products are scaled afterwards)."""
    thr = node.arrays.get("thresholds")
    flips = node.arrays.get("flips", np.ones(layer.out_channels, np.int8))
    w = node.arrays["weights"]
    if layer.op == "conv2d":
        return ("conv", *layer.in_shape, layer.out_channels, layer.kernel_size, layer.stride,
                layer.padding, w, thr, flips)
    return ("dense", layer.in_channels, layer.in_words, layer.out_channels, w, thr, flips)


def _binary_runner(node: Node, layer: geometry.Layer, in_shape: tuple[int, int, int],
                   raw: bool = False) -> Callable[[np.ndarray, int], np.ndarray]:
    """The compiled kernel of one binary node: packed words in, packed words or alpha*d out
    (``raw``: the int32 dot products d, NHWC, for a fused epilogue to scale)."""
    signs = node.params["mode"] == "signs"
    net = _kernels.Network(("image", *in_shape), [binary_spec(node, layer)])
    oc, oh, ow = layer.out_shape
    alpha = node.arrays.get("alpha")

    def run(x: np.ndarray, threads: int) -> np.ndarray:
        n = x.shape[0]
        if signs:
            out = np.empty((n, oh, ow, words_for(oc)), np.uint64)
        else:
            out = np.empty((n, oh, ow, oc), np.int32)
        status = net.run(x, IN_WORDS, n, out, OUT_WORDS if signs else OUT_ACC, threads)
        if status:
            raise DataError(_STATUS.get(status, f"engine status {status}"))
        if signs or raw:
            return out
        assert alpha is not None
        # float32(d) * alpha in one pass (d is exact in float32: K <= 2^24 in float mode)
        return np.multiply(out.transpose(0, 3, 1, 2), _channels(alpha), dtype=np.float32,
                           casting="unsafe")

    return run


def _float_runner(node: Node) -> Callable[[list[np.ndarray]], np.ndarray]:
    a = node.arrays
    op = node.op
    if op == "sign":
        shift = a.get("shift")

        def sign(xs: list[np.ndarray]) -> np.ndarray:
            x = xs[0] if shift is None else xs[0] + _channels(shift)
            return pack_images(np.ascontiguousarray(x, dtype=np.float32))

        return sign
    if op == "dense":
        def dense(xs: list[np.ndarray]) -> np.ndarray:
            y = xs[0].reshape(xs[0].shape[0], -1) @ a["weight"].T
            if "bias" in a:
                y += a["bias"]
            return y.reshape(y.shape[0], -1, 1, 1)

        return dense
    if op == "affine":
        scale, shift = _channels(a["scale"]), _channels(a["shift"])
        if (a["scale"] == 1).all():  # a learnable bias: x * 1 + b is x + b, one pass fewer
            return lambda xs: xs[0] + shift
        return lambda xs: xs[0] * scale + shift
    if op == "prelu":
        slope = _channels(a["slope"])
        # max(x, 0) + slope * min(x, 0): x where x > 0, slope * x elsewhere (3x np.where's speed)
        return lambda xs: np.maximum(xs[0], 0) + slope * np.minimum(xs[0], 0)
    if op == "add":
        return lambda xs: xs[0] + xs[1]
    if op == "global_avgpool":
        return lambda xs: xs[0].mean(axis=(2, 3), dtype=np.float32, keepdims=True)
    return lambda xs: xs[0].reshape(xs[0].shape[0], -1, 1, 1)  # flatten


# ---- the fused plan ----------------------------------------------------------------------
_EW = {"affine": 0, "add": 1, "add_affine": 2, "prelu": 3}  # the C extension's step codes
_FUSABLE = ("affine", "prelu", "add")


@dataclass
class Step:
    """One call of the fused plan: a single node, or a chain of per-channel float nodes run by
    the compiled epilogue in one pass (``members``), optionally started by a binary conv in
    float mode and ended by the next sign. ``outputs`` are the node values it leaves."""

    name: str
    members: list[int]
    inputs: list[int]
    outputs: list[int]
    run: Callable[[dict[int, np.ndarray], int, dict[str, float] | None], None]
    fused: bool = False
    # a fused step's call as data: (members, epilogue steps (op, a, b, other), kept float
    # value, sign node); a float convolution's is ([conv, bn], [], bn, None)
    chain: tuple | None = None


def _consumers(nodes: list[Node]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {i: [] for i in range(-1, len(nodes))}
    for k, n in enumerate(nodes):
        for j in dict.fromkeys(n.inputs):
            out[j].append(k)
    return out


def _chain(start: int, nodes: list[Node], cons: dict[int, list[int]], taken: set[int],
           output: int) -> tuple[list[int], list[tuple], int | None, int | None] | None:
    """(members, steps, float output, sign node) of the longest fusable chain from ``start``,
    or None when fusing would not save a pass. A step is (op, a, b, other value index)."""
    node = nodes[start]
    members, steps = [start], []
    if node.op == "bconv2d":
        cur = start
    elif node.op == "sign":
        return [start], [], None, start
    else:
        cur = start
        step = _ew_step(start, node.inputs[0], nodes, cons, taken, output)
        if step is None:
            return None
        steps.append(step[0])
        members += step[1]
    while cur != output and len(cons[cur]) == 1:
        k = cons[cur][0]
        if k in taken or nodes[k].op not in _FUSABLE:
            break
        step = _ew_step(k, cur, nodes, cons, taken, output)
        if step is None:
            break
        steps.append(step[0])
        members += [k, *step[1]]
        cur = k
    signs = [k for k in cons[cur] if nodes[k].op == "sign" and k not in taken]
    sign = signs[0] if signs else None
    if sign is not None:
        members.append(sign)
    keep = cur == output or any(k != sign for k in cons[cur])
    if node.op != "bconv2d" and len(members) == 1:
        return None
    return members, steps, cur if keep else None, sign


def _ew_step(k: int, cur: int, nodes: list[Node], cons: dict[int, list[int]],
             taken: set[int], output: int) -> tuple[tuple, list[int]] | None:
    """The epilogue step of node ``k`` that reads ``cur``, and the extra nodes it absorbs (the
    affine of a shortcut that only this add reads)."""
    node = nodes[k]
    a = node.arrays
    if node.op == "affine":
        return (_EW["affine"], a["scale"], a["shift"], None), []
    if node.op == "prelu":
        return (_EW["prelu"], a["slope"], None, None), []
    if node.op != "add" or node.inputs.count(cur) != 1:
        return None
    other = node.inputs[1] if node.inputs[0] == cur else node.inputs[0]
    if (other >= 0 and nodes[other].op == "affine" and cons[other] == [k]
            and other not in taken and other != output and nodes[other].inputs[0] != cur):
        o = nodes[other]
        return (_EW["add_affine"], o.arrays["scale"], o.arrays["shift"], o.inputs[0]), [other]
    return (_EW["add"], None, None, other), []


def fused_plan(nodes: list[Node], layers: list[geometry.Layer | None],
               in_shape: tuple[int, int, int], output: int,
               single: Callable[[int], Callable[[list[np.ndarray], int], np.ndarray]]
               ) -> list[Step] | None:
    """The graph as steps: per-channel float chains fused into one compiled pass each
    (binary conv in float mode -> affine / + shortcut / PReLU ... -> next sign), every other
    node alone (``single(i)`` its runner). None if the steps cannot run in node order."""
    cons = _consumers(nodes)
    taken: set[int] = set()
    chains: dict[int, tuple] = {}
    first = [i for i, n in enumerate(nodes) if n.op == "bconv2d" and n.params["mode"] == "float"]
    rest = [i for i, n in enumerate(nodes) if n.op in (*_FUSABLE, "sign")]
    for i in first:
        _take(chains, taken, i, _chain(i, nodes, cons, taken, output))
    for i, node in enumerate(nodes):  # a float conv and the batch norm only it reads
        k = cons[i][0] if node.op == "conv2d" and len(cons[i]) == 1 else -1
        if i != output and k >= 0 and k not in taken and nodes[k].op == "affine":
            _take(chains, taken, i, ([i, k], [], k, None))
    for i in rest:
        if i not in taken:
            _take(chains, taken, i, _chain(i, nodes, cons, taken, output))
    steps: list[Step] = []
    for i, node in enumerate(nodes):
        if i in chains and node.op == "conv2d":
            steps.append(_conv_step(i, chains[i][2], nodes))
        elif i in chains:
            steps.append(_fused_step(i, chains[i], nodes, layers, in_shape))
        elif i not in taken:
            steps.append(_single_step(i, node, single(i)))
    steps.sort(key=lambda st: max(st.members))
    ready = {-1}
    for st in steps:
        if not set(st.inputs) <= ready:
            return None
        ready.update(st.outputs)
    return steps


def _take(chains: dict[int, tuple], taken: set[int], i: int, found: tuple | None) -> None:
    if found is not None:
        taken.update(found[0])
        chains[i] = found


def _conv_step(i: int, bn: int, nodes: list[Node]) -> Step:
    """A float convolution with the batch norm that follows it applied as it stores (rounded
    as the affine node rounds)."""
    conv = _conv_runner(nodes[i], nodes[bn].arrays)
    name = nodes[bn].name

    src, key = nodes[i].inputs[0], f"{name}:conv2d"

    def call(values: dict[int, np.ndarray], threads: int, times: dict[str, float] | None
             ) -> None:
        if times is None:
            values[bn] = conv([values[src]], threads)
            return
        t0 = time.perf_counter()
        values[bn] = conv([values[src]], threads)
        times[key] = times.get(key, 0.0) + time.perf_counter() - t0

    return Step(name, [i, bn], list(nodes[i].inputs), [bn], call, fused=True,
                chain=([i, bn], [], bn, None))


def _single_step(i: int, node: Node, run: Callable[[list[np.ndarray], int], np.ndarray]
                 ) -> Step:
    def call(values: dict[int, np.ndarray], threads: int, times: dict[str, float] | None
             ) -> None:
        values[i] = run([values[j] for j in node.inputs], threads)

    return Step(node.name, [i], list(node.inputs), [i], call)


def _fused_step(start: int, chain: tuple, nodes: list[Node], layers: list[geometry.Layer | None],
                in_shape: tuple[int, int, int]) -> Step:
    members, ew, keep, sign = chain
    node = nodes[start]
    conv = None
    if node.op == "bconv2d":
        src = node.inputs[0]
        layer = layers[start]
        assert layer is not None
        conv = _binary_runner(node, layer, in_shape if src < 0 else nodes[src].out.shape, raw=True)
        alpha = node.arrays["alpha"]
        c, h, w = node.out.shape
    else:
        src = node.inputs[0]
        c, h, w = nodes[start].out.shape
    shift = nodes[sign].arrays.get("shift") if sign is not None else None
    others = [st[3] for st in ew if st[3] is not None]
    outputs = [k for k in (keep, sign) if k is not None]
    name = nodes[members[-1] if keep is None else keep].name
    conv_key, ew_key = f"{name}:bconv2d", f"{name}:epilogue"

    scale = alpha if conv is not None else None
    words = words_for(c)

    # every value of a run is C-contiguous (the C extension refuses any other), so the call
    # passes them as they are: this runs once per block per image, its Python is overhead
    def call(values: dict[int, np.ndarray], threads: int, times: dict[str, float] | None
             ) -> None:
        t0 = time.perf_counter() if times is not None else 0.0
        x = values[src] if conv is None else conv(values[src], threads)
        t1 = time.perf_counter() if times is not None else 0.0
        n = x.shape[0]
        out = np.empty((n, c, h, w), np.float32) if keep is not None else None
        bits = np.empty((n, h, w, words), np.uint64) if sign is not None else None
        args = tuple((op, a, b, None if o is None else values[o]) for op, a, b, o in ew)
        if _kernels.epilogue(x, scale, n, c, h * w, args, out, shift, bits, threads):
            raise DataError(_STATUS[1])
        if out is not None:
            values[keep] = out
        if bits is not None:
            values[sign] = bits
        if times is not None:
            t2 = time.perf_counter()
            if conv is not None:
                times[conv_key] = times.get(conv_key, 0.0) + t1 - t0
            times[ew_key] = times.get(ew_key, 0.0) + t2 - t1

    return Step(name, members, [src, *others], outputs, call, fused=True, chain=chain)


# ---- the model -------------------------------------------------------------------------
class GraphModel:
    """A version-3 engine file: a graph of binary and float32 nodes, images in, logits out.

    ``predict``/``logits`` take float32 NCHW images as the torch model does. ``fused``
    (default) runs chains of per-channel float nodes as one compiled pass each
    (:func:`fused_plan`); the result equals the node-by-node run value for value.
    """

    def __init__(self, header: dict[str, Any], arrays: dict[str, np.ndarray],
                 fingerprint: str, threads: int = 1, where: str = "engine file",
                 fused: bool = True) -> None:
        try:
            shape, nodes, layers = check_graph(header, arrays)
            runners = []
            for node, layer in zip(nodes, layers, strict=True):
                if node.op == "conv2d":
                    runners.append(_conv_runner(node))
                elif node.op in ("maxpool2d", "avgpool2d"):
                    runners.append(_pool_runner(node))
                elif layer is None:
                    runners.append(_ignore_threads(_float_runner(node)))
                else:  # the C extension checks every size again
                    src = node.inputs[0]
                    in_shape = shape if src < 0 else nodes[src].out.shape
                    runners.append(_with_threads(_binary_runner(node, layer, in_shape)))
            if not isinstance(header.get("metadata", {}), dict):
                raise ValueError("metadata must be a JSON object")
            out_node = nodes[[n.name for n in nodes].index(header["graph"]["output"])]
            classes = out_node.out.shape[0]
            if header.get("num_classes", classes) != classes:
                raise ValueError("num_classes does not match the output node")
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{where} is invalid: {exc}") from None
        self.header = header
        self.fingerprint = fingerprint
        self.threads = int(threads)
        self.nodes = nodes
        self.arch: str = str(header.get("arch"))
        self.metadata: dict[str, Any] = header.get("metadata") or {}
        self.num_classes = classes
        self.input_shape: tuple[int, ...] = shape
        self.in_bits = None
        self.input_prep: str | None = None
        self._runners = runners
        self._output = nodes.index(out_node)
        self._plan = fused_plan(nodes, layers, shape, self._output,
                                lambda i: runners[i]) if fused else None
        steps = self._plan or [_single_step(i, n, runners[i]) for i, n in enumerate(nodes)]
        last = {j: k for k, st in enumerate(steps) for j in st.inputs}
        # the values each step reads for the last time: freed after it runs
        self._frees = [[j for j in dict.fromkeys(st.inputs) if last[j] == k and j != self._output]
                       for k, st in enumerate(steps)]
        # the last reader of each value: it is freed after that node runs
        self._last_use = {j: i for i, n in enumerate(nodes) for j in n.inputs}
        source = self.metadata.get("source")
        recorded = source.get("label_space") if isinstance(source, dict) else None
        try:
            self.label_space = LabelSpace.from_json(recorded, self.num_classes)
        except ArtifactError as exc:
            raise ArtifactError(f"{where} is invalid: {exc}") from None
        self.weight_bytes = sum(a.nbytes for n in nodes for a in n.arrays.values())
        # A large batch runs in chunks of samples: a block's values (its dot products, its
        # shortcut, its output) then stay in the last-level cache from the step that writes
        # them to the one that reads them, instead of a round trip through memory. Every node
        # is per sample; only a dense node's BLAS product may round by the number of rows.
        largest = max(4 * n.out.size for n in nodes)
        self._chunk = max(1, CHUNK_BYTES // largest)

    def __repr__(self) -> str:
        return (f"GraphModel(arch={self.arch!r}, input={self.input_shape}, "
                f"classes={self.num_classes}, nodes={len(self.nodes)})")

    def _images(self, x: Any) -> np.ndarray:
        arr = np.asarray(x)
        if arr.dtype != np.float32:
            raise DataError(f"input must be float32, got {arr.dtype} (use x.astype(np.float32))")
        if arr.ndim != 4 or arr.shape[1:] != self.input_shape:
            raise DataError(f"input must have shape (N, {', '.join(map(str, self.input_shape))})"
                            f": (N, C, H, W) images (NCHW, like the torch model); got {arr.shape}")
        return np.ascontiguousarray(arr)

    def run(self, x: Any, threads: int | None = None, keep: bool = False,
            times: dict[str, float] | None = None, fused: bool = True
            ) -> dict[int, np.ndarray]:
        """The output node's value by node index, and with ``keep`` every value computed
        (``fused=False``: every node's, node by node); ``times`` collects seconds per node
        name (per ``NAME:bconv2d`` and ``NAME:epilogue`` of a fused step; :meth:`time_kinds`
        names their kinds)."""
        values: dict[int, np.ndarray] = {-1: self._images(x)}
        t = threads or self.threads
        with np.errstate(all="ignore"):  # inf and NaN are reported, by the sign or by logits
            if self._plan is not None and fused:
                self._run_plan(self._plan, values, t, keep, times)
            else:
                self._run(values, t, keep, times)
        return values

    def _run_plan(self, plan: list[Step], values: dict[int, np.ndarray], t: int, keep: bool,
                  times: dict[str, float] | None) -> None:
        for step, frees in zip(plan, self._frees, strict=True):
            if times is None or step.fused:
                step.run(values, t, times)
            else:
                start = time.perf_counter()
                step.run(values, t, times)
                times[step.name] = times.get(step.name, 0.0) + time.perf_counter() - start
            if not keep:
                for j in frees:
                    values.pop(j, None)

    def time_kinds(self) -> dict[str, str]:
        """The op kind of each key that :meth:`run` writes to ``times`` (fused plan)."""
        kinds = {n.name: n.op for n in self.nodes}
        for step in self._plan or []:
            if step.fused:
                kinds[f"{step.name}:conv2d"] = "conv2d"
                kinds[f"{step.name}:bconv2d"] = "bconv2d"
                kinds[f"{step.name}:epilogue"] = "epilogue"
        return kinds

    def _run(self, values: dict[int, np.ndarray], t: int, keep: bool,
             times: dict[str, float] | None) -> None:
        for i, (node, runner) in enumerate(zip(self.nodes, self._runners, strict=True)):
            start = time.perf_counter()
            values[i] = runner([values[j] for j in node.inputs], t)
            if times is not None:
                times[node.name] = times.get(node.name, 0.0) + time.perf_counter() - start
            if not keep:
                for j in node.inputs:
                    if self._last_use[j] == i and j != self._output:
                        values.pop(j, None)

    def logits(self, x: Any, threads: int | None = None) -> np.ndarray:
        """float32 logits (N, classes) of float32 images."""
        x = self._images(x)
        if len(x) == 0:  # nothing to run: no node's arrays are built for an empty batch
            return np.zeros((0, self.num_classes), np.float32)
        step = self._chunk
        out = (self.run(x, threads)[self._output] if len(x) <= step else
               np.concatenate([self.run(x[i:i + step], threads)[self._output]
                               for i in range(0, len(x), step)]))
        if not np.isfinite(out).all():
            raise DataError("the network's outputs are not finite for this input (values past "
                            "float32's range)")
        return np.ascontiguousarray(out.reshape(out.shape[0], self.num_classes),
                                    dtype=np.float32)

    def predict(self, x: Any, threads: int | None = None) -> np.ndarray:
        """int64 class indices (N,): argmax of :meth:`logits` (first maximum on ties)."""
        return self.logits(x, threads).argmax(axis=1).astype(np.int64)

    def node_outputs(self, x: Any) -> dict[str, np.ndarray]:
        """Every node's output by name: float NCHW arrays, packed NHWC words for bits."""
        values = self.run(x, keep=True, fused=False)
        return {n.name: values[i] for i, n in enumerate(self.nodes)}

    def run_node(self, name: str, inputs: list[np.ndarray], threads: int = 1) -> np.ndarray:
        """One node on given inputs (float NCHW arrays or packed words): for tests."""
        i = [n.name for n in self.nodes].index(name)
        return self._runners[i](inputs, threads)


def _ignore_threads(run: Callable[[list[np.ndarray]], np.ndarray]
                    ) -> Callable[[list[np.ndarray], int], np.ndarray]:
    return lambda xs, threads: run(xs)


def _with_threads(run: Callable[[np.ndarray, int], np.ndarray]
                  ) -> Callable[[list[np.ndarray], int], np.ndarray]:
    return lambda xs, threads: run(np.ascontiguousarray(xs[0]), threads)
