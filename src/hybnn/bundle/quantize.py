"""int8 ONNX models: ONNX Runtime static QDQ quantization calibrated on given images.

Activations uint8, weights int8 per output channel, after ONNX Runtime's
``quant_pre_process`` (shape inference, conv + batch norm folding). Each activation's range
is the 0.001st to 99.999th percentile of its values over the calibration images
(``CalibrationMethod.Percentile``), and the final Gemm's output, the bit logits, stays
float32 (``OpTypesToExcludeOutputQuantization``): a code bit is the sign of a logit, and a
uint8 logit rounds every value within half a step of zero onto it. Measured on the trained
encoders (2,000 test images, 512 calibration images): bits equal to the
float32 encoder's rise from ~98.5 to ~99.5 % (mnist-5k) and from ~97.5 to ~99 % (fashion)
against min/max ranges with a uint8 logit, at the same size (``bench/int8_calibration.py``,
BENCHMARKS.md). Torch-free.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION_BATCH = 32
PERCENTILE = 99.999  # of each activation's calibration values: the top of its uint8 range
FLOAT_OUTPUT_OPS = ("Gemm",)  # ops whose output stays float32: the encoder's bit logits


@dataclass(frozen=True)
class Recipe:
    """How activations are ranged and which ops keep a float32 output. The default is
    hybnn's; ``Recipe("MinMax", ())`` is ONNX Runtime's plain default, kept for comparison
    (``bench/int8_calibration.py``)."""

    calibrate: str = "Percentile"  # or "MinMax"
    float_outputs: tuple[str, ...] = FLOAT_OUTPUT_OPS
    reduce_range: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"calibrate": self.calibrate}
        if self.calibrate == "Percentile":
            out["percentile"] = PERCENTILE
        return {**out, "float_outputs": list(self.float_outputs),
                "reduce_range": self.reduce_range}


def method(recipe: Recipe | None = None) -> dict[str, Any]:
    """How :func:`quantize_int8` quantizes, recorded beside its output."""
    import onnxruntime

    return {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "activations": "uint8 per tensor", "weights": "int8 per channel",
            **(recipe or Recipe()).to_json(), "pre_process": "quant_pre_process",
            "onnxruntime": onnxruntime.__version__}


def calibration_batch(n: int) -> int:
    """The largest batch size of at most CALIBRATION_BATCH that divides ``n`` images."""
    return max(d for d in range(1, max(1, min(CALIBRATION_BATCH, n)) + 1) if n % d == 0)


def _reader(input_name: str, images: np.ndarray) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds the calibration images in batches of one size, at most CALIBRATION_BATCH
        (ONNX Runtime's calibrators stack the batches' outputs: a short last batch fails)."""

        def __init__(self) -> None:
            size = calibration_batch(len(images))
            self.batches: Iterator[np.ndarray] = iter(
                [images[i:i + size] for i in range(0, len(images), size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    return Reader()


def quantize_int8(onnx_bytes: bytes, input_name: str, images: np.ndarray,
                  recipe: Recipe | None = None) -> bytes:
    """Static int8 (QDQ) version of the float32 model ``onnx_bytes``, calibrated on ``images``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    recipe = recipe or Recipe()
    if recipe.calibrate not in ("Percentile", "MinMax"):
        raise ValueError(f"unknown calibration {recipe.calibrate!r}")
    if len(images) == 0:
        raise ValueError("int8 calibration needs at least one image")
    images = np.ascontiguousarray(images, dtype=np.float32)
    extra: dict[str, Any] = {"OpTypesToExcludeOutputQuantization": list(recipe.float_outputs)}
    if recipe.calibrate == "Percentile":
        extra["CalibPercentile"] = PERCENTILE
    with tempfile.TemporaryDirectory(prefix="hybnn-quant-") as tmp, \
            contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrator prints
        fp32, pre, int8 = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(onnx_bytes)
        quant_pre_process(str(fp32), str(pre))
        quantize_static(str(pre), str(int8), _reader(input_name, images),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=recipe.reduce_range,
                        calibrate_method=getattr(CalibrationMethod, recipe.calibrate),
                        extra_options=extra)
        return int8.read_bytes()
