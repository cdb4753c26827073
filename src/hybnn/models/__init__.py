"""Models: binary-latent VAE (phase 1), BNN head (phase 3), and the CNN baselines.

Classes are imported on first use, so :mod:`hybnn.models.names` is usable without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "BNNHead": "hybnn.models.bnn_head",
    "BinaryCNN": "hybnn.models.binary_cnn",
    "BinaryLatentVAE": "hybnn.models.vae",
    "FloatCNN": "hybnn.models.float_cnn",
}

__all__ = ["BNNHead", "BinaryCNN", "BinaryLatentVAE", "FloatCNN"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'hybnn.models' has no attribute {name!r}")
