"""Run a deployed bundle without torch: numpy, ONNX Runtime and the packed C engine only.

>>> from hybnn import runtime
>>> model = runtime.load("model.bundle", threads=1)        # doctest: +SKIP
>>> model.predict(images)         # float32 (N, C, H, W) in [0, 1] -> int64   # doctest: +SKIP
>>> model.label_space.names[0]                             # doctest: +SKIP

``load`` validates the whole bundle (:mod:`hybnn.bundle.format`); the encoder graph must be
one hybnn exports (:mod:`hybnn.onnxgraph.rules`: its ops, bounded sizes) before ONNX
Runtime checks it; ``strict=True`` adds ``onnx.checker`` (which costs ~2 s of import). Each
run of the encoder is bounded in memory and time, and its output is checked against its input
(:mod:`hybnn.onnxgraph.session`).
"""

from __future__ import annotations

import os

from hybnn.bundle.format import read
from hybnn.runtime.model import BundleModel

__all__ = ["BundleModel", "load"]


def load(path: str | os.PathLike[str], threads: int = 1, strict: bool = False) -> BundleModel:
    """Load and validate a bundle file; ``threads`` for ONNX Runtime and the engine."""
    if type(threads) is not int or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return BundleModel(read(path, check_onnx=strict), threads=threads, where=str(path))
