"""Deployable bundles: the encoder as ONNX (fp32 or int8) + the packed BNN head, one file.

>>> from hybnn.bundle import export_bundle
>>> export_bundle("runs/head", "runs/encoder", "model.bundle", int8=True)  # doctest: +SKIP

The container (:mod:`hybnn.bundle.format`) is torch-free; the builders (``export_bundle``,
:mod:`hybnn.bundle.export`) need torch and are imported on first use. Run a bundle with
:func:`hybnn.runtime.load`. See docs/deploy.md.
"""

from __future__ import annotations

from typing import Any

from hybnn.bundle.format import BundleParts, read

__all__ = ["BundleParts", "export_bundle", "read"]


def __getattr__(name: str) -> Any:
    if name == "export_bundle":
        from hybnn.bundle import export

        return export.export_bundle
    raise AttributeError(f"module 'hybnn.bundle' has no attribute {name!r}")
