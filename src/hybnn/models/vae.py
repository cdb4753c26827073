"""Full-precision VAE with a binary (Bernoulli) latent space: HyBNN's feature extractor.

Encoder as in BinPlay: three 3x3 stride-2 conv + batch norm + LeakyReLU layers (32, 64, 128
filters), then a linear layer to ``latent_bits`` logits. Each logit parameterises a
Bernoulli bit. During training the bit is sampled with a straight-through relaxed Bernoulli
(logistic noise, temperature ``tau``; hard 0/1 forward, soft gradient backward) and the KL
to a Bernoulli(0.5) prior keeps bits informative but spread. At extraction the code is
deterministic: bit = [logit >= 0]. The decoder mirrors the encoder (FC, then transposed
convs, sigmoid output) and is only needed for training and for looking at reconstructions.

``code`` names where the codes a task head sees come from (:data:`CODE_LAYERS`): the
paper's Bernoulli latent (``latent``, the default), or the sign of the batch-normed feature
map of the second or third conv block (``conv2``: 64 x 7 x 7 = 3,136 bits on 28 x 28
images; ``conv3``: 128 x 4 x 4 = 2,048 bits), which the latent's bottleneck has not yet
compressed. The VAE and its training are the same for every choice; the decoder always
reads the latent.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hybnn.models.conv_stack import CONV_CHANNELS, conv_out_size
from hybnn.models.names import CODE_LAYER_NAMES

# Code layer -> the conv block whose batch-normed map is the code (None: the latent logits).
# The encoder is (conv, bn, LeakyReLU) x 3, flatten, linear: block b ends at module 3b - 1.
CODE_LAYERS: dict[str, int | None] = dict(zip(CODE_LAYER_NAMES, (None, 2, 3), strict=True))


class BinaryLatentVAE(nn.Module):
    def __init__(
        self,
        image_size: tuple[int, int] = (28, 28),
        in_channels: int = 1,
        latent_bits: int = 200,
        tau: float = 1.0,
        code: str = "latent",
    ) -> None:
        super().__init__()
        if not isinstance(code, str) or code not in CODE_LAYERS:
            raise ValueError(f"code layer must be one of {', '.join(CODE_LAYERS)}, got {code!r}")
        self.config: dict[str, Any] = {
            "image_size": [int(image_size[0]), int(image_size[1])],
            "in_channels": int(in_channels),
            "latent_bits": int(latent_bits),
            "tau": float(tau),
        }
        if code != "latent":  # absent = latent: every earlier artifact keeps its config
            self.config["code"] = code
        self.code = code
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.latent_bits = int(latent_bits)
        self.tau = float(tau)
        layers: list[nn.Module] = []
        ch = in_channels
        for out in CONV_CHANNELS:
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2)]
            ch = out
        self.s = (conv_out_size(image_size[0]), conv_out_size(image_size[1]))
        flat = ch * self.s[0] * self.s[1]
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, latent_bits))
        self.decoder_fc = nn.Sequential(
            nn.Linear(latent_bits, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, flat), nn.LeakyReLU(0.2),
        )
        rev = list(reversed(CONV_CHANNELS))
        up: list[nn.Module] = []
        for a, b in itertools.pairwise(rev):
            up += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), nn.BatchNorm2d(b),
                   nn.LeakyReLU(0.2)]
        up += [nn.ConvTranspose2d(rev[-1], in_channels, 4, stride=2, padding=1)]
        self.decoder_conv = nn.Sequential(*up)

    def code_net(self) -> nn.Sequential:
        """The encoder modules whose output's sign is the code (:attr:`code`), flattened."""
        block = CODE_LAYERS[self.code]
        if block is None:
            return self.encoder
        return nn.Sequential(*list(self.encoder)[:3 * block - 1], nn.Flatten())

    @property
    def code_bits(self) -> int:
        """Bits of a code: the latent's, or the channels x height x width of the map."""
        block = CODE_LAYERS[self.code]
        if block is None:
            return self.latent_bits
        size = (conv_out_size(self.image_size[0], block), conv_out_size(self.image_size[1], block))
        return CONV_CHANNELS[block - 1] * size[0] * size[1]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of the latent bits for images ``x`` in [0, 1]."""
        return self.encoder(x)

    def sample_bits(self, logits: torch.Tensor) -> torch.Tensor:
        """Straight-through relaxed Bernoulli sample: hard {0, 1} forward, soft gradient."""
        u = torch.rand_like(logits).clamp_(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / self.tau)
        hard = (soft >= 0.5).to(soft.dtype)
        return hard + soft - soft.detach()

    def decode(self, bits: torch.Tensor) -> torch.Tensor:
        """Reconstruct images (probabilities in [0, 1]) from {0, 1} bits."""
        h = self.decoder_fc(bits).view(-1, CONV_CHANNELS[-1], *self.s)
        out = self.decoder_conv(h)
        if out.shape[-2:] != self.image_size:
            out = F.interpolate(out, size=self.image_size, mode="bilinear", align_corners=False)
        return torch.sigmoid(out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(x)
        bits = self.sample_bits(logits) if self.training else (logits >= 0).to(logits.dtype)
        return self.decode(bits), logits

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic binary code (bool tensor of shape (N, latent_bits))."""
        return self.logits(x) >= 0


def kl_to_uniform_bernoulli(logits: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(sigmoid(logits)) || Bernoulli(0.5)), summed over bits, per sample."""
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    log_q = F.logsigmoid(-logits)
    return (p * log_p + (1 - p) * log_q + math.log(2.0)).sum(dim=1)


def vae_loss(
    model: BinaryLatentVAE, x: torch.Tensor, beta: float = 1.0,
    logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO: Bernoulli reconstruction (BCE) + beta * KL, batch means of (loss, rec, kl).

    ``logits`` of ``x`` when already computed (e.g. in one encoder pass with other views).
    """
    if logits is None:
        logits = model.logits(x)
    bits = model.sample_bits(logits) if model.training else (logits >= 0).to(logits.dtype)
    recon = model.decode(bits)
    rec = F.binary_cross_entropy(recon, x, reduction="none").flatten(1).sum(dim=1).mean()
    kl = kl_to_uniform_bernoulli(logits).mean()
    return rec + beta * kl, rec, kl
