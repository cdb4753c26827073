"""The part of ONNX's protobuf schema (``onnx/onnx.proto``) an encoder graph may use.

:mod:`hybnn.onnxgraph.rules` parses a graph with these classes, built at first use with
the ``protobuf`` runtime that ONNX Runtime itself depends on: no ``onnx`` package on the
runtime's path (not a runtime dependency, and ``import onnx`` takes 1-2 s). Field numbers
and wire types are ONNX's (a test compares them with ``onnx.onnx_ml_pb2`` where ``onnx`` is
installed). Fields hybnn refuses (model functions, subgraphs, sparse and external tensors,
non-tensor types) are declared as plain bytes, enough to see that they are there; fields not
declared at all are dropped by ``DiscardUnknownFields``, so ONNX Runtime never sees them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

# (name, number, type, repeated, oneof); type: a scalar below or a message of this schema.
Field = tuple[str, int, str, bool, str | None]
_SCALARS = {"double": 1, "float": 2, "int64": 3, "uint64": 4, "int32": 5, "string": 9,
            "bytes": 12}


def _f(name: str, number: int, kind: str, repeated: bool = False,
       oneof: str | None = None) -> Field:
    return (name, number, kind, repeated, oneof)


SCHEMA: dict[str, list[Field]] = {
    "ModelProto": [
        _f("ir_version", 1, "int64"), _f("opset_import", 8, "OperatorSetIdProto", True),
        _f("graph", 7, "GraphProto"), _f("training_info", 20, "bytes", True),
        _f("functions", 25, "bytes", True),
    ],
    "OperatorSetIdProto": [_f("domain", 1, "string"), _f("version", 2, "int64")],
    "GraphProto": [
        _f("node", 1, "NodeProto", True), _f("name", 2, "string"),
        _f("initializer", 5, "TensorProto", True), _f("sparse_initializer", 15, "bytes", True),
        _f("input", 11, "ValueInfoProto", True), _f("output", 12, "ValueInfoProto", True),
        _f("value_info", 13, "ValueInfoProto", True),
    ],
    "NodeProto": [
        _f("input", 1, "string", True), _f("output", 2, "string", True),
        _f("name", 3, "string"), _f("op_type", 4, "string"), _f("domain", 7, "string"),
        _f("attribute", 5, "AttributeProto", True),
    ],
    "AttributeProto": [
        _f("name", 1, "string"), _f("ref_attr_name", 21, "string"), _f("type", 20, "int32"),
        _f("f", 2, "float"), _f("i", 3, "int64"), _f("s", 4, "bytes"),
        _f("floats", 7, "float", True), _f("ints", 8, "int64", True),
        _f("strings", 9, "bytes", True), _f("t", 5, "bytes"), _f("g", 6, "bytes"),
        _f("sparse_tensor", 22, "bytes"), _f("tp", 14, "bytes"),
        _f("tensors", 10, "bytes", True), _f("graphs", 11, "bytes", True),
        _f("sparse_tensors", 23, "bytes", True), _f("type_protos", 15, "bytes", True),
    ],
    "TensorProto": [
        _f("dims", 1, "int64", True), _f("data_type", 2, "int32"), _f("segment", 3, "bytes"),
        _f("float_data", 4, "float", True), _f("int32_data", 5, "int32", True),
        _f("string_data", 6, "bytes", True), _f("int64_data", 7, "int64", True),
        _f("name", 8, "string"), _f("raw_data", 9, "bytes"),
        _f("double_data", 10, "double", True), _f("uint64_data", 11, "uint64", True),
        _f("external_data", 13, "bytes", True), _f("data_location", 14, "int32"),
    ],
    "ValueInfoProto": [_f("name", 1, "string"), _f("type", 2, "TypeProto")],
    "TypeProto": [
        _f("tensor_type", 1, "TensorType"), _f("sequence_type", 4, "bytes"),
        _f("map_type", 5, "bytes"), _f("optional_type", 9, "bytes"),
        _f("sparse_tensor_type", 8, "bytes"), _f("opaque_type", 7, "bytes"),
    ],
    # onnx's TypeProto.Tensor, TensorShapeProto and TensorShapeProto.Dimension
    "TensorType": [_f("elem_type", 1, "int32"), _f("shape", 2, "TensorShapeProto")],
    "TensorShapeProto": [_f("dim", 1, "Dimension", True)],
    "Dimension": [_f("dim_value", 1, "int64", oneof="value"),
                  _f("dim_param", 2, "string", oneof="value")],
}
PACKAGE = "hybnn.onnx_subset"


@cache
def messages() -> dict[str, Any]:
    """The message classes of :data:`SCHEMA`, by name (built once, in a private pool)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file = descriptor_pb2.FileDescriptorProto(name="hybnn_onnx_subset.proto",
                                              package=PACKAGE, syntax="proto2")
    for name, fields in SCHEMA.items():
        message = file.message_type.add(name=name)
        oneofs: list[str] = []
        for field_name, number, kind, repeated, oneof in fields:
            field = message.field.add(name=field_name, number=number)
            field.label = field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type = field.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
            if oneof is not None:
                if oneof not in oneofs:
                    oneofs.append(oneof)
                    message.oneof_decl.add(name=oneof)
                field.oneof_index = oneofs.index(oneof)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in SCHEMA}
