"""int8 ONNX models: ONNX Runtime static QDQ quantization calibrated on given images.

Activations uint8, weights int8 per output channel, ranges from the min/max of the
activations over the calibration images (``CalibrationMethod.MinMax``), after ONNX Runtime's
``quant_pre_process`` (shape inference, conv + batch norm folding). Torch-free.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION_BATCH = 32


def method(reduce_range: bool = False) -> dict[str, Any]:
    """How :func:`quantize_int8` quantizes, recorded beside its output."""
    import onnxruntime

    return {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "activations": "uint8 per tensor", "weights": "int8 per channel",
            "calibrate": "MinMax", "pre_process": "quant_pre_process",
            "reduce_range": reduce_range, "onnxruntime": onnxruntime.__version__}


def _reader(input_name: str, images: np.ndarray) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds the calibration images in batches of CALIBRATION_BATCH."""

        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(
                [images[i:i + CALIBRATION_BATCH] for i in range(0, len(images),
                                                                 CALIBRATION_BATCH)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    return Reader()


def quantize_int8(onnx_bytes: bytes, input_name: str, images: np.ndarray,
                  reduce_range: bool = False) -> bytes:
    """Static int8 (QDQ) version of the float32 model ``onnx_bytes``, calibrated on ``images``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(images) == 0:
        raise ValueError("int8 calibration needs at least one image")
    images = np.ascontiguousarray(images, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="hybnn-quant-") as tmp:
        fp32, pre, int8 = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(onnx_bytes)
        quant_pre_process(str(fp32), str(pre))
        quantize_static(str(pre), str(int8), _reader(input_name, images),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax)
        return int8.read_bytes()
