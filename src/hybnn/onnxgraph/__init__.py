"""Encoder graphs as ONNX: what one may hold (:mod:`.rules`, parsed with :mod:`.schema`) and
one running in ONNX Runtime (:mod:`.session`). Torch-free and ``onnx``-free: the device
runtime, int8 encoders and bundles all run their graphs through here.
"""

INPUT_NAME, OUTPUT_NAME = "images", "logits"  # what hybnn's exported encoder graphs call them
OPSET = 18  # the ONNX opset hybnn exports
MAX_SIDE = 4096  # an encoder's input image side, at most
MAX_BITS = 1 << 16  # an encoder's code bits, at most

__all__ = ["INPUT_NAME", "MAX_BITS", "MAX_SIDE", "OPSET", "OUTPUT_NAME"]
