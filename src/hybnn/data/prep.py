"""Input preparation for networks that read images, recorded with every result.

- ``unit``: pixels in [0, 1] as stored. With sign(0) = +1 every pixel binarizes to +1:
  a binary CNN fed this way sees a blank image (the paper's ~50 % baseline).
- ``centered``: x - 0.5, zero-mean around mid-grey; the sign keeps the shape (fair baseline).
"""

from __future__ import annotations

import numpy as np

from hybnn.data.names import PREPS


def prepare(x: np.ndarray, prep: str) -> np.ndarray:
    if prep == "unit":
        return x
    if prep == "centered":
        return (x - np.float32(0.5)).astype(np.float32)
    raise ValueError(f"unknown input preparation {prep!r}; choose one of {', '.join(PREPS)}")
