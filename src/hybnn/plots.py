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
    """One line per named series (e.g. accuracy per epoch of each model) over an integer
    axis (epochs, rounds), with the legend beside the plot, never over the curves."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    integer_axis(ax.xaxis)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    outside_legend(ax)
    return save_figure(fig, path)


def integer_axis(axis: Any) -> None:
    """Ticks only at whole numbers (epochs, rounds, tasks are counted, not measured)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def outside_legend(ax: Any) -> None:
    """A legend to the right of the axes, where it cannot hide a curve."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: str | os.PathLike[str],
                   title: str) -> Path:
    """The confusion matrix as a heat map (rows: true class, columns: predicted), with the
    count in every cell and each row's accuracy in its label."""
    m = np.asarray(matrix)
    k = len(names)
    totals = m.sum(axis=1)
    share = m / np.maximum(totals, 1)[:, None]
    size = max(3.2, 0.55 * k + 1.8)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black")
    row_names = [f"{n} ({100 * share[i, i]:.1f} %)" if totals[i] else f"{n} (-)"
                 for i, n in enumerate(names)]
    ax.set_xticks(range(k), [str(n) for n in names], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), row_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (per-class accuracy)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return save_figure(fig, path)


def plot_layer_epoch_maps(maps: Mapping[str, Sequence[Sequence[float]]],
                          layers: Sequence[str], path: str | os.PathLike[str],
                          title: str) -> Path:
    """One heat map per named run (e.g. a training method): rows are ``layers``, columns
    epochs, the colour a per-layer value such as the flip ratio; one shared log colour
    scale, so the maps compare."""
    from matplotlib.colors import LogNorm

    arrays = {name: np.asarray(m, dtype=float) for name, m in maps.items()}
    positive = np.concatenate([a[a > 0].ravel() for a in arrays.values()] or [np.ones(1)])
    low, high = (positive.min(), positive.max()) if positive.size else (1e-6, 1.0)
    norm = LogNorm(vmin=low, vmax=max(high, low * 10))
    n = len(arrays)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n + 1.8, 0.22 * len(layers) + 1.6),
                             sharey=True, squeeze=False)
    image = None
    for ax, (name, a) in zip(axes[0], arrays.items(), strict=True):
        # zero flips have no log: drawn at the scale's floor
        image = ax.imshow(np.maximum(a, low), aspect="auto", norm=norm, cmap="viridis",
                          extent=(0.5, a.shape[1] + 0.5, len(layers) - 0.5, -0.5))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        integer_axis(ax.xaxis)
    axes[0, 0].set_yticks(range(len(layers)), list(layers), fontsize=6)
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), fraction=0.03, pad=0.02, label="flip ratio")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
