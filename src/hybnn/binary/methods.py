"""Training methods for binary layers, chosen by name.

==============  =========  ==============================================================
method          scaling    what it adds
==============  =========  ==============================================================
``ste``         none       plain sign + straight-through estimator (the HyBNN paper's BNN)
``xnor``        xnor       α = mean |w| per output channel (XNOR-Net)
``rebnn``       learned    ReBNN: learned α + weighted reconstruction loss, the paper's γ
``rebnn-const`` learned    ReBNN as the official code behaves: constant γ = 2e-4
==============  =========  ==============================================================

Use as ``train_head(..., scaling=method_scaling(m), callbacks=method_callbacks(m))``.
"""

from __future__ import annotations

from torch import nn

from hybnn.binary.layers import binary_layers
from hybnn.binary.names import METHODS
from hybnn.binary.rebnn import ReBNN
from hybnn.hooks import Callback

_SCALING = {"ste": "none", "xnor": "xnor", "rebnn": "learned", "rebnn-const": "learned"}


def _check(name: str) -> None:
    if name not in _SCALING:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")


def method_scaling(name: str) -> str:
    """The binary layers' ``scaling`` argument that method ``name`` needs."""
    _check(name)
    return _SCALING[name]


def method_callbacks(name: str, model: nn.Module | None = None) -> list[Callback]:
    """The training callbacks of method ``name`` (empty for ``ste`` and ``xnor``).

    Given ``model``, checks that its binary layers were built with the method's scaling.
    """
    _check(name)
    if model is not None:
        want = _SCALING[name]
        bad = [n for n, layer in binary_layers(model) if layer.scaling != want]
        if bad:
            raise ValueError(f"method {name!r} needs scaling={want!r}; layers "
                             f"{', '.join(bad)} use another")
    if name == "rebnn":
        return [ReBNN("paper")]
    if name == "rebnn-const":
        return [ReBNN("official")]
    return []
