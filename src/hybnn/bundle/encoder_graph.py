"""The encoder a bundle deploys: its ONNX graph (float32 or int8) and what identifies it.

:func:`encoder_graph` exports the frozen VAE's encoder to ONNX and, for int8, quantizes it
statically, calibrated on a seeded sample of the encoder's own general training data
(:func:`calibration_images`, label-free).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hybnn.bundle.onnx_export import INPUT_NAME, encoder_onnx
from hybnn.bundle.quantize import Recipe, method, quantize_int8
from hybnn.data.splits import load_split
from hybnn.encoders.base import EncoderGraph
from hybnn.encoders.vae import VaeEncoder
from hybnn.errors import DataError

CALIBRATION_SAMPLES = 512
CALIBRATION_SEED = 0


def calibration_images(encoder: VaeEncoder, samples: int = CALIBRATION_SAMPLES,
                       seed: int = CALIBRATION_SEED, split: str | None = None,
                       data_source: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """A seeded sample of the encoder's own general training data, and its description.

    The source and split come from ``encoder.meta["data"]`` (split ``train`` when it is not
    recorded; ``split`` names another, e.g. ``test`` for a held-out sample), or the source
    from ``data_source`` (``--calibration-data``); ``samples`` images drawn without
    replacement by ``numpy.random.default_rng(seed)``.
    """
    data = encoder.meta.get("data")
    sources = [data_source] if data_source else recorded_sources(data)
    if not sources:
        raise DataError("the encoder does not record its training data, which int8 "
                        "calibration samples: give the calibration data with "
                        "--calibration-data SOURCE")
    if split is None:
        split = str(data.get("split", "train")) if isinstance(data, dict) else "train"
    if samples < 1:
        raise ValueError(f"calibration needs at least one sample, got {samples}")
    parts = []
    for source in sources:
        try:
            parts.append(load_split(source, "all", split).x)
        except DataError as exc:
            how = ("given by --calibration-data" if data_source else
                   "the encoder's training data, as its metadata records it; give other "
                   "calibration data with --calibration-data SOURCE")
            raise DataError(f"calibration data {source!r} ({how}): {exc}") from None
    general = np.concatenate(parts) if len(parts) > 1 else parts[0]
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(general), size=min(samples, len(general)), replace=False))
    info = {"source": ",".join(sources), "split": split, "size": len(index), "seed": seed,
            "selection": "numpy.random.default_rng(seed).choice without replacement, sorted"
                         + (" from the sources concatenated in this order" if
                            len(sources) > 1 else "")}
    return np.ascontiguousarray(general[index], dtype=np.float32), info


def recorded_sources(data: object) -> list[str]:
    """The data sources an encoder's ``meta["data"]`` records: one ``source``, or the
    ``sources`` of an encoder trained on several (the shipped ``general`` one)."""
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("source"), str):
        return [data["source"]]
    many = data.get("sources")
    if isinstance(many, list) and all(isinstance(s, dict) and isinstance(s.get("source"), str)
                                      for s in many):
        return [s["source"] for s in many]
    return []


def encoder_graph(encoder: VaeEncoder, int8: bool = False,
                  calibration_samples: int = CALIBRATION_SAMPLES,
                  calibration_seed: int = CALIBRATION_SEED,
                  recipe: Recipe | None = None,
                  calibration_data: str | None = None) -> EncoderGraph:
    """The encoder as ONNX, float32 or statically quantized to int8 (hybnn's recipe unless
    ``recipe`` says otherwise)."""
    onnx = encoder_onnx(encoder.vae)
    if not int8:
        return EncoderGraph(onnx, "fp32")
    images, calibration = calibration_images(encoder, calibration_samples, calibration_seed,
                                             data_source=calibration_data)
    quantized = quantize_int8(onnx, INPUT_NAME, images, recipe)
    return EncoderGraph(quantized, "int8", {**method(recipe), "calibration": calibration})
