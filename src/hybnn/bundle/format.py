"""The bundle file: encoder (ONNX) + packed BNN head + label space in one safetensors file.

Same container as the engine file (:mod:`hybnn.engine.format`): safetensors arrays, a JSON
header in the metadata string ``"hybnn"`` and a SHA-256 checksum of header and arrays in
``"fingerprint"``. The header has ``kind: "bundle"``, ``format_version: 1`` and

* ``input``: ``{"channels", "height", "width", "dtype": "float32", "layout": "NCHW",
  "range": [0.0, 1.0]}``;
* ``encoder``: the array holding the ONNX model bytes (uint8), its input and output names,
  ``latent_bits``, the encoder ``fingerprint``, ``opset``, ``precision`` (``fp32`` or
  ``int8``) and, for int8, how it was calibrated (``quantization``);
* ``head``: an engine header (``kind: "engine"``) whose arrays sit beside the ONNX array;
* ``label_space``: what each output index means (:class:`~hybnn.data.labels.LabelSpace`).

The checksum detects corruption; it is not a signature, so :func:`decode` checks every part
and that the parts agree: the head was trained on codes of this very encoder (its
``encoder_fingerprint``) and reads as many bits as the encoder writes. The ONNX graph itself
is data, not a program: :func:`decode` accepts only a graph of the ops hybnn exports, with
bounded sizes (:mod:`hybnn.onnxgraph.rules`), and ONNX Runtime checks it again when a
session is made (:mod:`hybnn.runtime`); with ``check_onnx=True`` ``onnx.checker`` checks it
too (slow to import: ~2 s, so not on the runtime's path).
Torch-free.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybnn.artifacts import atomic_write
from hybnn.data.labels import LabelSpace
from hybnn.engine import format as engine_fmt
from hybnn.engine import legacy_hybe
from hybnn.errors import ArtifactError, FingerprintMismatch
from hybnn.onnxgraph import MAX_BITS, MAX_SIDE
from hybnn.onnxgraph.rules import check_graph

KIND = "bundle"
FORMAT_VERSION = 1
ONNX_ARRAY = "encoder.onnx"
PRECISIONS = ("fp32", "int8")
DTYPES = (*engine_fmt.DTYPES, np.dtype("u1"))  # the engine's, and bytes for the ONNX model
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BundleParts:
    """A validated bundle: the header, the ONNX bytes and the head's engine header + arrays."""

    header: dict[str, Any]
    onnx: bytes
    head_header: dict[str, Any]
    head_arrays: dict[str, np.ndarray]
    label_space: LabelSpace
    input_shape: tuple[int, int, int]
    latent_bits: int
    fingerprint: str

    @property
    def encoder(self) -> dict[str, Any]:
        return dict(self.header["encoder"])


def write(path: str | os.PathLike[str], header: dict[str, Any], onnx_bytes: bytes,
          head_arrays: dict[str, np.ndarray]) -> Path:
    """Write a bundle atomically after checking it decodes (nothing invalid is written);
    an existing file is replaced only if it is an earlier export."""
    if ONNX_ARRAY in head_arrays:
        raise ValueError(f"head array name {ONNX_ARRAY!r} is reserved")
    arrays = {**head_arrays, ONNX_ARRAY: np.frombuffer(onnx_bytes, dtype=np.uint8)}
    data = engine_fmt.encode(header, arrays, DTYPES)
    decode(data, str(path))
    engine_fmt.require_replaceable(path, "bundle")
    return atomic_write(path, lambda p: p.write_bytes(data))


def read(path: str | os.PathLike[str], check_onnx: bool = False) -> BundleParts:
    """Read and validate a bundle file (``check_onnx``: also run ``onnx.checker``)."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory, not a bundle file: write a bundle with "
                            "`hybnn export HEAD_DIR --encoder ENCODER_DIR --out FILE`")
    return decode(engine_fmt.read_bytes(path, "bundle"), str(path), check_onnx)


def decode(data: bytes, where: str = "bundle", check_onnx: bool = False) -> BundleParts:
    """Validate bundle bytes; every failure is an ArtifactError naming what is wrong."""
    if data[: len(legacy_hybe.MAGIC)] == legacy_hybe.MAGIC:
        raise ArtifactError(f"{where} is a version-1 .hybe engine file (a packed BNN without "
                            "its encoder), not a bundle: load it with hybnn.engine.load, or "
                            "write a bundle with `hybnn export HEAD_DIR --encoder ENCODER_DIR`")
    meta, header = engine_fmt.open_container(data, where, "bundle")
    kind = header.get("kind")
    if kind == engine_fmt.KIND:
        raise ArtifactError(f"{where} is a hybnn engine file (a packed model without an "
                            "encoder), not a bundle: load it with hybnn.engine.load")
    if kind != KIND:
        raise ArtifactError(f"{where} does not describe a hybnn bundle (kind {kind!r})")
    engine_fmt.check_version(header, where, FORMAT_VERSION)
    arrays, digest = engine_fmt.container_arrays(data, meta, where, DTYPES)
    try:
        parts = _parts(header, arrays, digest)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{where} is invalid: {exc}") from None
    except FingerprintMismatch as exc:
        raise FingerprintMismatch(f"{where}: {exc}") from None
    enc = parts.encoder
    check_graph(parts.onnx, enc["input_name"], enc["output_name"], parts.input_shape,
                parts.latent_bits, where)
    if check_onnx:
        check_onnx_model(parts, where)
    return parts


def _int(value: Any, what: str, high: int) -> int:
    if type(value) is not int or not 1 <= value <= high:
        raise ValueError(f"{what} must be an integer in [1, {high}], got {value!r}")
    return value


def _dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{key!r} must be a JSON object")
    return value


def _parts(header: dict[str, Any], arrays: dict[str, np.ndarray], digest: str) -> BundleParts:
    inp, enc, head = _dict(header, "input"), _dict(header, "encoder"), _dict(header, "head")
    shape = (_int(inp.get("channels"), "input channels", MAX_SIDE),
             _int(inp.get("height"), "input height", MAX_SIDE),
             _int(inp.get("width"), "input width", MAX_SIDE))
    if inp.get("dtype") != "float32" or inp.get("layout") != "NCHW":
        raise ValueError("the input must be float32 NCHW images")
    if inp.get("range") != [0.0, 1.0]:
        raise ValueError(f"the input range must be [0.0, 1.0], got {inp.get('range')!r}")
    bits = _int(enc.get("latent_bits"), "encoder latent_bits", MAX_BITS)
    if enc.get("precision") not in PRECISIONS:
        raise ValueError(f"encoder precision must be one of {PRECISIONS}")
    for key in ("input_name", "output_name"):
        if not isinstance(enc.get(key), str) or not enc[key]:
            raise ValueError(f"encoder {key} must be a non-empty string")
    if enc.get("array") != ONNX_ARRAY:
        raise ValueError(f"the encoder must be stored in array {ONNX_ARRAY!r}")
    raw = arrays.get(ONNX_ARRAY)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1 or raw.size == 0:
        raise ValueError(f"array {ONNX_ARRAY!r} must be non-empty uint8 bytes")
    fp = enc.get("fingerprint")
    if not isinstance(fp, str) or not _HEX64.fullmatch(fp):
        raise ValueError("encoder fingerprint must be 64 lowercase hex digits")
    if head.get("kind") != engine_fmt.KIND:
        raise ValueError("'head' must be an engine header (kind 'engine')")
    engine_fmt.check_version(head, "the bundle's head", engine_fmt.FORMAT_VERSION)
    head_in = head.get("input")
    if not isinstance(head_in, dict) or head_in.get("kind") != "rows":
        raise ValueError("the head must be a BNN head on codes (input kind 'rows')")
    if head_in.get("bits") != bits:
        raise ValueError(f"the encoder writes {bits} bits but the head reads "
                         f"{head_in.get('bits')!r}")
    source = (head.get("metadata") or {}).get("source") or {}
    trained_on = source.get("encoder_fingerprint") if isinstance(source, dict) else None
    if trained_on != fp:
        raise FingerprintMismatch(f"the head was trained on codes of encoder "
                                  f"{str(trained_on)[:12]}, but the bundle's encoder is "
                                  f"{fp[:12]}")
    num_classes = head.get("num_classes")
    if type(num_classes) is not int:
        raise ValueError("the head lacks num_classes")
    if header.get("label_space") is None:
        raise ValueError("the bundle lacks a label space")
    try:
        space = LabelSpace.from_json(header["label_space"], num_classes)
    except ArtifactError as exc:
        raise ValueError(str(exc)) from None
    head_arrays = {k: v for k, v in arrays.items() if k != ONNX_ARRAY}
    return BundleParts(header, raw.tobytes(), head, head_arrays, space, shape, bits, digest)


def check_onnx_model(parts: BundleParts, where: str = "bundle") -> None:
    """``onnx.checker`` (full check) of the encoder, and its input/output against the spec."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(parts.onnx)
        onnx.checker.check_model(model, full_check=True)
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{where}: the encoder is not a valid ONNX model: {first}") from None
    enc = parts.encoder
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    want = {enc["input_name"]: (onnx.TensorProto.FLOAT, parts.input_shape),
            enc["output_name"]: (onnx.TensorProto.FLOAT, (parts.latent_bits,))}
    for kind, values in (("input", inputs), ("output", list(graph.output))):
        if len(values) != 1 or values[0].name not in want:
            raise ArtifactError(f"{where}: the encoder must have one {kind} named as its header "
                                f"says, it has {[v.name for v in values]}")
        elem, dims = want[values[0].name]
        tensor = values[0].type.tensor_type
        got = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if tensor.elem_type != elem or got[1:] != list(dims) or got[:1] != [None]:
            raise ArtifactError(f"{where}: the encoder's {kind} is {got} (elem type "
                                f"{tensor.elem_type}), expected [batch, "
                                f"{', '.join(map(str, dims))}] float32")
