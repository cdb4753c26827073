"""The int8 encoder (kind ``int8-encoder``): the frozen VAE's encoder as a static int8 ONNX graph.

``hybnn quantize`` writes it (:func:`save`, kind ``int8-encoder``, saved with
:func:`hybnn.artifacts.save_artifact`): the ONNX bytes as the one uint8 array ``onnx``, the
shapes in ``config``, the float VAE's fingerprint (``quantized_from``) and how the graph was
calibrated (``quantization``) beside them. Its own fingerprint (SHA-256 of that file) is what
code stores extracted with it record, so a head trained on int8 codes names this very graph,
and ``hybnn export HEAD --encoder INT8_DIR`` bundles the graph the head was trained with,
byte for byte, instead of quantizing the VAE again.

The fingerprint is a checksum, not a signature: :func:`load_int8_graph` checks every field
of a file with a valid hash and that the graph is one hybnn exports
(:mod:`hybnn.onnxgraph.rules`); ONNX Runtime checks it again when a session is made
(:class:`Int8Encoder`, ONNX Runtime on the CPU).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hybnn.artifacts import load_artifact, save_artifact
from hybnn.encoders.base import ENCODE_BATCH, EncoderGraph, EncoderIdentity, check_images
from hybnn.errors import ArtifactError, DataError
from hybnn.models.names import INT8_ENCODER
from hybnn.onnxgraph import INPUT_NAME, MAX_BITS, MAX_SIDE, OPSET, OUTPUT_NAME
from hybnn.onnxgraph.rules import check_graph
from hybnn.onnxgraph.session import OnnxEncoder

KIND = INT8_ENCODER
LABEL = "int8 encoder"  # how messages name this kind
MADE = "quantized from"  # how it comes from the encoder it was made from
ONNX_TENSOR = "onnx"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Int8Graph:
    """A validated int8-encoder artifact: the graph's bytes and what identifies them."""

    onnx: bytes
    fingerprint: str
    meta: dict[str, Any]
    latent_bits: int
    channels: int
    image_size: tuple[int, int]
    input_name: str
    output_name: str

    @property
    def quantized_from(self) -> str:
        """The fingerprint of the float VAE this graph was quantized from."""
        return str(self.meta["quantized_from"])

    @property
    def identity(self) -> EncoderIdentity:
        return EncoderIdentity(self.fingerprint, self.latent_bits, self.channels,
                               self.image_size, self.meta.get("data"),
                               self.meta.get("pretrain"), self.quantized_from)

    @property
    def graph(self) -> EncoderGraph:
        return EncoderGraph(self.onnx, "int8", self.meta.get("quantization"))


def save(directory: str | os.PathLike[str], graph: EncoderGraph,
                    encoder: EncoderIdentity, extra: dict[str, Any] | None = None) -> Int8Graph:
    """Save the int8 ``graph`` of the float ``encoder`` as an int8-encoder artifact."""
    if graph.precision != "int8":
        raise ValueError(f"an int8-encoder artifact holds an int8 graph, not {graph.precision}")
    h, w = encoder.image_size
    config = {"latent_bits": encoder.latent_bits, "in_channels": encoder.channels,
              "image_size": [h, w], "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
              "opset": OPSET}
    raw = torch.from_numpy(np.frombuffer(graph.onnx, dtype=np.uint8).copy())
    meta = save_artifact(directory, KIND, {ONNX_TENSOR: raw}, config, {
        **(extra or {}), "quantized_from": encoder.fingerprint,
        "quantization": graph.quantization, "data": encoder.data, "pretrain": encoder.pretrain,
        "bit_rule": "bit = logit >= 0"})
    return _graph(graph.onnx, meta, str(directory))


def load_int8_graph(directory: str | os.PathLike[str]) -> Int8Graph:
    """Load and validate an int8-encoder artifact; every defect one :class:`ArtifactError`."""
    tensors, meta = load_artifact(directory, KIND)
    if set(tensors) != {ONNX_TENSOR}:
        raise ArtifactError(f"int8 encoder in {directory} must hold one array {ONNX_TENSOR!r}, "
                            f"it holds {sorted(tensors)[:8]}")
    raw = tensors[ONNX_TENSOR]
    if raw.dtype != torch.uint8 or raw.ndim != 1 or raw.numel() == 0:
        raise ArtifactError(f"int8 encoder in {directory}: array {ONNX_TENSOR!r} must be "
                            f"non-empty uint8 bytes, got {raw.dtype} {tuple(raw.shape)}")
    return _graph(raw.numpy().tobytes(), meta, str(directory))


def _graph(onnx: bytes, meta: dict[str, Any], where: str) -> Int8Graph:
    config = meta.get("config")
    if not isinstance(config, dict):
        raise ArtifactError(f"int8 encoder in {where}: metadata lacks a config")

    def count(key: str, value: Any, top: int) -> int:
        if type(value) is not int or not 1 <= value <= top:
            raise ArtifactError(f"int8 encoder in {where}: {key} must be an integer in "
                                f"1..{top}, got {value!r}")
        return value

    size = config.get("image_size")
    if not isinstance(size, list) or len(size) != 2:
        raise ArtifactError(f"int8 encoder in {where}: image_size must be [height, width]")
    names = [config.get("input_name"), config.get("output_name")]
    if not all(isinstance(n, str) and n for n in names) or names[0] == names[1]:
        raise ArtifactError(f"int8 encoder in {where}: input_name and output_name must be two "
                            "different non-empty strings")
    if not _SHA256.match(str(meta.get("quantized_from"))):
        raise ArtifactError(f"int8 encoder in {where} does not record the fingerprint of the "
                            "encoder it was quantized from")
    if meta.get("quantization") is not None and not isinstance(meta["quantization"], dict):
        raise ArtifactError(f"int8 encoder in {where}: quantization must be a JSON object")
    graph = Int8Graph(onnx, str(meta["fingerprint"]), meta,
                      count("latent_bits", config.get("latent_bits"), MAX_BITS),
                      count("in_channels", config.get("in_channels"), MAX_SIDE),
                      (count("image height", size[0], MAX_SIDE),
                       count("image width", size[1], MAX_SIDE)),
                      str(names[0]), str(names[1]))
    check_graph(onnx, graph.input_name, graph.output_name,
                (graph.channels, *graph.image_size), graph.latent_bits, f"int8 encoder in {where}")
    return graph


class Int8Encoder:
    """Images (N, C, H, W) float32 in [0, 1] -> bool codes (N, latent_bits), bit = logit >= 0,
    in ONNX Runtime on the CPU (``threads`` intra-op threads)."""

    KIND = KIND
    LABEL = LABEL
    MADE = MADE

    def __init__(self, graph: Int8Graph, threads: int = 1, where: str = "int8 encoder") -> None:
        self.graph = graph
        self.fingerprint: str = graph.fingerprint
        self.meta: dict[str, Any] = graph.meta
        self.session = OnnxEncoder(graph.onnx, graph.input_name, graph.output_name,
                                   (graph.channels, *graph.image_size), graph.latent_bits,
                                   threads, where)

    @property
    def latent_bits(self) -> int:
        return self.graph.latent_bits

    @property
    def channels(self) -> int:
        return self.graph.channels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.graph.image_size

    @property
    def derived_from(self) -> str:
        return self.graph.quantized_from

    def encode(self, images: np.ndarray, batch_size: int = ENCODE_BATCH) -> np.ndarray:
        check_images(images, self.channels, self.image_size)
        return self.session.codes(images, batch_size)


def load(directory: str | os.PathLike[str], device: str = "cpu",
         threads: int | None = None) -> Int8Encoder:
    """Load, validate and open an int8 encoder: ONNX Runtime on the CPU, ``threads`` threads
    (default torch's)."""
    if device.split(":")[0] != "cpu":
        raise DataError(f"{directory} is an int8 encoder: it runs on the CPU in ONNX Runtime, "
                        f"not on {device}")
    return Int8Encoder(load_int8_graph(directory), threads or torch.get_num_threads(),
                       f"int8 encoder {directory}")
