"""The BNN head's training step without autograd: forward, hand-derived backward, gradients.

A :class:`~hybnn.models.BNNHead` is a short chain, ``[sign(W) · a -> batch norm -> sign]* ->
sign(W) · a -> batch norm -> cross-entropy``, whose backward pass is a few matrix products.
Autograd records and replays some forty small nodes per step, and at the head's sizes (a
batch of 64 codes, ~14 M multiply-adds) that bookkeeping costs a third of the step.
:class:`FusedHeadStep` computes the same forward values and the same gradients directly:

- linear: ``z = a · sign(W)ᵀ``; ``∂W = ∂zᵀ · a`` (the weight STE passes everything, since
  latent weights are kept in [-1, 1]); ``∂a = ∂z · sign(W)``, masked where the activation's
  input had ``|y| > 1`` (the clipped-identity STE of ``ste_sign``);
- batch norm in training mode through torch's own forward and backward kernels
  (``native_batch_norm``; running statistics updated as ``nn.BatchNorm1d`` does);
- cross-entropy (mean): ``∂logits = (softmax - onehot) / B``.

It sets ``.grad`` of every parameter, so the optimizer, checkpoints and resumption are those
of the autograd path; ``tests/pipeline/test_head_step.py`` checks both against each other.
Heads it does not cover (scaled weights, other quantizers, biases, methods that hook the
backward pass) train through autograd: :func:`fused_step_for` returns None for them.
"""

from __future__ import annotations

import torch
from torch import nn

from hybnn.binary.layers import BinaryLinear
from hybnn.binary.quantizers import sign, ste_sign
from hybnn.models import BNNHead


class FusedHeadStep:
    """One training step of a plain BNN head (sign + STE, batch norm) in direct tensor ops."""

    def __init__(self, model: BNNHead, inputs_are_signs: bool) -> None:
        modules = list(model.net)
        self.linears: list[BinaryLinear] = modules[0::2]
        self.norms: list[nn.BatchNorm1d] = modules[1::2]
        with torch.no_grad():  # -0.0 -> +0.0; training never makes a -0.0 weight again
            for lin in self.linears:
                lin.weight.add_(0.0)
        # the first layer's input sign is the identity on +-1 codes (the caller knows)
        self.inputs_are_signs = inputs_are_signs

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Set the parameters' ``.grad`` for cross-entropy on (x, y); return (loss, logits)."""
        a = x if self.inputs_are_signs else sign(x)
        batch = x.shape[0]
        saved = []  # (input, sign(W), pre-norm, batch mean, 1/std, output) per layer
        for i, (lin, bn) in enumerate(zip(self.linears, self.norms, strict=True)):
            w = _sign_of_weight(lin.weight)
            z = torch.mm(a, w.t())
            out, mean, rstd = torch.native_batch_norm(
                z, bn.weight, bn.bias, bn.running_mean, bn.running_var, True,
                bn.momentum, bn.eps)  # type: ignore[arg-type]
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
            saved.append((a, w, z, mean, rstd, out))
            if i + 1 < len(self.linears):
                a = sign(out)
        logits = saved[-1][5]
        log_p = torch.log_softmax(logits, dim=1)
        loss = torch.nn.functional.nll_loss(log_p, y)
        grad = log_p.exp_()
        grad[torch.arange(batch, device=grad.device), y] -= 1.0
        grad.div_(batch)
        for i in range(len(self.linears) - 1, -1, -1):
            lin, bn = self.linears[i], self.norms[i]
            a, w, z, mean, rstd, _ = saved[i]
            g_z, g_gamma, g_beta = torch.ops.aten.native_batch_norm_backward(
                grad, z, bn.weight, bn.running_mean, bn.running_var, mean, rstd, True,
                bn.eps, [True, True, True])
            bn.weight.grad, bn.bias.grad = g_gamma, g_beta
            lin.weight.grad = torch.mm(g_z.t(), a)
            if i:
                grad = torch.ops.aten.hardtanh_backward(torch.mm(g_z, w), saved[i - 1][5],
                                                        -_EDGE, _EDGE)
        return loss, logits


_EDGE = 1.0 + torch.finfo(torch.float32).eps  # ste_sign's pass band, |y| <= 1 in float32


def _sign_of_weight(w: torch.Tensor) -> torch.Tensor:
    """sign(w) with sign(0) = +1, in one kernel where :func:`sign` needs two.

    ``copysign`` alone maps -0.0 to -1. The latent weights hold no -0.0: the step's
    constructor turns any into +0.0, and neither Adam's update (p - u is +0.0 when it is
    zero) nor clipping makes one, so ``copysign(1, w)`` is exactly ``sign(w)`` here.
    """
    return torch.copysign(torch.ones((), dtype=w.dtype, device=w.device), w)


def fused_step_for(model: nn.Module, inputs: torch.Tensor, inputs_are_signs: bool
                   ) -> FusedHeadStep | None:
    """A :class:`FusedHeadStep` for ``model`` training on ``inputs`` when its layers are the
    ones it derives for and the inputs have the head's shape (else the forward's error)."""
    # isinstance narrows the type for mypy; subclasses may override forward, so exact type
    if not isinstance(model, BNNHead) or type(model) is not BNNHead:
        return None
    if inputs.dim() != 2 or inputs.shape[1] != model.config["in_bits"]:
        return None
    modules = list(model.net)
    linears, norms = modules[0::2], modules[1::2]
    plain = all(
        type(lin) is BinaryLinear and lin.scaling == "none" and lin.bias is None
        and lin.weight_quantizer is ste_sign and lin.input_quantizer is ste_sign
        and lin.weight_grad_hook is None
        for lin in linears)
    norms_ok = all(
        type(bn) is nn.BatchNorm1d and bn.affine and bn.track_running_stats
        and bn.momentum is not None
        for bn in norms)
    if not (plain and norms_ok and len(linears) == len(norms) and linears):
        return None
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return None
    return FusedHeadStep(model, inputs_are_signs)
