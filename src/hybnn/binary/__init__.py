"""Binary core: sign quantizers with straight-through estimators, binary layers, summaries.

Names are imported on first use, so :mod:`hybnn.binary.names` is usable without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "BinaryConv2d": "layers", "BinaryLayer": "layers", "BinaryLinear": "layers",
    "binary_layers": "layers", "clip_latent_weights": "layers",
    "approx_sign": "quantizers", "get_quantizer": "quantizers", "sign": "quantizers",
    "ste_sign": "quantizers",
    "LayerSummary": "summary", "deployed_bytes": "summary", "model_summary": "summary",
    "summary_table": "summary",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"hybnn.binary.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'hybnn.binary' has no attribute {name!r}")
