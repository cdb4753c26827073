"""Models: binary-latent VAE (phase 1), BNN head (phase 3), CNN baselines, binary encoders.

Classes are imported on first use, so :mod:`hybnn.models.names` is usable without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "BNNHead": "hybnn.models.bnn_head",
    "BinaryCNN": "hybnn.models.binary_cnn",
    "BinaryEncoder": "hybnn.models.binary_encoder",
    "BinaryLatentVAE": "hybnn.models.vae",
    "BinaryResNet": "hybnn.models.binary_resnet",
    "FloatResNet": "hybnn.models.binary_resnet",
    "FloatCNN": "hybnn.models.float_cnn",
    "FullyBinaryHyBNN": "hybnn.models.fully_binary",
    "ResNetEncoder": "hybnn.models.binary_encoder",
}

__all__ = [
    "BNNHead", "BinaryCNN", "BinaryEncoder", "BinaryLatentVAE", "BinaryResNet", "FloatCNN",
    "FloatResNet", "FullyBinaryHyBNN", "ResNetEncoder",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'hybnn.models' has no attribute {name!r}")
