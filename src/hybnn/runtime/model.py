"""A deployed HyBNN: ONNX Runtime encoder -> packed XNOR/popcount head. No torch."""

from __future__ import annotations

from typing import Any

import numpy as np

from hybnn.bundle.format import BundleParts
from hybnn.data.dataset import model_images
from hybnn.data.labels import LabelSpace
from hybnn.engine.packed import PackedModel
from hybnn.onnxgraph.session import OnnxEncoder


class BundleModel:
    """Images -> classes; ``codes`` and ``logits`` on the way. Images as ``hybnn predict`` takes
    them (:func:`hybnn.data.dataset.model_images`): uint8 0-255 or floats in [0, 1], shaped
    (N, C, H, W), (N, H, W) or (H, W)."""

    def __init__(self, parts: BundleParts, threads: int = 1, where: str = "bundle") -> None:
        enc = parts.encoder
        self.encoder = OnnxEncoder(parts.onnx, enc["input_name"], enc["output_name"],
                                   parts.input_shape, parts.latent_bits, threads, where)
        self.head = PackedModel(parts.head_header, parts.head_arrays, parts.fingerprint,
                                threads=threads, where=where)
        self.header: dict[str, Any] = parts.header
        self.fingerprint = parts.fingerprint
        self.threads = threads
        self.label_space: LabelSpace = parts.label_space
        self.input_shape: tuple[int, int, int] = parts.input_shape
        self.latent_bits = parts.latent_bits
        self.num_classes = self.head.num_classes
        self.precision: str = parts.encoder["precision"]

    def __repr__(self) -> str:
        return (f"BundleModel(input={self.input_shape}, bits={self.latent_bits}, "
                f"classes={self.num_classes}, encoder={self.precision})")

    def _images(self, images: Any) -> np.ndarray:
        return model_images(images, self.input_shape)  # no copy for C-contiguous float32

    def encoder_logits(self, images: Any) -> np.ndarray:
        """The encoder's bit logits (N, latent_bits) float32."""
        x = self._images(images)
        if not len(x):
            return np.zeros((0, self.latent_bits), np.float32)
        return self.encoder.logits(x)

    def codes(self, images: Any) -> np.ndarray:
        """Binary codes (N, latent_bits) bool: bit = encoder logit >= 0."""
        return self.encoder_logits(images) >= 0

    def logits(self, images: Any) -> np.ndarray:
        """float32 class logits (N, classes)."""
        z = self.encoder_logits(images)
        # the engine's fused sign-and-pack takes sign(0) = +1: exactly bit = logit >= 0
        return self.head.logits(z) if len(z) else np.zeros((0, self.num_classes), np.float32)

    def predict(self, images: Any) -> np.ndarray:
        """int64 class indices (N,) (see ``label_space`` for what they mean)."""
        z = self.encoder_logits(images)
        return self.head.predict(z) if len(z) else np.zeros(0, np.int64)
