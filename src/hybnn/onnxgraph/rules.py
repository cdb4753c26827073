"""What an encoder graph may be: the ops hybnn's exporter emits, with sizes bounded.

An ONNX graph is a program (loops, branches, custom ops, tensors of any size), and a bundle's
checksum is not a signature, so a forged bundle can hold any of that. Before ONNX Runtime sees
the bytes, :func:`check_graph` parses them (protobuf, :mod:`hybnn.onnxgraph.schema`) and
accepts only a graph of the kind hybnn exports (:mod:`hybnn.bundle.onnx_export`, fp32, and
its static int8 version, :mod:`hybnn.bundle.quantize`):

* nodes of the default ONNX domain whose op is in :data:`EXPORTED_OPS`, with the attributes
  :data:`ATTRIBUTES` names, of plain values; no model functions, no attribute holding a
  graph or a tensor (so no subgraph: no ``Loop``, ``If``, ``Scan``), no training info, no
  sparse or external tensors;
* the weights of every node (:data:`WEIGHT_INPUTS`: a Conv's or Gemm's weight and bias, a
  Reshape's shape, the (de)quantization scales) are constants: initializers, or computed
  from initializers alone. So the images flow down one path and every tensor grows
  linearly with the batch;
* one import of the default opset, a version in :data:`OPSETS`; at most :data:`MAX_NODES`
  nodes (and initializers, and declared values); each initializer holds the data its dims
  declare, at most :data:`MAX_INITIALIZER_BYTES`, checked from the declared dims before
  anything is allocated; the initializers and the constants computed from them (int8
  weights dequantized) at most :data:`MAX_WEIGHT_BYTES`;
* the shapes of one image, inferred node by node (:func:`_infer`, the ONNX operator rules):
  every tensor a fixed shape, the output float32 ``(1, latent_bits)``. The bytes of every
  tensor of one image, plus each Conv's unfolded input (the workspace of ONNX Runtime's CPU
  Conv), and its multiply-adds must fit one run (:data:`MAX_RUN_BYTES`,
  :data:`MAX_RUN_MACS`) and set how many images a run takes (:attr:`CheckedGraph.batch`, at
  most :data:`MAX_RUN_IMAGES`).

ONNX Runtime gets the model as checked: parsed, fields outside the schema dropped, serialized
again. Torch-free, and ``onnx``-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybnn.errors import ArtifactError
from hybnn.onnxgraph.schema import messages

# Every op torch's dynamo exporter and ONNX Runtime's QDQ quantizer emit for an encoder of
# every code layer (latent, conv2, conv3), fp32 and int8 (percentile, min/max, reduce range);
# the attributes they may carry, and the inputs that are weights (never computed from images).
EXPORTED_OPS = frozenset({"Conv", "Gemm", "LeakyRelu", "Reshape", "QuantizeLinear",
                          "DequantizeLinear"})
ATTRIBUTES: dict[str, frozenset[str]] = {
    "Conv": frozenset({"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}),
    "Gemm": frozenset({"alpha", "beta", "transA", "transB"}),
    "LeakyRelu": frozenset({"alpha"}),
    "Reshape": frozenset({"allowzero"}),
    "QuantizeLinear": frozenset({"axis", "saturate"}),
    "DequantizeLinear": frozenset({"axis"}),
}
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "Gemm": (1, 2), "LeakyRelu": (), "Reshape": (1,),
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2),
}
DEFAULT_DOMAINS = ("", "ai.onnx")
OPSETS = range(13, 26)  # the operator semantics the shape rules follow (per-axis Q/DQ: 13)
MAX_INPUTS = 3  # of any allowed op
MAX_NODES = 1000  # and as many initializers, and declared values
MAX_RANK = 8
MAX_ATTRIBUTE_VALUES = 64
MAX_INITIALIZER_BYTES = 256 << 20
MAX_WEIGHT_BYTES = 256 << 20
MAX_RUN_BYTES = 1 << 30
MAX_RUN_MACS = 20 * 10**9
MAX_RUN_IMAGES = 256

# ONNX TensorProto element types an encoder's tensors use: their names, bytes, typed field.
FLOAT, UINT8, INT8, INT32, INT64 = 1, 2, 3, 6, 7
TYPE_NAMES = {FLOAT: "float32", UINT8: "uint8", INT8: "int8", INT32: "int32", INT64: "int64"}
ITEM_BYTES = {FLOAT: 4, UINT8: 1, INT8: 1, INT32: 4, INT64: 8}
_TYPED_FIELD = {FLOAT: "float_data", UINT8: "int32_data", INT8: "int32_data",
                INT32: "int32_data", INT64: "int64_data"}
# AttributeProto types of plain values, and the field holding each.
_ATTRIBUTE_FIELD = {1: "f", 2: "i", 3: "s", 6: "floats", 7: "ints", 8: "strings"}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

Tensor = tuple[int, tuple[int, ...]]  # (element type, dims)


@dataclass(frozen=True)
class CheckedGraph:
    """An accepted encoder graph: the model bytes to run, its cost per image and the images
    one run takes (``batch``)."""

    onnx: bytes
    bytes_per_image: int
    macs_per_image: int
    batch: int


class _Refused(ValueError):
    """Why a node breaks the rules (made one ArtifactError line by :func:`check_graph`)."""


def check_graph(onnx_bytes: bytes, input_name: str, output_name: str,
                input_shape: tuple[int, ...], latent_bits: int,
                where: str = "bundle") -> CheckedGraph:
    """Accept ``onnx_bytes`` as an encoder of float32 images ``(N, *input_shape)`` named
    ``input_name`` to float32 logits ``(N, latent_bits)`` named ``output_name``, or raise one
    :class:`ArtifactError` saying which rule it breaks (see the module docstring)."""
    from google.protobuf.message import DecodeError

    model = messages()["ModelProto"]()
    try:
        model.ParseFromString(onnx_bytes)
        model.DiscardUnknownFields()
        cost = _check(model, input_name, output_name, tuple(input_shape), latent_bits)
    except (DecodeError, RecursionError):
        raise ArtifactError(f"{where}: the encoder is not an ONNX model (its protobuf does "
                            "not parse)") from None
    except _Refused as exc:
        raise ArtifactError(f"{where}: the encoder graph is refused: {exc}") from None
    bytes_per_image, macs = cost
    batch = min(MAX_RUN_IMAGES, MAX_RUN_BYTES // bytes_per_image, MAX_RUN_MACS // max(macs, 1))
    return CheckedGraph(model.SerializeToString(), bytes_per_image, macs, batch)


def _check(model: Any, input_name: str, output_name: str, input_shape: tuple[int, ...],
           latent_bits: int) -> tuple[int, int]:
    graph = model.graph
    if len(model.functions) or len(model.training_info) or len(graph.sparse_initializer):
        raise _Refused("it holds model functions, training info or sparse initializers, which "
                       "an exported encoder never has")
    counts = {"nodes": len(graph.node), "initializers": len(graph.initializer),
              "value infos": len(graph.input) + len(graph.output) + len(graph.value_info)}
    for what, count in counts.items():
        if count > MAX_NODES:
            raise _Refused(f"{count} {what}, more than {MAX_NODES}")
    opsets = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if len(opsets) != 1 or opsets[0] not in OPSETS:
        raise _Refused(f"it imports the default ONNX opset {opsets[:4]}, expected one version "
                       f"in {OPSETS[0]}..{OPSETS[-1]} (the exporter writes 18)")
    _check_values(graph, input_name, output_name, input_shape)
    tensors, values = _initializers(graph)
    for node in graph.node:  # subgraphs first: they are what makes a graph a program
        _check_attributes(node)
    for node in graph.node:
        _check_op(node)
    bytes_per_image, macs = _infer(graph, tensors, values, input_name, input_shape)
    if bytes_per_image > MAX_RUN_BYTES or macs > MAX_RUN_MACS:
        raise _Refused(f"one image takes {bytes_per_image:,} bytes and {macs:,} multiply-adds, "
                       f"more than a run's {MAX_RUN_BYTES:,} and {MAX_RUN_MACS:,}")
    elem, dims = tensors.get(output_name, (0, ()))
    if (elem, dims) != (FLOAT, (1, latent_bits)):
        raise _Refused(f"its output is {TYPE_NAMES.get(elem, 'other')} {dims} for one image, "
                       f"expected float32 (1, {latent_bits})")
    return bytes_per_image, macs


def _short(name: str | bytes) -> str:
    """A name from the graph as an error shows it: quoted, escaped, at most 60 chars."""
    return repr(name[:60])


def _check_values(graph: Any, input_name: str, output_name: str,
                  input_shape: tuple[int, ...]) -> None:
    """One image input (float32, any batch, ``input_shape``) and one output, by name; every
    declared value a tensor."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        kind = value.type
        if not kind.HasField("tensor_type") or any(
                kind.HasField(k) for k in ("sequence_type", "map_type", "optional_type",
                                           "sparse_tensor_type", "opaque_type")):
            raise _Refused(f"value {_short(value.name)} is not a tensor")
    initializers = {i.name for i in graph.initializer}
    inputs = [v.name for v in graph.input if v.name not in initializers]
    outputs = [v.name for v in graph.output]
    if inputs != [input_name] or outputs != [output_name]:
        raise _Refused(f"it must have one input named {input_name!r} and one output named "
                       f"{output_name!r}, it has inputs {[_short(n) for n in inputs[:8]]} and "
                       f"outputs {[_short(n) for n in outputs[:8]]}")
    image = next(v for v in graph.input if v.name == input_name).type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else "batch" for d in image.shape.dim]
    if image.elem_type != FLOAT or dims[:1] != ["batch"] or dims[1:] != list(input_shape):
        raise _Refused(f"its input is {TYPE_NAMES.get(image.elem_type, 'other')} {dims}, "
                       f"expected float32 {['batch', *input_shape]}")


def _initializers(graph: Any) -> tuple[dict[str, Tensor], dict[str, tuple[int, ...]]]:
    """Each initializer's (type, dims), checked against its data and the limits, before any
    of it is allocated; and the values of the int64 ones (a Reshape's shape)."""
    tensors: dict[str, Tensor] = {}
    values: dict[str, tuple[int, ...]] = {}
    for init in graph.initializer:
        name = _short(init.name)
        if init.data_location == _EXTERNAL or len(init.external_data) or init.HasField("segment"):
            raise _Refused(f"initializer {name} points at external data or is a segment")
        if init.data_type not in ITEM_BYTES:
            raise _Refused(f"initializer {name} has element type {init.data_type}, not one of "
                           f"{', '.join(TYPE_NAMES.values())}")
        dims = tuple(int(d) for d in init.dims)
        if len(dims) > MAX_RANK or any(d < 0 for d in dims):
            raise _Refused(f"initializer {name} has dims {dims[:MAX_RANK + 1]}")
        item = ITEM_BYTES[init.data_type]
        size = math.prod(dims) * item
        if size > MAX_INITIALIZER_BYTES:
            raise _Refused(f"initializer {name} declares {size:,} bytes (dims {dims}), more "
                           f"than {MAX_INITIALIZER_BYTES:,}")
        raw = init.HasField("raw_data")
        stored = (len(init.raw_data) if raw  # one copy of the bytes
                  else len(getattr(init, _TYPED_FIELD[init.data_type])) * item)
        if stored != size or (raw and any(len(getattr(init, f)) for f in _TYPED_FIELD.values())):
            raise _Refused(f"initializer {name} declares {size:,} bytes but holds {stored:,}")
        if init.name in tensors:
            raise _Refused(f"two initializers are named {name}")
        tensors[init.name] = (init.data_type, dims)
        if init.data_type == INT64 and len(dims) == 1 and dims[0] <= MAX_RANK:
            values[init.name] = tuple(int(v) for v in (
                np.frombuffer(init.raw_data, "<i8") if raw else init.int64_data))
    return tensors, values


def _check_attributes(node: Any) -> None:
    """Attributes of plain values only: no subgraph (control flow), no tensor."""
    for attr in node.attribute:
        if (attr.type not in _ATTRIBUTE_FIELD or attr.ref_attr_name
                or any(attr.HasField(k) for k in ("g", "t", "sparse_tensor", "tp"))
                or any(len(getattr(attr, k)) for k in ("graphs", "tensors", "sparse_tensors",
                                                      "type_protos"))):
            raise _Refused(f"node {_short(node.name)} (op {_short(node.op_type)}) has "
                           f"attribute {_short(attr.name)} holding a graph or a tensor (control "
                           "flow or a constant), which an exported encoder never has")
        if max(len(attr.ints), len(attr.floats), len(attr.strings)) > MAX_ATTRIBUTE_VALUES:
            raise _Refused(f"node {_short(node.name)} (op {_short(node.op_type)}) has an "
                           f"attribute with more than {MAX_ATTRIBUTE_VALUES} values")


def _check_op(node: Any) -> None:
    """Op and domain allowed, attributes known, once each."""
    op = _short(node.op_type)
    if node.domain not in DEFAULT_DOMAINS:
        raise _Refused(f"node {_short(node.name)} is op {op} of domain {_short(node.domain)}: "
                       "an exported encoder uses the default ONNX domain only")
    if node.op_type not in EXPORTED_OPS:
        raise _Refused(f"node {_short(node.name)} is op {op}, which hybnn's exporter never "
                       f"emits (allowed: {', '.join(sorted(EXPORTED_OPS))})")
    if len(node.input) > MAX_INPUTS or len(node.output) != 1:
        raise _Refused(f"node {_short(node.name)} (op {op}) has {len(node.input)} inputs and "
                       f"{len(node.output)} outputs")
    names = [a.name for a in node.attribute]
    unknown = sorted(set(names) - ATTRIBUTES[node.op_type])
    if unknown or len(set(names)) != len(names):
        raise _Refused(f"node {_short(node.name)} (op {op}) has attributes "
                       f"{[_short(n) for n in names[:8]]}; allowed, once each: "
                       f"{sorted(ATTRIBUTES[node.op_type])}")


def _infer(graph: Any, tensors: dict[str, Tensor], values: dict[str, tuple[int, ...]],
           input_name: str, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """Shapes of one image, node by node (into ``tensors``); its bytes and multiply-adds."""
    constants = set(tensors)
    weights = sum(math.prod(d) * ITEM_BYTES[t] for t, d in tensors.values())
    tensors[input_name] = (FLOAT, (1, *input_shape))
    total, macs = 4 * math.prod(input_shape), 0
    for node in graph.node:
        where = f"node {_short(node.name)} (op {node.op_type})"
        if len(node.output) != 1 or not node.output[0] or node.output[0] in tensors:
            raise _Refused(f"{where} must have one output of a new name")
        inputs: list[Tensor | None] = []
        for i, name in enumerate(node.input):
            if name and name not in tensors:
                raise _Refused(f"{where} reads {_short(name)} before any node writes it")
            if i in WEIGHT_INPUTS[node.op_type] and name and name not in constants:
                raise _Refused(f"input {i} of {where} is a weight but is computed from the "
                               "images")
            inputs.append(tensors[name] if name else None)
        attrs = {a.name: getattr(a, _ATTRIBUTE_FIELD[a.type]) for a in node.attribute}
        try:
            out, node_macs, workspace = _RULES[node.op_type](inputs, attrs, node, values)
        except _Refused as exc:
            raise _Refused(f"{where}: {exc}") from None
        if len(out[1]) > MAX_RANK:
            raise _Refused(f"{where}: {len(out[1])} dims, more than {MAX_RANK}")
        tensors[node.output[0]] = out
        size = math.prod(out[1]) * ITEM_BYTES[out[0]]
        if all(name in constants for name in node.input if name):
            constants.add(node.output[0])
            weights += size
        else:
            total += size + workspace
            macs += node_macs
        if weights > MAX_WEIGHT_BYTES:
            raise _Refused(f"its weights, dequantized, take more than {MAX_WEIGHT_BYTES:,} "
                           "bytes")
    return total, macs


Rule = Callable[[list["Tensor | None"], dict[str, Any], Any, dict[str, tuple[int, ...]]],
                tuple[Tensor, int, int]]


def _arity(inputs: list[Tensor | None], low: int, high: int) -> list[Tensor | None]:
    """``inputs`` padded to ``high`` with None; the first ``low`` must be there."""
    if not low <= len(inputs) <= high or any(t is None for t in inputs[:low]):
        raise _Refused(f"{len(inputs)} inputs, expected {low} to {high}")
    return [*inputs, *[None] * (high - len(inputs))]


def _need(tensor: Tensor | None, types: tuple[int, ...], what: str,
          rank: int | None = None) -> tuple[int, ...]:
    if tensor is None or tensor[0] not in types or (rank is not None and len(tensor[1]) != rank):
        raise _Refused(f"{what} is {tensor}, expected {'/'.join(TYPE_NAMES[t] for t in types)}"
                       + (f" of rank {rank}" if rank is not None else ""))
    return tensor[1]


def _conv(inputs: list[Tensor | None], attrs: dict[str, Any], node: Any,
          values: dict[str, tuple[int, ...]]) -> tuple[Tensor, int, int]:
    x, w, b = _arity(inputs, 2, 3)
    xd = _need(x, (FLOAT,), "its input")
    wd = _need(w, (FLOAT,), "its weight", len(xd))
    n = len(xd) - 2
    group = attrs.get("group", 1)
    kernel = list(attrs.get("kernel_shape", wd[2:]))
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = list(attrs.get("pads", [0] * 2 * n))
    if (n < 1 or attrs.get("auto_pad", b"NOTSET") != b"NOTSET" or group < 1
            or kernel != list(wd[2:]) or len(strides) != n or len(dilations) != n
            or len(pads) != 2 * n or min(strides + dilations) < 1 or min(pads) < 0
            or xd[1] != wd[1] * group or wd[0] % group):
        raise _Refused(f"input {xd}, weight {wd} and attributes {attrs} do not agree")
    if b is not None and _need(b, (FLOAT,), "its bias") != (wd[0],):
        raise _Refused(f"its bias is {b[1]}, expected ({wd[0]},)")
    spatial = []
    for i in range(n):
        span = xd[2 + i] + pads[i] + pads[n + i] - dilations[i] * (kernel[i] - 1) - 1
        if span < 0:
            raise _Refused(f"its kernel does not fit its input {xd}")
        spatial.append(span // strides[i] + 1)
    unfolded = math.prod(wd[1:]) * math.prod(spatial)  # per group; ORT reuses the buffer
    return (FLOAT, (xd[0], wd[0], *spatial)), unfolded * wd[0] * xd[0], 4 * unfolded


def _gemm(inputs: list[Tensor | None], attrs: dict[str, Any], node: Any,
          values: dict[str, tuple[int, ...]]) -> tuple[Tensor, int, int]:
    a, b, c = _arity(inputs, 2, 3)
    ad, bd = _need(a, (FLOAT,), "A", 2), _need(b, (FLOAT,), "B", 2)
    if attrs.get("transA", 0) not in (0, 1) or attrs.get("transB", 0) not in (0, 1):
        raise _Refused("transA and transB must be 0 or 1")
    m, k = ad[::-1] if attrs.get("transA", 0) else ad
    k2, n = bd[::-1] if attrs.get("transB", 0) else bd
    if k != k2:
        raise _Refused(f"A {ad} and B {bd} do not multiply")
    if c is not None:
        cd = _need(c, (FLOAT,), "C")
        rows, cols = ((1, 1, *cd)[-2:]) if len(cd) <= 2 else (0, 0)
        if rows not in (1, m) or cols not in (1, n):
            raise _Refused(f"C {cd} does not broadcast to {(m, n)}")
    return (FLOAT, (m, n)), m * n * k, 0


def _leaky_relu(inputs: list[Tensor | None], attrs: dict[str, Any], node: Any,
                values: dict[str, tuple[int, ...]]) -> tuple[Tensor, int, int]:
    (x,) = _arity(inputs, 1, 1)
    return (FLOAT, _need(x, (FLOAT,), "its input")), 0, 0


def _reshape(inputs: list[Tensor | None], attrs: dict[str, Any], node: Any,
             values: dict[str, tuple[int, ...]]) -> tuple[Tensor, int, int]:
    data, _ = _arity(inputs, 2, 2)
    elem, dims = data or (0, ())
    shape, allowzero = values.get(node.input[1]), attrs.get("allowzero", 0)
    if shape is None or allowzero not in (0, 1):
        raise _Refused(f"its shape must be a 1-d int64 initializer of at most {MAX_RANK} "
                       "values")
    out: list[int] = []
    for i, s in enumerate(shape):
        if s < -1 or (s == 0 and not allowzero and i >= len(dims)):
            raise _Refused(f"shape {shape} is not one for data {dims}")
        out.append(dims[i] if s == 0 and not allowzero else s)
    count = math.prod(dims)
    if -1 in out:
        known = math.prod(s for s in out if s != -1)
        if out.count(-1) > 1 or known == 0 or count % known:
            raise _Refused(f"shape {shape} is not one for data {dims}")
        out[out.index(-1)] = count // known
    if math.prod(out) != count:
        raise _Refused(f"shape {shape} does not hold data {dims}")
    return (elem, tuple(out)), 0, 0


def _scales(x: tuple[int, ...], scale: Tensor | None, zero: Tensor | None,
            attrs: dict[str, Any]) -> None:
    """Per-tensor (one value) or per-axis (``x.shape[axis]`` values) scale and zero point."""
    sd = _need(scale, (FLOAT,), "its scale")
    axis = attrs.get("axis", 1)
    per_axis = (len(sd) == 1 and -len(x) <= axis < len(x) and sd[0] == x[axis])
    if not (math.prod(sd) == 1 and len(sd) <= 1) and not per_axis:
        raise _Refused(f"its scale {sd} is neither one value nor one per axis {axis} of {x}")
    if zero is not None and zero[1] != sd:
        raise _Refused(f"its zero point {zero[1]} and scale {sd} differ in shape")


def _quantize(inputs: list[Tensor | None], attrs: dict[str, Any], node: Any,
              values: dict[str, tuple[int, ...]]) -> tuple[Tensor, int, int]:
    x, scale, zero = _arity(inputs, 2, 3)
    xd = _need(x, (FLOAT,), "its input")
    _scales(xd, scale, zero, attrs)
    out = UINT8 if zero is None else zero[0]
    if out not in (UINT8, INT8):
        raise _Refused(f"its zero point is {TYPE_NAMES[out]}, expected uint8/int8")
    return (out, xd), 0, 0


def _dequantize(inputs: list[Tensor | None], attrs: dict[str, Any], node: Any,
                values: dict[str, tuple[int, ...]]) -> tuple[Tensor, int, int]:
    x, scale, zero = _arity(inputs, 2, 3)
    xd = _need(x, (UINT8, INT8, INT32), "its input")
    _scales(xd, scale, zero, attrs)
    if zero is not None and x is not None and zero[0] != x[0]:
        raise _Refused("its zero point and input differ in type")
    return (FLOAT, xd), 0, 0


_RULES: dict[str, Rule] = {
    "Conv": _conv, "Gemm": _gemm, "LeakyRelu": _leaky_relu, "Reshape": _reshape,
    "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize,
}
