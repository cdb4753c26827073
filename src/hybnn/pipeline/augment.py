"""Label-free image augmentations for phase 1 (and for distillation): random shifts, and
random affine maps (rotation, zoom and shift) that give the contrastive term its two views."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Translate each image by a random whole-pixel offset in [-shift, shift]^2, zero-filled."""
    n, c, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n, 1, 1, 1))
    dx = torch.randint(0, 2 * shift + 1, (n, 1, 1, 1))
    rows = dy + torch.arange(h).view(1, 1, h, 1)
    cols = dx + torch.arange(w).view(1, 1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]


def random_affine(x: torch.Tensor, shift: float, degrees: float, zoom: float) -> torch.Tensor:
    """Rotate each image by up to ``degrees``, scale it by up to ``1 ± zoom`` and translate it
    by up to ``shift`` pixels per axis (uniform draws, bilinear, zero outside the image)."""
    n, _, h, w = x.shape
    angle = (torch.rand(n) * 2 - 1) * math.radians(degrees)
    scale = 1 + (torch.rand(n) * 2 - 1) * zoom
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size
    tx = (torch.rand(n) * 2 - 1) * (2 * shift / w)
    ty = (torch.rand(n) * 2 - 1) * (2 * shift / h)
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
