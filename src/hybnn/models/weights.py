"""Rebuilding a module from an artifact's JSON config and weights, trusting neither.

The config is checked against the caps of :mod:`hybnn.data.limits`, the module is first
built on torch's ``meta`` device (no memory), and every tensor of the file must match that
module's own state dict in name, shape and dtype, be finite, and (batch-norm running
variances) be non-negative. Only then is the real module built and loaded, so a config
claiming ``hidden: [10**9]`` costs nothing and int/bool weights are never silently cast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from hybnn.data.limits import MAX_CONFIG_LIST, MAX_CONFIG_VALUE
from hybnn.errors import ArtifactError

M = TypeVar("M", bound=nn.Module)


def build_checked(make: Callable[..., M], config: dict[str, Any],
                  tensors: dict[str, torch.Tensor], where: str) -> M:
    """``make(**config)`` loaded with ``tensors`` (strict), after checking both."""
    check_config(config, where)
    try:
        with torch.device("meta"):
            shape_of = make(**config).state_dict()
    except ArtifactError as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        raise ArtifactError(f"{where}: config {config} does not build: "
                            f"{str(exc).splitlines()[0]}") from None
    check_state_dict(tensors, shape_of, where)
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
