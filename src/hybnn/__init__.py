"""hybnn: hybrid binary neural networks (HyBNN, FedHyBNN, ReBNN) and a packed inference engine.

The object API (:class:`Encoder`, :class:`Head`, :class:`Model`; :mod:`hybnn.estimator`)
loads on first use, so ``import hybnn`` stays light (no torch) for the device runtime.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from hybnn.errors import HybnnError

if TYPE_CHECKING:  # for type checkers and IDEs; at run time :func:`__getattr__` loads them
    from hybnn.estimator import Encoder, Head, Model, Predictions, Report

__version__ = "0.1.0"
__all__ = ["Encoder", "Head", "HybnnError", "Model", "Predictions", "Report", "__version__"]
_LAZY = ("Encoder", "Head", "Model", "Predictions", "Report")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module("hybnn.estimator"), name)
    raise AttributeError(f"module 'hybnn' has no attribute {name!r}")
