"""Transport coordinates: every federated tensor divided by a fixed bound of its values.

A binary layer's output is a sum of K products of ±1 (K: its fan-in), so the batch norm
after it normalizes values in [-K, K]: its running mean lies in [-K, K], its running
variance in [0, K²]. Divided by K and K² they are on the scale of the latent weights
([-1, 1], left as they are); everything else (batch-norm affines, learned scales) is left
as it is too. In raw coordinates the running variances are almost all of an update's L2
norm (99.96 % of its square, measured by ``bench/privacy.py``).

Two users, one scaling: SecAgg+ quantizes the update in these coordinates
(:mod:`hybnn.federated.secagg`), and differential privacy clips and noises it in them
(:mod:`hybnn.federated.privacy`). Scaled tensors are float64, so that unscaling a scaled
float32 tensor gives it back bit for bit (the rounding error of x / K · K in float64 is far
below half a float32 step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from torch import nn

from hybnn.federated.encoding import Layout

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def transport_bounds(model: nn.Module, layout: Layout) -> dict[str, float]:
    """Per tensor, the divisor that puts it in [-1, 1]: the fan-in K of the layer before a
    batch norm for its running mean, K² for its running variance, 1 for everything else
    (latent weights are clipped to [-1, 1]; affines and scales are left as they are)."""
    bounds = dict.fromkeys(layout.keys, 1.0)
    fan_in: int | None = None
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, BATCH_NORMS):
            if fan_in is not None:
                bounds[f"{name}.running_mean"] = float(fan_in)
                bounds[f"{name}.running_var"] = float(fan_in) ** 2
        elif isinstance(weight, nn.Parameter) and weight.dim() >= 2:
            fan_in = math.prod(weight.shape[1:])
    return bounds


def scaled(state: Mapping[str, np.ndarray], bounds: Mapping[str, float]
           ) -> dict[str, np.ndarray]:
    """``state`` in transport coordinates: each tensor divided by its bound, as float64."""
    return {k: np.asarray(v, dtype=np.float64) / bounds[k] for k, v in state.items()}


def unscaled(state: Mapping[str, np.ndarray], bounds: Mapping[str, float]
             ) -> dict[str, np.ndarray]:
    """The float32 state from transport coordinates (the inverse of :func:`scaled`)."""
    return {k: (np.asarray(v, dtype=np.float64) * bounds[k]).astype(np.float32)
            for k, v in state.items()}
