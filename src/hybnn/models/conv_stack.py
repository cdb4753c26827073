"""Shape bookkeeping shared by the paper's three-conv-layer networks."""

from __future__ import annotations

CONV_CHANNELS = (32, 64, 128)


def conv_out_size(
    size: int, layers: int = 3, kernel: int = 3, stride: int = 2, pad: int = 1
) -> int:
    """Spatial size after ``layers`` stride-2 3x3 convolutions with padding 1."""
    for _ in range(layers):
        size = (size + 2 * pad - kernel) // stride + 1
    return size
