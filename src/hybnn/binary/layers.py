"""Binary layers with float latent weights.

Each layer keeps a float *latent* weight ``w`` (clipped to [-1, 1] after every optimizer step
by :func:`clip_latent_weights`) and computes with ``ŵ = α · sign(w)``, where the per-output-
channel scale α depends on ``scaling``:

- ``"none"``  α = 1 (the paper's plain sign + STE BNN);
- ``"xnor"``  α = mean |w| over the channel (XNOR-Net), recomputed every forward pass;
- ``"learned"`` α is a trainable parameter initialised to mean |w| (ReBNN).

Inputs are binarized by ``input_quantizer`` (``None`` keeps them as they are, e.g. for a layer
whose input is already ±1). Padding of :class:`BinaryConv2d` is applied *after* the input sign
with the value +1, which is what zero-padding a float activation and then taking sign(0) = +1
gives; the packed engine pads the same way (no edge correction needed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hybnn.binary.names import SCALINGS
from hybnn.binary.quantizers import Quantizer, get_quantizer

Scaling = Literal["none", "xnor", "learned"]
PAD_VALUE = 1.0


class BinaryLayer(nn.Module):
    """Shared weight binarization of :class:`BinaryLinear` and :class:`BinaryConv2d`."""

    weight: nn.Parameter
    # Called with ∂L/∂ŵ during backward when set (ReBNN's γ needs max |∂L/∂ŵ| per channel).
    weight_grad_hook: Callable[[torch.Tensor], None] | None = None

    def _init_binary(
        self,
        scaling: str,
        weight_quantizer: str | Quantizer,
        input_quantizer: str | Quantizer | None,
    ) -> None:
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")
        self.scaling = scaling
        self.weight_quantizer = get_quantizer(weight_quantizer)
        self.input_quantizer = None if input_quantizer is None else get_quantizer(input_quantizer)
        # A build on the meta device (loaders check shapes first) skips the value
        # computations: their meta kernels cost seconds of CPU on first use.
        meta = self.weight.is_meta
        if not meta:
            with torch.no_grad():
                self.weight.clamp_(-1.0, 1.0)
        if scaling == "learned":
            self.alpha = nn.Parameter(torch.empty(self.weight.shape[0], device="meta") if meta
                                      else self._mean_abs_weight().detach().clone())
        else:
            self.register_parameter("alpha", None)

    def _mean_abs_weight(self) -> torch.Tensor:
        return self.weight.abs().flatten(1).mean(dim=1)

    def weight_scale(self) -> torch.Tensor | None:
        """Per-output-channel α, or None when the layer is unscaled."""
        if self.scaling == "xnor":
            return self._mean_abs_weight()
        if self.scaling == "learned":
            return self.alpha
        return None

    def binary_weight(self) -> torch.Tensor:
        """ŵ = α · sign(w) with the straight-through gradient of the weight quantizer."""
        w_bin = self.weight_quantizer(self.weight)
        alpha = self.weight_scale()
        w_hat = w_bin if alpha is None else w_bin * alpha.view(-1, *([1] * (w_bin.dim() - 1)))
        if self.weight_grad_hook is not None and w_hat.requires_grad:
            w_hat.register_hook(self.weight_grad_hook)
        return w_hat

    def binarize_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def clip_latent_(self) -> None:
        with torch.no_grad():
            self.weight.clamp_(-1.0, 1.0)


class BinaryLinear(BinaryLayer):
    """Fully connected layer with binary weights (and binary inputs unless told otherwise)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        scaling: str = "none",
        weight_quantizer: str | Quantizer = "ste_sign",
        input_quantizer: str | Quantizer | None = "ste_sign",
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._init_binary(scaling, weight_quantizer, input_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.binarize_input(x), self.binary_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, scaling={self.scaling}"


class BinaryConv2d(BinaryLayer):
    """2-D convolution with binary weights and binary inputs; pads with +1 after the sign."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
        scaling: str = "none",
        weight_quantizer: str | Quantizer = "ste_sign",
        input_quantizer: str | Quantizer | None = "ste_sign",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        fan_in = in_channels * kernel_size * kernel_size
        bound = 1.0 / fan_in**0.5
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, kernel_size, kernel_size).uniform_(
                -bound, bound
            )
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._init_binary(scaling, weight_quantizer, input_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.binarize_input(x)
        if self.padding:
            p = self.padding
            x = F.pad(x, (p, p, p, p), value=PAD_VALUE)
        return F.conv2d(x, self.binary_weight(), self.bias, stride=self.stride)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, scaling={self.scaling}"
        )


def binary_layers(model: nn.Module) -> Iterator[tuple[str, BinaryLayer]]:
    """Every binary layer of ``model`` with its qualified name."""
    for name, module in model.named_modules():
        if isinstance(module, BinaryLayer):
            yield name, module


def clip_latent_weights(model: nn.Module) -> None:
    """Clip every binary layer's latent weights to [-1, 1] (call after each optimizer step)."""
    for _, layer in binary_layers(model):
        layer.clip_latent_()
