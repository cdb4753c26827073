"""Packed binary inference engine: XNOR/popcount kernels in C, a checked file format, a runtime.

>>> from hybnn.engine import export_model, load
>>> export_model(head, "head.hybe")                     # doctest: +SKIP
>>> load("head.hybe").predict(codes_pm1)                # doctest: +SKIP

See docs/engine.md for the bit layout, the file format and the measured speed.
"""

from hybnn.engine.dispatch import available_isas, detect_isa, isa, set_isa
from hybnn.engine.export import export_artifact, export_model
from hybnn.engine.packing import pack_codes, pack_images, pack_signs, unpack_signs
from hybnn.engine.runtime import PackedModel, load

__all__ = [
    "PackedModel",
    "available_isas",
    "detect_isa",
    "export_artifact",
    "export_model",
    "isa",
    "load",
    "pack_codes",
    "pack_images",
    "pack_signs",
    "set_isa",
    "unpack_signs",
]
