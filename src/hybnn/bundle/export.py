"""Build a bundle from a trained BNN head and its encoder (torch side; see :mod:`.format`)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from hybnn.bundle import format as fmt
from hybnn.bundle.encoder_graph import (
    CALIBRATION_SAMPLES,
    CALIBRATION_SEED,
    encoder_graph,
)
from hybnn.data.labels import LabelSpace
from hybnn.encoders import EncoderGraph, EncoderIdentity, open_encoder, require_same_encoder
from hybnn.encoders.distilled import DistilledEncoder
from hybnn.encoders.int8 import Int8Encoder
from hybnn.encoders.vae import VaeEncoder
from hybnn.engine.export import engine_header, source_metadata
from hybnn.errors import ArtifactError, FingerprintMismatch
from hybnn.models.bnn_head import BNNHead
from hybnn.models.io import load_model
from hybnn.onnxgraph import INPUT_NAME, OPSET, OUTPUT_NAME


def build_bundle(head: nn.Module, head_meta: dict[str, Any],
                 encoder: VaeEncoder | EncoderIdentity, graph: EncoderGraph,
                 out: str | os.PathLike[str], source: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Write the bundle of ``head`` (with metadata ``head_meta``) and the encoder ``graph``
    (a float VAE ``encoder``, or the identity of an int8-encoder artifact); its header."""
    from hybnn import __version__

    ident = encoder if isinstance(encoder, EncoderIdentity) else EncoderIdentity.of(encoder)
    if not isinstance(head, BNNHead):
        raise ArtifactError(f"a bundle holds a BNN head on codes, not a {type(head).__name__} "
                            "(export it alone: `hybnn export MODEL --out FILE`)")
    trained_on = head_meta.get("encoder_fingerprint")
    if trained_on != ident.fingerprint:
        raise FingerprintMismatch(f"the head was trained on codes of encoder "
                                  f"{str(trained_on)[:12]}, but the encoder given is "
                                  f"{ident.fingerprint[:12]}")
    head_header, head_arrays = engine_header(
        head, {"source": {**(source or {}), **source_metadata(head_meta)}})
    space = LabelSpace.from_json(head_meta.get("label_space"), head_header["num_classes"])
    h, w = ident.image_size
    encoder_header = {
        "array": fmt.ONNX_ARRAY, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "latent_bits": ident.latent_bits, "fingerprint": ident.fingerprint,
        "opset": OPSET, "precision": graph.precision, "quantization": graph.quantization,
        "bit_rule": "bit = logit >= 0; bit 1 is +1 for the head",
        "data": ident.data, "pretrain": ident.pretrain,
    }
    if ident.quantized_from is not None:
        encoder_header["quantized_from"] = ident.quantized_from
    header = {
        "kind": fmt.KIND,
        "format_version": fmt.FORMAT_VERSION,
        "hybnn_version": __version__,
        "input": {"channels": ident.channels, "height": h, "width": w, "dtype": "float32",
                  "layout": "NCHW", "range": [0.0, 1.0]},
        "encoder": encoder_header,
        "head": head_header,
        "label_space": space.to_json(),
    }
    fmt.write(out, header, graph.onnx, head_arrays)
    return header


def export_bundle(head_dir: str | os.PathLike[str], encoder_dir: str | os.PathLike[str],
                  out: str | os.PathLike[str], int8: bool = False,
                  calibration_samples: int = CALIBRATION_SAMPLES,
                  calibration_seed: int = CALIBRATION_SEED,
                  calibration_data: str | None = None) -> dict[str, Any]:
    """``hybnn export HEAD_DIR --encoder ENCODER_DIR --out BUNDLE [--int8]``; the header.

    ``encoder_dir`` is the float VAE (its graph exported now, quantized with ``int8``) or an
    int8-encoder artifact from ``hybnn quantize`` (its graph bundled as it is, so a head
    trained on its codes runs on exactly those codes)."""
    head, meta = load_model(head_dir)
    if not isinstance(head, BNNHead):
        raise ArtifactError(f"{head_dir} holds a {meta['config']['arch']} model; a bundle holds "
                            "a BNN head on codes (export others with `hybnn export MODEL --out`)")
    source = {"model_dir": str(head_dir), "encoder_dir": str(encoder_dir)}
    encoder = open_encoder(encoder_dir)
    if isinstance(encoder, DistilledEncoder):
        raise ArtifactError(f"{encoder_dir} is a binary encoder: a bundle's encoder runs in ONNX "
                            "Runtime; export the fully binary network as an engine file "
                            "(`hybnn export HEAD --encoder BINARY_DIR --out FILE`)")
    require_same_encoder(meta.get("encoder_fingerprint"), encoder, head_dir, encoder_dir)
    if isinstance(encoder, Int8Encoder):  # the graph the head's codes came from, as it is
        return build_bundle(head, meta, encoder.graph.identity, encoder.graph.graph, out, source)
    assert isinstance(encoder, VaeEncoder)
    graph = encoder_graph(encoder, int8, calibration_samples, calibration_seed,
                          calibration_data=calibration_data)
    return build_bundle(head, meta, encoder, graph, out, source)
