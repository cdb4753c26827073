"""An int8-encoder artifact (``hybnn quantize``) as a code encoder: ONNX Runtime on the CPU.

``hybnn extract --encoder INT8_DIR`` encodes with it, so the codes a head trains on are the
codes its deployed int8 bundle computes; the code store records this artifact's fingerprint.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hybnn.bundle.int8_encoder import Int8Graph, load_int8_graph
from hybnn.pipeline.encoder import ENCODE_BATCH, check_images
from hybnn.runtime.onnx_encoder import OnnxEncoder


class Int8Encoder:
    """Images (N, C, H, W) float32 in [0, 1] -> bool codes (N, latent_bits), bit = logit >= 0."""

    def __init__(self, graph: Int8Graph, threads: int = 1, where: str = "int8 encoder") -> None:
        self.graph = graph
        self.fingerprint: str = graph.fingerprint
        self.meta: dict[str, Any] = graph.meta
        self.latent_bits = graph.latent_bits
        self.image_size = graph.image_size
        self.session = OnnxEncoder(graph.onnx, graph.input_name, graph.output_name,
                                   (graph.channels, *graph.image_size), graph.latent_bits,
                                   threads, where)

    def encode(self, images: np.ndarray, batch_size: int = ENCODE_BATCH) -> np.ndarray:
        check_images(images, self.graph.channels, self.image_size)
        return self.session.codes(images, batch_size)


def load_int8_encoder(directory: str | os.PathLike[str], threads: int = 1) -> Int8Encoder:
    """Load, validate and open an int8-encoder artifact; ``threads`` for ONNX Runtime."""
    return Int8Encoder(load_int8_graph(directory), threads, f"int8 encoder {directory}")
