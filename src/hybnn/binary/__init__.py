"""Binary core: sign quantizers with straight-through estimators, binary layers, summaries."""

from hybnn.binary.layers import (
    BinaryConv2d,
    BinaryLayer,
    BinaryLinear,
    binary_layers,
    clip_latent_weights,
)
from hybnn.binary.quantizers import approx_sign, get_quantizer, sign, ste_sign
from hybnn.binary.summary import LayerSummary, deployed_bytes, model_summary, summary_table

__all__ = [
    "BinaryConv2d",
    "BinaryLayer",
    "BinaryLinear",
    "LayerSummary",
    "approx_sign",
    "binary_layers",
    "clip_latent_weights",
    "deployed_bytes",
    "get_quantizer",
    "model_summary",
    "sign",
    "ste_sign",
    "summary_table",
]
