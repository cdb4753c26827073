"""Phase 1, representation learning: train the binary-latent VAE on a general data set.

Writes the frozen encoder artifact (safetensors + JSON + SHA-256 fingerprint), PNGs of
reconstructions and of samples from random codes, and bit-usage statistics: how often each
bit is 1 over the data. A bit that is (almost) always 0 or always 1 carries no information.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybnn.artifacts import atomic_write_json, require_kind_or_absent, versions
from hybnn.encoders import vae as vae_encoder
from hybnn.errors import DataError
from hybnn.models.contrastive import expected_signs, nt_xent
from hybnn.models.vae import BinaryLatentVAE, vae_loss
from hybnn.pipeline.augment import random_affine, random_shift
from hybnn.pipeline.checkpoint import CHECKPOINT_NAME, run_tag
from hybnn.pipeline.config import PretrainConfig
from hybnn.pipeline.loop import Schedule, run_epochs
from hybnn.pipeline.train import resolve_device

DEAD_BIT_THRESHOLD = 0.01


def train_vae(images: np.ndarray, config: PretrainConfig, progress: bool = True,
              checkpoint: Path | None = None, resume: bool = False,
              ) -> tuple[BinaryLatentVAE, list[dict[str, Any]]]:
    """Train a :class:`BinaryLatentVAE` on images (N, C, H, W) in [0, 1].

    Each epoch reseeds the global RNG from (seed, epoch); with ``checkpoint`` the state is
    saved after every epoch, and ``resume`` continues from it exactly (even after kill -9).
    """
    if images.ndim != 4 or len(images) < 2:
        raise DataError(f"pretraining needs at least 2 images of shape (N, C, H, W), "
                        f"got {images.shape}")
    if config.latent_bits < 1 or config.batch_size < 2 or config.epochs < 1:
        raise DataError("pretraining needs --bits >= 1, --batch-size >= 2 and --epochs >= 1")
    if not (config.lr > 0 and math.isfinite(config.lr)) or config.beta < 0 or config.tau <= 0:
        raise DataError("pretraining needs a positive finite --lr, --beta >= 0 and tau > 0")
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    vae = BinaryLatentVAE(images.shape[2:], images.shape[1], config.latent_bits,
                          config.tau).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=config.lr)
    x_all = torch.from_numpy(images)
    tag = run_tag(vae, {k: v for k, v in asdict(config).items() if k != "device"}, x_all)

    def body(epoch: int, batches: Iterator[torch.Tensor]) -> dict[str, Any]:
        sums = np.zeros(4)
        for idx in batches:
            loss, rec, kl, con = _batch_loss(vae, x_all[idx], config, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += np.array([loss.item(), rec.item(), kl.item(), con.item()]) * len(idx)
        loss_e, rec_e, kl_e, con_e = sums / len(x_all)
        return {"loss": loss_e, "rec": rec_e, "kl": kl_e,
                **({"contrastive": con_e} if config.contrastive else {})}

    schedule = Schedule(config.epochs, config.lr, config.batch_size, config.seed)
    history = run_epochs(schedule, len(x_all), vae, opt, body, desc="pretrain VAE",
                         progress=progress, checkpoint=checkpoint, resume=resume, tag=tag)
    return vae.eval(), history.epochs


def _batch_loss(vae: BinaryLatentVAE, xb: torch.Tensor, config: PretrainConfig,
                device: torch.device) -> tuple[torch.Tensor, ...]:
    """(loss, reconstruction, KL, contrastive) of one batch; both views in one encoder pass."""
    view = augment(xb, config)
    if not config.contrastive:
        loss, rec, kl = vae_loss(vae, view.to(device), config.beta)
        return loss, rec, kl, torch.zeros(())
    other = augment(xb, config)
    logits = vae.logits(torch.cat([view, other]).to(device))
    first, second = logits.split(len(xb))
    loss, rec, kl = vae_loss(vae, view.to(device), config.beta, logits=first)
    con = nt_xent(expected_signs(first), expected_signs(second))
    # per latent bit, like the KL (a sum over bits): one weight suits every code width
    return loss + config.contrastive * vae.latent_bits * con, rec, kl, con


def augment(x: torch.Tensor, config: PretrainConfig) -> torch.Tensor:
    """One random view of a batch: affine when rotation or zoom is asked, else shifts."""
    if config.rotation or config.zoom:
        return random_affine(x, config.shift, config.rotation, config.zoom)
    return random_shift(x, config.shift) if config.shift else x


def bit_usage(codes: np.ndarray) -> dict[str, Any]:
    """Per-bit frequency of 1, dead bits, and the mean per-bit entropy (in bits)."""
    p = codes.mean(axis=0) if len(codes) else np.zeros(codes.shape[1])
    q = np.clip(p, 1e-12, 1 - 1e-12)
    entropy = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    dead = (p < DEAD_BIT_THRESHOLD) | (p > 1 - DEAD_BIT_THRESHOLD)
    unique = len(np.unique(np.packbits(codes, axis=1), axis=0)) if len(codes) else 0
    return {
        "bits": int(codes.shape[1]),
        "dead_bits": int(dead.sum()),
        "mean_entropy_bits": float(entropy.mean()),
        "unique_codes": int(unique),
        "samples": len(codes),
        "p_one": [round(float(v), 4) for v in p],
    }


def pretrain(images: np.ndarray, out: str | os.PathLike[str], config: PretrainConfig,
             data_info: dict[str, Any], progress: bool = True, plots: bool = True,
             resume: bool = False) -> vae_encoder.VaeEncoder:
    """Train, save and describe the encoder in ``out``; returns the frozen encoder.

    A checkpoint in ``out`` after every epoch lets ``resume=True`` continue an interrupted
    run; it is removed once the encoder is saved.
    """
    out = Path(out)
    require_kind_or_absent(out, vae_encoder.KIND)  # before training, not after
    t0 = time.perf_counter()
    vae, history = train_vae(images, config, progress, out / CHECKPOINT_NAME, resume)
    encoder = vae_encoder.save(out, vae, {
        "pretrain": asdict(config),
        "data": data_info,
        "history": history,
        "train_seconds": time.perf_counter() - t0,
        "versions": versions(),
    })
    (out / CHECKPOINT_NAME).unlink(missing_ok=True)
    codes = encoder.encode(images)
    usage = bit_usage(codes)
    atomic_write_json(out / "bit_usage.json", usage)
    if plots:
        from hybnn.plots import plot_bit_usage, plot_reconstructions

        shown = np.linspace(0, len(images) - 1, min(16, len(images))).astype(int)  # every class
        recon, samples = reconstructions(vae, images[shown], config.seed)
        plot_reconstructions(images[shown], recon, samples, out / "reconstructions.png")
        plot_bit_usage(usage, out / "bit_usage.png")
    return encoder


@torch.no_grad()
def reconstructions(vae: BinaryLatentVAE, images: np.ndarray,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reconstructions of ``images`` from their codes, and decodings of random codes,
    computed on the VAE's own device and returned as numpy arrays."""
    vae.eval()
    device = next(vae.parameters()).device
    x = torch.from_numpy(images).to(device)
    recon = vae.decode(vae.encode(x).float())
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2, (len(images), vae.latent_bits), generator=g).float()
    samples = vae.decode(codes.to(device))
    return recon.cpu().numpy(), samples.cpu().numpy()
