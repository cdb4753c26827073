"""Packed binary inference engine: XNOR/popcount kernels in C, a checked file format, a runtime.

>>> from hybnn.engine import export_model, load
>>> export_model(head, "head.engine")                   # doctest: +SKIP
>>> load("head.engine").predict(codes_pm1)              # doctest: +SKIP

See docs/engine.md for the bit layout, the file format and the measured speed.
"""

from __future__ import annotations

from typing import Any

from hybnn.engine.dispatch import available_isas, detect_isa, isa, set_isa
from hybnn.engine.graph import GraphModel
from hybnn.engine.packed import PackedModel, load
from hybnn.engine.packing import pack_codes, pack_images, pack_signs, unpack_signs

__all__ = [
    "GraphModel",
    "PackedModel",
    "available_isas",
    "detect_isa",
    "export_artifact",
    "export_fully_binary",
    "export_model",
    "isa",
    "load",
    "pack_codes",
    "pack_images",
    "pack_signs",
    "set_isa",
    "unpack_signs",
]


def __getattr__(name: str) -> Any:
    """The exporters need torch; they are imported on first use, so running a packed model
    (:func:`load`) does not import torch."""
    if name in ("export_artifact", "export_fully_binary", "export_model"):
        from hybnn.engine import export

        return getattr(export, name)
    raise AttributeError(f"module 'hybnn.engine' has no attribute {name!r}")
