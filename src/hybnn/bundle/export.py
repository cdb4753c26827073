"""Build a bundle from a trained BNN head and its encoder (torch side; see :mod:`.format`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from hybnn.bundle import format as fmt
from hybnn.bundle.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, encoder_onnx
from hybnn.bundle.quantize import method, quantize_int8
from hybnn.data.labels import LabelSpace
from hybnn.data.splits import load_split
from hybnn.engine.export import engine_header, source_metadata
from hybnn.errors import ArtifactError, FingerprintMismatch
from hybnn.models.bnn_head import BNNHead
from hybnn.models.io import load_model
from hybnn.pipeline.encoder import Encoder, load_encoder

CALIBRATION_SAMPLES = 512
CALIBRATION_SEED = 0


@dataclass(frozen=True)
class EncoderGraph:
    """An encoder as ONNX bytes, its precision and (int8) how it was calibrated."""

    onnx: bytes
    precision: str
    quantization: dict[str, Any] | None = None


def calibration_images(encoder: Encoder, samples: int = CALIBRATION_SAMPLES,
                       seed: int = CALIBRATION_SEED) -> tuple[np.ndarray, dict[str, Any]]:
    """A seeded sample of the encoder's own general training data, and its description.

    The source and split come from ``encoder.meta["data"]`` (split ``train`` when it is not
    recorded); ``samples`` images drawn without replacement by ``numpy.random.default_rng(seed)``.
    """
    data = encoder.meta.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, str):
        raise ArtifactError("the encoder does not record its training data (meta['data']"
                            "['source']): int8 calibration needs it")
    split = str(data.get("split", "train")) if isinstance(data, dict) else "train"
    if samples < 1:
        raise ValueError(f"calibration needs at least one sample, got {samples}")
    general = load_split(source, "all", split)
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(general), size=min(samples, len(general)), replace=False))
    info = {"source": source, "split": split, "size": len(index), "seed": seed,
            "selection": "numpy.random.default_rng(seed).choice without replacement, sorted"}
    return np.ascontiguousarray(general.x[index]), info


def encoder_graph(encoder: Encoder, int8: bool = False,
                  calibration_samples: int = CALIBRATION_SAMPLES,
                  calibration_seed: int = CALIBRATION_SEED,
                  reduce_range: bool = False) -> EncoderGraph:
    """The encoder as ONNX, float32 or statically quantized to int8."""
    onnx = encoder_onnx(encoder.vae)
    if not int8:
        return EncoderGraph(onnx, "fp32")
    images, calibration = calibration_images(encoder, calibration_samples, calibration_seed)
    quantized = quantize_int8(onnx, INPUT_NAME, images, reduce_range)
    return EncoderGraph(quantized, "int8", {**method(reduce_range), "calibration": calibration})


def build_bundle(head: nn.Module, head_meta: dict[str, Any], encoder: Encoder,
                 graph: EncoderGraph, out: str | os.PathLike[str],
                 source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the bundle of ``head`` (with metadata ``head_meta``) and ``encoder``; its header."""
    from hybnn import __version__

    if not isinstance(head, BNNHead):
        raise ArtifactError(f"a bundle holds a BNN head on codes, not a {type(head).__name__} "
                            "(export it alone: `hybnn export MODEL --out FILE`)")
    trained_on = head_meta.get("encoder_fingerprint")
    if trained_on != encoder.fingerprint:
        raise FingerprintMismatch(f"the head was trained on codes of encoder "
                                  f"{str(trained_on)[:12]}, but the encoder given is "
                                  f"{encoder.fingerprint[:12]}")
    head_header, head_arrays = engine_header(
        head, {"source": {**(source or {}), **source_metadata(head_meta)}})
    space = LabelSpace.from_json(head_meta.get("label_space"), head_header["num_classes"])
    c = int(encoder.vae.config["in_channels"])
    h, w = encoder.image_size
    header = {
        "kind": fmt.KIND,
        "format_version": fmt.FORMAT_VERSION,
        "hybnn_version": __version__,
        "input": {"channels": c, "height": h, "width": w, "dtype": "float32",
                  "layout": "NCHW", "range": [0.0, 1.0]},
        "encoder": {
            "array": fmt.ONNX_ARRAY, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
            "latent_bits": encoder.latent_bits, "fingerprint": encoder.fingerprint,
            "opset": OPSET, "precision": graph.precision, "quantization": graph.quantization,
            "bit_rule": "bit = logit >= 0; bit 1 is +1 for the head",
            "data": encoder.meta.get("data"), "pretrain": encoder.meta.get("pretrain"),
        },
        "head": head_header,
        "label_space": space.to_json(),
    }
    fmt.write(out, header, graph.onnx, head_arrays)
    return header


def export_bundle(head_dir: str | os.PathLike[str], encoder_dir: str | os.PathLike[str],
                  out: str | os.PathLike[str], int8: bool = False,
                  calibration_samples: int = CALIBRATION_SAMPLES,
                  calibration_seed: int = CALIBRATION_SEED) -> dict[str, Any]:
    """``hybnn export HEAD_DIR --encoder ENCODER_DIR --out BUNDLE [--int8]``; the header."""
    head, meta = load_model(head_dir)
    if not isinstance(head, BNNHead):
        raise ArtifactError(f"{head_dir} holds a {meta['config']['arch']} model; a bundle holds "
                            "a BNN head on codes (export others with `hybnn export MODEL --out`)")
    encoder = load_encoder(encoder_dir)
    if meta.get("encoder_fingerprint") != encoder.fingerprint:  # before the slow ONNX export
        raise FingerprintMismatch(
            f"model {head_dir} was trained on codes of encoder "
            f"{str(meta.get('encoder_fingerprint'))[:12]}, but {encoder_dir} is encoder "
            f"{encoder.fingerprint[:12]}")
    graph = encoder_graph(encoder, int8, calibration_samples, calibration_seed)
    source = {"model_dir": str(head_dir), "encoder_dir": str(encoder_dir)}
    return build_bundle(head, meta, encoder, graph, out, source)
