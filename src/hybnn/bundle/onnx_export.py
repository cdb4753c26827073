"""The encoder's conv stack as an ONNX graph: images (N, C, H, W) -> bit logits (N, bits).

The graph is the VAE's code layers (:meth:`BinaryLatentVAE.code_net`): the latent logits,
or a batch-normed conv map, flattened.

torch's exporter (``torch.onnx.export``, the dynamo exporter that is torch 2.13's default)
with a symbolic batch dimension. The graph stops at the logits; the bit is ``logit >= 0``,
taken by the packed head's fused sign (sign(0) = +1, as in :meth:`BinaryLatentVAE.encode`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import torch
from torch import nn

from hybnn.models.vae import BinaryLatentVAE
from hybnn.onnxgraph import INPUT_NAME, OPSET, OUTPUT_NAME


class EncoderLogits(nn.Module):
    """The part of the VAE a deployed encoder runs: :meth:`BinaryLatentVAE.code_net`."""

    def __init__(self, vae: BinaryLatentVAE) -> None:
        super().__init__()
        self.encoder = vae.code_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def export_onnx(module: nn.Module, input_shape: tuple[int, int, int],
                output_name: str = OUTPUT_NAME) -> bytes:
    """ONNX bytes of ``module`` (eval mode, float32) for inputs (batch, *input_shape)."""
    was_training = module.training
    module.eval()
    example = torch.rand(2, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    log = logging.getLogger("torch.onnx")
    level = log.level
    try:
        # the exporter reports each of its steps on stdout and logs about optional packages
        log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, (example,), dynamo=True, opset_version=OPSET, verbose=False,
                input_names=[INPUT_NAME], output_names=[output_name],
                dynamic_shapes=({0: batch},),
            )
    finally:
        log.setLevel(level)
        module.train(was_training)
    if program is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    return bytes(program.model_proto.SerializeToString())


def encoder_onnx(vae: BinaryLatentVAE) -> bytes:
    """ONNX bytes of the encoder's logits (input ``images``, output ``logits``)."""
    c = int(vae.config["in_channels"])
    return export_onnx(EncoderLogits(vae), (c, *vae.image_size))
