"""PNG plots: reconstructions, bit usage, training curves (headless Agg; numpy in, no torch)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from hybnn.artifacts import atomic_write


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110,
                                                    bbox_inches="tight"))
    plt.close(fig)
    return out


def plot_reconstructions(images: np.ndarray, recon: np.ndarray, samples: np.ndarray,
                         path: str | os.PathLike[str]) -> Path:
    """Top: inputs. Middle: reconstructions from their binary codes. Bottom: random codes."""
    rows = [("input", images), ("from code", recon), ("random code", samples)]
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(n * 0.9, 3.1))
    axes = np.atleast_2d(axes).reshape(3, n)
    for r, (label, batch) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(batch[c, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle("binary latent: inputs, reconstructions from their codes, random codes",
                 fontsize=9)
    return save_figure(fig, path)


def plot_bit_usage(usage: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    p = np.asarray(usage["p_one"])
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.bar(np.arange(len(p)), p, width=1.0, color="tab:blue")
    ax.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("latent bit")
    ax.set_ylabel("P(bit = 1)")
    ax.set_ylim(0, 1)
    ax.set_title(f"bit usage: {usage['dead_bits']} dead of {usage['bits']}, mean entropy "
                 f"{usage['mean_entropy_bits']:.2f} bit, {usage['unique_codes']} unique codes "
                 f"/ {usage['samples']}", fontsize=9)
    return save_figure(fig, path)


def plot_curves(curves: Mapping[str, Sequence[float]], path: str | os.PathLike[str],
                title: str, ylabel: str, xlabel: str = "epoch") -> Path:
    """One line per named series (e.g. accuracy per epoch of each model)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
