"""An int8-encoder artifact (``hybnn quantize``) as a code encoder: ONNX Runtime on the CPU.

``hybnn extract --encoder INT8_DIR`` encodes with it, so the codes a head trains on are the
codes its deployed int8 bundle computes; the code store records this artifact's fingerprint.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hybnn.bundle.int8_encoder import Int8Graph, load_int8_graph
from hybnn.errors import DataError
from hybnn.runtime.onnx_encoder import OnnxEncoder

ENCODE_BATCH = 256  # images per session run, as for the torch encoder


class Int8Encoder:
    """Images (N, C, H, W) float32 in [0, 1] -> bool codes (N, latent_bits), bit = logit >= 0."""

    def __init__(self, graph: Int8Graph, threads: int = 1, where: str = "int8 encoder") -> None:
        self.graph = graph
        self.fingerprint: str = graph.fingerprint
        self.meta: dict[str, Any] = graph.meta
        self.input_shape = (graph.channels, *graph.image_size)
        self.session = OnnxEncoder(graph.onnx, graph.input_name, graph.output_name,
                                   self.input_shape, graph.latent_bits, threads, where)

    @property
    def latent_bits(self) -> int:
        return self.graph.latent_bits

    @property
    def image_size(self) -> tuple[int, int]:
        return self.graph.image_size

    def encode(self, images: np.ndarray, batch_size: int = ENCODE_BATCH) -> np.ndarray:
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise DataError(f"encoder expects images of shape (N, "
                            f"{', '.join(map(str, self.input_shape))}), got {images.shape}")
        out = [self.session.logits(np.ascontiguousarray(images[i:i + batch_size],
                                                        dtype=np.float32)) >= 0
               for i in range(0, len(images), batch_size)]
        return (np.concatenate(out) if out
                else np.zeros((0, self.latent_bits), dtype=bool))


def load_int8_encoder(directory: str | os.PathLike[str], threads: int = 1) -> Int8Encoder:
    """Load, validate and open an int8-encoder artifact; ``threads`` for ONNX Runtime."""
    return Int8Encoder(load_int8_graph(directory), threads, f"int8 encoder {directory}")
