"""Adam for every training loop here: torch's fused kernel, called without its Python wrapper.

``torch.optim.Adam(fused=True).step()`` spends ~0.25 ms per call on Python bookkeeping
(grouping tensors by device, profiler records, argument checks) around a ~0.1 ms kernel;
a BNN head's whole step is ~1-2 ms, so that wrapper alone was a fifth of it.
:func:`adam_step` calls the same kernel with the optimizer's own state once it exists, so
checkpoints, resumption and the update itself are torch's; anything unusual (several groups,
amsgrad, a missing gradient, a non-fused build) takes the ordinary ``optimizer.step()``.
"""

from __future__ import annotations

import torch
from torch import nn

from hybnn.pipeline.config import TrainConfig


def make_adam(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, fused where this torch build supports it (fewer kernel launches per step)."""
    params = list(model.parameters())
    try:
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                                fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def adam_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()`` for an Adam from :func:`make_adam`, the fused kernel directly."""
    state = _fused_state(optimizer)
    if state is None:
        optimizer.step()
        return
    group = optimizer.param_groups[0]
    params, grads, exp_avgs, exp_avg_sqs, steps = state
    beta1, beta2 = group["betas"]
    torch._foreach_add_(steps, 1)
    torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                       lr=float(group["lr"]), beta1=beta1, beta2=beta2,
                       weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)


_Lists = tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor],
               list[torch.Tensor]]


def _fused_state(optimizer: torch.optim.Optimizer) -> _Lists | None:
    """The kernel's argument lists, or None where the plain step must run."""
    if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if (not group.get("fused") or group.get("amsgrad") or group.get("maximize")
            or group.get("capturable") or group.get("differentiable")
            or group.get("decoupled_weight_decay") or isinstance(group["lr"], torch.Tensor)):
        return None
    params: list[torch.Tensor] = group["params"]
    if len({(p.device, p.dtype) for p in params}) != 1:
        return None  # the kernel takes one device and dtype
    grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
    for p in params:
        s = optimizer.state.get(p)
        if p.grad is None or p.grad.is_sparse or not s:
            return None  # first step (state not made yet), unused parameter
        grads.append(p.grad)
        exp_avgs.append(s["exp_avg"])
        exp_avg_sqs.append(s["exp_avg_sq"])
        steps.append(s["step"])
    return params, grads, exp_avgs, exp_avg_sqs, steps
