"""A label-free term that makes binary codes separable: NT-Xent between two views.

SimCLR's normalized-temperature cross-entropy, applied to the *expected signs* of the code
bits, ``tanh(logit / 2) = 2 * sigmoid(logit) - 1``: two random augmentations of one image
should get the same code, and different images different codes. Labels are never used, so an
encoder pretrained with it stays task-independent. With 200 bits on mnist-5k it raised the
ten-class accuracy of a BNN head on the codes from 94.4 % to 96.8 % (one seed, 20 epochs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPERATURE = 0.2  # SimCLR's range (0.1-0.5); 0.2 measured as good as any on mnist-5k


def expected_signs(logits: torch.Tensor) -> torch.Tensor:
    """E[2·bit − 1] of Bernoulli(sigmoid(logits)) bits: tanh(logits / 2), in (−1, 1)."""
    return torch.tanh(logits / 2)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Mean NT-Xent of the 2B anchors of paired views ``a[i]``, ``b[i]`` (each (B, D)).

    Each anchor's positive is its other view; the other 2B − 2 samples are its negatives.
    """
    if a.shape != b.shape or a.dim() != 2 or len(a) < 2:
        raise ValueError(f"nt_xent needs two (B, D) views with B >= 2, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    n = len(a)
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, positives)
