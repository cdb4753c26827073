"""Rebuilding a module from an artifact's JSON config and weights, trusting neither.

The config is checked against the caps of :mod:`hybnn.data.limits`, the module is first
built on torch's ``meta`` device (no memory), and every tensor of the file must match that
module's own state dict in name, shape and dtype, be finite, and (batch-norm running
variances) be non-negative. Only then is the real module built and loaded, so a config
claiming ``hidden: [10**9]`` costs nothing and int/bool weights are never silently cast.

Finite is not enough: a learned scale α of 3e38 overflows a logit to infinity. The scaling
values are bounded too (:data:`SCALE_LIMIT`, :data:`MEAN_LIMIT`), which keeps every batch
norm's output finite: |x| <= |α|·fan-in <= 1e6·6e5, |x - mean| / sqrt(var + eps) · |γ| + |β|
<= 1.1e12 / sqrt(1e-5) · 1e6 + 1e6, about 3.5e20 (float32 reaches 3.4e38). Trained models
stay far inside (α = mean |w| <= 1; γ, β about 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from hybnn.binary.layers import BinaryLayer
from hybnn.data.limits import MAX_CONFIG_LIST, MAX_CONFIG_VALUE
from hybnn.errors import ArtifactError

M = TypeVar("M", bound=nn.Module)

SCALE_LIMIT = 1e6  # |value| of a binary layer's scale alpha, a batch norm's weight and bias
MEAN_LIMIT = 1e12  # |value| of a batch norm's running mean (its input: |alpha| x fan-in)


def build_checked(make: Callable[..., M], config: dict[str, Any],
                  tensors: dict[str, torch.Tensor], where: str) -> M:
    """``make(**config)`` loaded with ``tensors`` (strict), after checking both."""
    check_config(config, where)
    try:
        with torch.device("meta"):
            skeleton = make(**config)
            shape_of = skeleton.state_dict()
    except ArtifactError as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        raise ArtifactError(f"{where}: config {config} does not build: "
                            f"{str(exc).splitlines()[0]}") from None
    check_state_dict(tensors, shape_of, where)
    check_scales(tensors, skeleton, where)
    model = make(**config)
    model.load_state_dict(tensors, strict=True)
    return model


def check_config(value: Any, where: str, depth: int = 0) -> None:
    """Numbers finite and at most ``MAX_CONFIG_VALUE``; lists at most ``MAX_CONFIG_LIST`` long."""
    if depth > 4:
        raise ArtifactError(f"{where}: config is nested too deeply")
    if isinstance(value, dict):
        for v in value.values():
            check_config(v, where, depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_CONFIG_LIST:
            raise ArtifactError(f"{where}: config list of {len(value)} items is above the "
                                f"limit of {MAX_CONFIG_LIST} (hybnn.data.limits)")
        for v in value:
            check_config(v, where, depth + 1)
    elif (isinstance(value, int | float) and not isinstance(value, bool)
          and not (math.isfinite(value) and abs(value) <= MAX_CONFIG_VALUE)):
        raise ArtifactError(f"{where}: config value {value} is not finite or above the "
                                f"limit of {MAX_CONFIG_VALUE:,} (hybnn.data.limits)")


def check_state_dict(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                     where: str) -> None:
    """Refuse weights that differ from ``expected`` in names, shapes or dtypes, or are invalid."""
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(f"weights in {where} do not fit the model: missing {missing[:3]}, "
                            f"unexpected {extra[:3]}")
    for name, want in expected.items():
        got = tensors[name]
        if got.dtype != want.dtype or got.shape != want.shape:
            raise ArtifactError(
                f"weights in {where} do not fit the model: {name} is {got.dtype} "
                f"{tuple(got.shape)}, expected {want.dtype} {tuple(want.shape)}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise ArtifactError(f"weights in {where}: {name} holds NaN or infinite values")
        if name.endswith("running_var") and bool((got < 0).any()):
            raise ArtifactError(f"weights in {where}: {name} holds negative variances")


def value_limits(module: nn.Module) -> dict[str, float]:
    """The bound on |value| of every scaling tensor of ``module``, by state-dict name."""
    limits: dict[str, float] = {}
    for name, m in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            limits |= {f"{prefix}weight": SCALE_LIMIT, f"{prefix}bias": SCALE_LIMIT,
                       f"{prefix}running_mean": MEAN_LIMIT}
        elif isinstance(m, BinaryLayer):
            limits[f"{prefix}alpha"] = SCALE_LIMIT
    return limits


def check_scales(tensors: dict[str, torch.Tensor], module: nn.Module, where: str) -> None:
    """Refuse scales and batch-norm values so large that the float output overflows."""
    for name, limit in value_limits(module).items():
        got = tensors.get(name)
        if got is not None and got.numel() and float(got.abs().max()) > limit:
            raise ArtifactError(f"weights in {where}: {name} holds |value| "
                                f"{float(got.abs().max()):.3g}, above the limit of {limit:g} "
                                "(its outputs would overflow to infinity)")
