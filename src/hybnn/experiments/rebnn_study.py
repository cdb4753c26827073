"""ReBNN study: ``ste`` vs ``xnor`` vs ``rebnn`` vs ``rebnn-const`` on two model families.

- ``bcnn``: the binary CNN (:class:`BinaryCNN`) on centred images;
- ``hybnn``: the HyBNN head (:class:`BNNHead`) on codes of a VAE pretrained on the train split.

With ``net="resnet18"`` the families are the binary ResNet-18 without and with a float
teacher (``resnet18``, ``resnet18-kd``; methods ``ste``, ``reactnet``, ``rebnn``,
``rebnn-const``; :mod:`hybnn.experiments.rebnn_resnet`), ``float_twin`` holds the teacher's
accuracy, and the plots are one flips-per-layer-and-epoch map per family.

For each family, method and seed it records the final test accuracy and the per-layer
weight-flip curves (:class:`FlipMonitor`), then writes to ``out``:

- ``results.json``: ``{"methods": {...}, "models": {"bcnn": {"methods": {...}},
  "hybnn": {"methods": {...}}}, "config": ..., "machine": ..., "versions": ...}``. Each
  ``methods`` maps a method to ``acc_mean``, ``acc_std``, ``acc`` (per seed),
  ``flip_ratio_late`` (epoch-wise flip ratio averaged over the last quarter of epochs and all
  binary layers, mean over seeds), ``step_flip_ratio_late``, ``gamma_late`` and per-layer
  ``flip_curves`` (mean over seeds), ``flip_ratio_late_layers`` and ``gamma_late_layers``
  (per binary layer, mean over seeds) and ``train_seconds``. The top-level ``methods`` is
  the first family studied (the binary CNN unless only ``hybnn`` was asked for);
  ``top_level_model`` names it.
- ``table.md``: the Markdown tables; ``plots/<model>_flip_<layer>.png`` one flip-ratio plot
  per binary layer, ``plots/<model>_test_acc.png`` the accuracy curves.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybnn.artifacts import atomic_write, atomic_write_json
from hybnn.binary.methods import method_callbacks, method_scaling
from hybnn.binary.oscillation import FLIP_KEY, STEP_FLIP_KEY, FlipMonitor, late_flip_ratio
from hybnn.data import load_source, train_test
from hybnn.data.dataset import Dataset
from hybnn.experiments.config import STUDY_MODELS, StudyConfig
from hybnn.hooks import History
from hybnn.machine import machine_description
from hybnn.pipeline.config import TrainConfig


def _subset(data: Dataset, size: int | None, seed: int) -> Dataset:
    if size is None or size >= len(data):
        return data
    idx = np.random.default_rng(seed).choice(len(data), size, replace=False)
    return data.subset(np.sort(idx))


def _train_config(cfg: StudyConfig, epochs: int, seed: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed,
                       device=cfg.device)


def _run_bcnn(cfg: StudyConfig, train: Dataset, test: Dataset, method: str, seed: int,
              progress: bool) -> History:
    from hybnn.pipeline.fit import train_image_model

    _, history = train_image_model(
        "bcnn", train, test, "centered", _train_config(cfg, cfg.bcnn_epochs, seed),
        scaling=method_scaling(method), callbacks=[*method_callbacks(method), FlipMonitor()],
        progress=progress)
    return history


def _run_head(cfg: StudyConfig, train: Any, test: Any, method: str, seed: int,
              progress: bool) -> History:
    from hybnn.pipeline.fit import train_head

    _, history = train_head(
        train, test, _train_config(cfg, cfg.head_epochs, seed), hidden=cfg.hidden,
        scaling=method_scaling(method), callbacks=[*method_callbacks(method), FlipMonitor()],
        progress=progress)
    return history


def _codes(cfg: StudyConfig, train: Dataset, test: Dataset, out: Path,
           progress: bool) -> tuple[Any, Any]:
    """Pretrain the VAE on (a subset of) the train split; encode train and test."""
    from hybnn.pipeline.config import PretrainConfig
    from hybnn.pipeline.extract import encode_to_codes
    from hybnn.pipeline.pretrain import pretrain

    images = _subset(train, cfg.pretrain_size, cfg.subset_seed + 1).x
    pcfg = PretrainConfig(latent_bits=cfg.latent_bits, epochs=cfg.pretrain_epochs,
                          seed=cfg.subset_seed, device=cfg.device)
    encoder = pretrain(images, out / "encoder", pcfg,
                       {"source": cfg.data, "split": "train", "samples": len(images)},
                       progress=progress, plots=False)
    head_train = _subset(train, cfg.head_train_size, cfg.subset_seed)
    return encode_to_codes(encoder, head_train), encode_to_codes(encoder, test)


def summarize(histories: dict[str, list[History]]) -> dict[str, dict[str, Any]]:
    """Per method: accuracy mean/std over seeds, late flip ratios and mean flip curves."""
    out: dict[str, dict[str, Any]] = {}
    for method, runs in histories.items():
        accs = [h.last("test_acc") for h in runs]
        layers = [k[len(FLIP_KEY) + 1:] for k in runs[0].epochs[0] if k.startswith(FLIP_KEY + "/")]
        curves = {n: np.mean([h.series(f"{FLIP_KEY}/{n}") for h in runs], axis=0).tolist()
                  for n in layers}
        step_curves = {n: np.mean([h.series(f"{STEP_FLIP_KEY}/{n}") for h in runs],
                                  axis=0).tolist() for n in layers}
        gammas = [late_flip_ratio(h, "rebnn_gamma") for h in runs if h.series("rebnn_gamma")]
        gamma_layers = {n: float(np.mean([late_flip_ratio(h, f"rebnn_gamma/{n}") for h in runs]))
                        for n in layers if runs[0].series(f"rebnn_gamma/{n}")}
        out[method] = {
            "acc_mean": float(np.mean(accs)),
            "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
            "acc": accs,
            "flip_ratio_late": float(np.mean([late_flip_ratio(h) for h in runs])),
            "step_flip_ratio_late": float(np.mean([late_flip_ratio(h, STEP_FLIP_KEY)
                                                   for h in runs])),
            "gamma_late": float(np.mean(gammas)) if gammas else 0.0,
            "flip_ratio_late_layers": {n: float(np.mean([late_flip_ratio(h, f"{FLIP_KEY}/{n}")
                                                          for h in runs])) for n in layers},
            "gamma_late_layers": gamma_layers,
            "seconds_per_epoch": float(np.mean([h.train_seconds_per_epoch() for h in runs])),
            "train_seconds": float(np.mean([sum(h.series("seconds")) for h in runs])),
            "test_acc_curve": np.mean([h.series("test_acc") for h in runs], axis=0).tolist(),
            "flip_curves": curves,
            "step_flip_curves": step_curves,
        }
    return out


def _run_cnn(cfg: StudyConfig, train: Dataset, test: Dataset, out: Path, progress: bool,
             log: Any) -> dict[str, Any]:
    """The binary CNN and the HyBNN head (``cfg.models``), every method and seed."""
    models: dict[str, Any] = {}
    test = _subset(test, cfg.test_size, cfg.subset_seed)
    for family in cfg.models:
        tf = time.perf_counter()
        if family == "bcnn":
            fam_train: Any = _subset(train, cfg.train_size, cfg.subset_seed)
            fam_test: Any = test
            runner = _run_bcnn
            sizes = {"train": len(fam_train), "test": len(test)}
        else:
            fam_train, fam_test = _codes(cfg, train, test, out, progress)
            runner = _run_head
            sizes = {"train": len(fam_train), "test": len(fam_test),
                     "pretrain": min(cfg.pretrain_size or len(train), len(train))}
        histories: dict[str, list[History]] = {}
        for method in cfg.methods:
            for seed in cfg.seeds:
                h = runner(cfg, fam_train, fam_test, method, seed, progress)
                histories.setdefault(method, []).append(h)
                log(f"[rebnn study] {family} {method} seed {seed}: test acc "
                    f"{h.last('test_acc'):.4f}, late flip ratio {late_flip_ratio(h):.5f}")
        models[family] = {"methods": summarize(histories), "sizes": sizes,
                          "seconds": time.perf_counter() - tf}
    return models


def run_study(cfg: StudyConfig, out: str | os.PathLike[str] = "runs/study-rebnn",
              progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Run the study described by ``cfg`` (``cfg.net``: the binary CNN and the HyBNN head, or
    the binary ResNet-18, :mod:`hybnn.experiments.rebnn_resnet`) and write its results,
    table and plots to ``out``."""
    from hybnn.pipeline.resnet import BINARY_METHOD

    for m in cfg.methods:  # fail fast on an unknown method
        if cfg.net == "cnn":
            method_scaling(m)
        elif m not in BINARY_METHOD:
            raise ValueError(f"unknown ResNet method {m!r}; use {', '.join(BINARY_METHOD)}")
    unknown = set(cfg.models) - set(STUDY_MODELS) if cfg.net == "cnn" else set()
    if unknown:
        raise ValueError(f"unknown model families {sorted(unknown)}; use {', '.join(STUDY_MODELS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    twin = None
    try:
        train, test = train_test(load_source(cfg.data))
        if cfg.net == "resnet18":
            from hybnn.experiments.rebnn_resnet import run_resnet

            rc = cfg.resnet
            models, twin = run_resnet(cfg, _subset(train, rc.train_size, cfg.subset_seed),
                                      _subset(test, rc.test_size, cfg.subset_seed), out,
                                      progress, log)
        else:
            models = _run_cnn(cfg, train, test, out, progress, log)
    finally:
        torch.set_num_threads(threads)
    from hybnn.artifacts import versions

    top = next(iter(models))
    results = {
        "methods": models[top]["methods"],
        "top_level_model": top,
        "models": models,
        "float_twin": twin,
        "config": asdict(cfg),
        "seconds": time.perf_counter() - t0,
        "machine": machine_description(),
        "versions": versions(),
        "platform": platform.platform(),
    }
    atomic_write_json(out / "results.json", results)
    table = results_table(results)
    atomic_write(out / "table.md", lambda p: p.write_text(table + "\n"))
    plot_study(results, out / "plots")
    return results


def baseline_method(methods: dict[str, Any]) -> str | None:
    """The method flips are compared with: ReActNet's on the ResNet, else plain ``ste``."""
    return next((m for m in ("reactnet", "ste") if m in methods), None)


def _family_line(family: str, res: dict[str, Any], cfg: dict[str, Any]) -> str:
    sizes, seeds = res["sizes"], ", ".join(map(str, cfg["seeds"]))
    if family.startswith("resnet18"):
        rc = cfg["resnet"]
        kd = (f"distilled from the float twin ({rc['teacher_epochs']} epochs) in both steps"
              if family.endswith("-kd") else "cross-entropy, no teacher")
        step1 = ", ".join(f"{a:.4f}" for a in res.get("step1_acc", []))
        return (f"**{family}**: binary ResNet-18, width {rc['width']}, {kd}; step 1 "
                f"{rc['step1_epochs']} epochs (test acc per seed {step1}), step 2 "
                f"{rc['epochs']} epochs; {sizes['train']} training / {sizes['test']} test "
                f"images of {cfg['data']}, Adam {rc['lr']:g} {rc['schedule']}, batch "
                f"{rc['batch_size']}, augment {rc['augment']}, seeds {seeds}.\n")
    epochs = cfg["bcnn_epochs"] if family == "bcnn" else cfg["head_epochs"]
    what = ("binary CNN on centred images" if family == "bcnn"
            else f"HyBNN head {cfg['latent_bits']}-{'-'.join(map(str, cfg['hidden']))} "
                 f"on VAE codes (VAE: {sizes.get('pretrain')} train images, "
                 f"{cfg['pretrain_epochs']} epochs)")
    return (f"**{family}**: {what}; {sizes['train']} training / {sizes['test']} test "
            f"samples of {cfg['data']}, {epochs} epochs, seeds {seeds}.\n")


def results_table(results: dict[str, Any]) -> str:
    """Markdown: one table per model family, methods as rows (the ResNet's also its late
    flips and γ per layer)."""
    cfg = results["config"]
    parts = []
    twin = results.get("float_twin")
    if twin:
        parts.append(f"Float twin (resnet18-float, the teacher): test acc {twin['acc']:.4f} "
                     f"after {twin['epochs']} epochs ({twin['train_seconds']:.0f} s).\n")
    for family, res in results["models"].items():
        methods = res["methods"]
        base_name = baseline_method(methods)
        parts.append(_family_line(family, res, cfg))
        parts.append(f"| method | test acc (mean ± std) | flip ratio, last ¼ epochs | "
                     f"per-step flip ratio, last ¼ | flip reduction vs {base_name} | "
                     "mean γ, last ¼ | train s |")
        parts.append("|---|---|---|---|---|---|---|")
        base = methods.get(base_name or "", {}).get("flip_ratio_late")
        for method, r in methods.items():
            ratio = (f"{base / r['flip_ratio_late']:.2f}×"
                     if base and r["flip_ratio_late"] > 0 else "–")
            parts.append(
                f"| {method} | {r['acc_mean']:.4f} ± {r['acc_std']:.4f} | "
                f"{r['flip_ratio_late']:.5f} | {r['step_flip_ratio_late']:.6f} | {ratio} | "
                f"{r['gamma_late']:.2e} | {r.get('train_seconds', float('nan')):.0f} |")
        parts.append("")
        if family.startswith("resnet18"):
            parts.append(layer_table(methods))
            parts.append("")
    return "\n".join(parts).rstrip()


def layer_table(methods: dict[str, Any]) -> str:
    """Markdown: per binary layer, each method's late flip ratio and each ReBNN's late γ."""
    names = list(methods)
    gammas = [m for m in names if methods[m].get("gamma_late_layers")]
    layers = list(next(iter(methods.values()))["flip_ratio_late_layers"])
    head = ["layer", *(f"flips {m}" for m in names), *(f"γ {m}" for m in gammas)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for layer in layers:
        cells = [layer, *(f"{methods[m]['flip_ratio_late_layers'][layer]:.5f}" for m in names),
                 *(f"{methods[m]['gamma_late_layers'].get(layer, 0.0):.2e}" for m in gammas)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_study(results: dict[str, Any], directory: str | os.PathLike[str]) -> list[Path]:
    """One PNG per (model family, binary layer) with each method's flip-ratio curve."""
    from hybnn.plots import plot_curves, plot_layer_epoch_maps

    directory = Path(directory)
    paths = []
    cfg = results.get("config", {})
    where = (f"{cfg.get('data', '?')}, seeds "
             f"{', '.join(map(str, cfg.get('seeds', [])))}")
    for family, res in results["models"].items():
        methods = res["methods"]
        first = next(iter(methods.values()))
        if family.startswith("resnet18"):  # 16 layers: one map per method, not 16 plots
            layers = list(first["flip_curves"])
            maps = {m: [r["flip_curves"][n] for n in layers] for m, r in methods.items()}
            paths.append(plot_layer_epoch_maps(
                maps, layers, directory / f"{family}_flips_per_layer.png",
                f"{family} on {where}: weights whose sign flipped per layer and epoch"))
        for layer in first["flip_curves"] if not family.startswith("resnet18") else ():
            curves = {m: r["flip_curves"][layer] for m, r in methods.items()}
            name = layer.replace(".", "_") or "root"
            paths.append(plot_curves(curves, directory / f"{family}_flip_{name}.png",
                                     f"{family} {layer} on {where}: weights whose sign "
                                     "flipped per epoch", "flip ratio"))
        paths.append(plot_curves({m: r["test_acc_curve"] for m, r in methods.items()},
                                 directory / f"{family}_test_acc.png",
                                 f"{family} on {where}: test accuracy (mean)", "test accuracy"))
    return paths
