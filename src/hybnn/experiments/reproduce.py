"""`hybnn reproduce`: the HyBNN paper's experiment, run honestly on real data.

Phase 1 trains the binary-latent VAE on the general data (the training split, every class,
labels unused) and freezes it. For each task, phase 2 extracts packed codes of the task's
train and test splits, and phase 3 trains, for every seed:

- ``hybnn``: the BNN head (200 -> 128 (BN) -> classes) on codes;
- ``bcnn_unit``: the plain binary CNN on ``unit`` inputs (pixels in [0, 1]; sign(0) = +1
  makes every pixel +1: the paper's ~50 % baseline);
- ``bcnn_centered``: the same binary CNN on ``centered`` inputs (x - 0.5);
- ``fpcnn``: the full-precision CNN of the same shape on centered inputs (the ceiling).

Accuracy is the test accuracy after the last epoch (no early stopping on the test set).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybnn.artifacts import atomic_write, atomic_write_json, versions
from hybnn.binary.summary import model_summary
from hybnn.data import load_source, prepare, select_task, train_test
from hybnn.data.dataset import Dataset
from hybnn.encoders import CodeEncoder, open_encoder
from hybnn.encoders import vae as vae_encoder
from hybnn.errors import HybnnError
from hybnn.experiments.config import ReproduceConfig
from hybnn.experiments.report import render_markdown, summary_lines
from hybnn.experiments.time_to_train import (
    TrainingClock,
    mean_over_seeds,
    time_to_same_accuracy,
)
from hybnn.hooks import History
from hybnn.models.io import load_model
from hybnn.models.names import run_key
from hybnn.pipeline.checkpoint import CHECKPOINT_NAME
from hybnn.pipeline.config import PretrainConfig, TrainConfig
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head, train_image_model
from hybnn.pipeline.metrics import confusion_matrix, per_class
from hybnn.pipeline.pretrain import bit_usage, pretrain
from hybnn.pipeline.train import predict_classes
from hybnn.plots import plot_confusion, plot_curves
from hybnn.progress import bar

# The runs of every task and seed, by report key (hybnn.models.names.run_key).
RUNS = ("hybnn", run_key("bcnn", "unit"), run_key("bcnn", "centered"), "fpcnn")
MODEL_LABELS = {
    "hybnn": "HyBNN (BNN head on 200-bit codes)",
    "bcnn_unit": "binary CNN, unit inputs (paper)",
    "bcnn_centered": "binary CNN, centered inputs (fair)",
    "fpcnn": "full-precision CNN (ceiling)",
}


def reproduce(config: ReproduceConfig, out: str | os.PathLike[str],
              progress: bool = True, echo: bool = True, resume: bool = False) -> dict[str, Any]:
    """Run the whole experiment; write results.json, results.md and plots into ``out``.

    With ``resume``, what an interrupted run in ``out`` finished (the encoder, each model of
    each task and seed) is reused when its recorded settings match, and unfinished phases
    continue from their checkpoints: the results equal those of an uninterrupted run.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / ".write-test", lambda p: p.write_text("ok"))
    (out / ".write-test").unlink()
    t_start = time.perf_counter()
    load_start = _load()
    source = load_source(config.data)
    train, test = train_test(source)
    encoder, pretrain_s = _encoder(config, train, out, progress, resume)
    usage = _bit_usage(config, encoder, train, out)
    results: dict[str, Any] = {
        "data": config.data,
        "seeds": config.seeds,
        "quick": config.quick,
        "config": asdict(config),
        "encoder": {
            "fingerprint": encoder.fingerprint,
            "latent_bits": encoder.latent_bits,
            "dead_bits": usage["dead_bits"],
            "unique_codes": usage["unique_codes"],
            "samples": usage["samples"],
            "pretrain_seconds": pretrain_s,
            "path": str(out / "encoder") if config.encoder is None else config.encoder,
        },
        "tasks": {},
        "versions": versions(),
    }
    curves: dict[str, dict[str, dict[str, list[float]]]] = {m: {} for m in RUNS}
    jobs = [(t, s) for t in config.tasks for s in config.seeds]
    per_task: dict[str, dict[str, list[tuple[History, Any]]]] = {}
    confusions: dict[str, dict[str, np.ndarray]] = {}
    clocks: dict[str, list[dict[str, dict[str, float]]]] = {}
    for task, seed in bar(jobs, "reproduce", progress, total=len(jobs), leave=True):
        tr = _subsample(select_task(train, task), config.max_train, seed)
        te = select_task(test, task)
        runs = per_task.setdefault(task, {m: [] for m in RUNS})
        trained, extract_s = _train_all(config, encoder, tr, te, task, seed, out, resume)
        for model_name, (history, model) in trained.items():
            runs[model_name].append((history, model))
        clocks.setdefault(task, []).append(_clocks(trained, extract_s))
        if te.num_classes > 2:  # the ten-class gap, per class (summed over seeds)
            for name, matrix in _confusions(trained, encoder, te).items():
                total = confusions.setdefault(task, {}).get(name)
                confusions[task][name] = matrix if total is None else total + matrix
    for task, runs in per_task.items():
        results["tasks"][task] = {m: _aggregate(runs[m], m) for m in RUNS}
        for m in RUNS:
            curves[m][task] = {
                "acc": _mean_curve([h.series("test_acc") for h, _ in runs[m]]),
                "loss": _mean_curve([h.series("train_loss") for h, _ in runs[m]]),
            }
        r = results["tasks"][task]
        r["head_speedup_vs_bcnn"] = (r["bcnn_centered"]["train_s_per_epoch"]
                                     / r["hybnn"]["train_s_per_epoch"])
        r["time_to_train"] = _mean_clocks(clocks[task])
        if task in confusions:
            space = select_task(test, task).label_space
            r["confusion"] = {"names": list(space.names), "rows": "true", "columns": "predicted",
                              "seeds_summed": list(config.seeds),
                              **{m: c.tolist() for m, c in confusions[task].items()},
                              "per_class": {m: per_class(c, space)
                                            for m, c in confusions[task].items()}}
    if config.continual:
        results["continual"] = _continual_table(config, out, progress)
    results["seconds_total"] = time.perf_counter() - t_start
    results["run"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                      "load_average_at_start": load_start, "load_average_at_end": _load()}
    _write_outputs(results, curves, out)
    if echo:
        print("\n".join(summary_lines(results)))
        print(f"results: {out / 'results.md'}")
    return results


def _continual_table(config: ReproduceConfig, out: Path, progress: bool) -> dict[str, Any]:
    """`hybnn continual` on this run's encoder and pair tasks, class-incremental (the
    scenario of the continual target in BENCHMARKS.md); the full results are written to
    ``out/continual``."""
    from hybnn.experiments.continual import continual
    from hybnn.experiments.continual_config import ContinualConfig

    pairs = [t for t in config.tasks if t != "all"]
    cfg = ContinualConfig.make(quick=config.quick, data=config.data, tasks=pairs,
                               seeds=config.seeds, scenarios=["class"], device=config.device,
                               encoder=config.encoder or str(out / "encoder"))
    res = continual(cfg, out / "continual", progress=progress, echo=False)
    keys = ("final_acc_mean", "final_acc_std", "forgetting_mean", "forgetting_std",
            "memory_bytes")
    return {"tasks": pairs, "memory_budget_bytes": res["memory_budget_bytes"],
            "epochs_per_task": cfg.epochs, "path": str(out / "continual"),
            "scenarios": {s: {m: {k: c[k] for k in keys} for m, c in rows.items()}
                          for s, rows in res["scenarios"].items()}}


def _encoder(config: ReproduceConfig, train: Dataset, out: Path, progress: bool,
             resume: bool) -> tuple[CodeEncoder, float]:
    if config.encoder is not None:
        return open_encoder(config.encoder, config.device), 0.0
    general = _subsample(train, config.vae.samples, 0)
    t0 = time.perf_counter()
    pcfg = config.vae.pretrain_config(config.seeds[0], config.device)
    info = {"source": config.data, "split": "train", "samples": len(general)}
    if resume and (done := _finished_encoder(out / "encoder", pcfg, info)) is not None:
        return done, float(done.meta.get("train_seconds", 0.0))
    encoder = pretrain(general.x, out / "encoder", pcfg, info, progress=progress, resume=resume)
    return encoder, time.perf_counter() - t0


def _finished_encoder(path: Path, pcfg: PretrainConfig,
                      info: dict[str, Any]) -> vae_encoder.VaeEncoder | None:
    """The encoder an earlier run saved at ``path`` with these very settings, else None."""
    if not (path / "meta.json").is_file():
        return None
    try:
        encoder = vae_encoder.load(path, pcfg.device)
    except HybnnError:
        return None
    same = ({k: v for k, v in encoder.meta.get("pretrain", {}).items() if k != "device"}
            == {k: v for k, v in asdict(pcfg).items() if k != "device"}
            and encoder.meta.get("data") == info)
    return encoder if same else None


def _bit_usage(config: ReproduceConfig, encoder: CodeEncoder, train: Dataset,
               out: Path) -> dict[str, Any]:
    """Bit usage over the general data: written by phase 1, computed for a reused encoder."""
    written = out / "encoder" / "bit_usage.json"
    if config.encoder is None and written.is_file():  # absent if phase 1 was interrupted
        return json.loads(written.read_text())
    return bit_usage(encoder.encode(_subsample(train, config.vae.samples, 0).x))


def _train_all(config: ReproduceConfig, encoder: CodeEncoder, tr: Dataset, te: Dataset,
               task: str, seed: int, out: Path, resume: bool = False
               ) -> tuple[dict[str, tuple[History, Any]], float]:
    """Every model of one task and seed, and the seconds HyBNN spent extracting codes."""
    code_dir = out / "codes"
    t0 = time.perf_counter()
    train_codes = encode_to_codes(encoder, tr, {"task": task, "split": "train"})
    extract_s = time.perf_counter() - t0  # on HyBNN's clock from raw images to a model
    test_codes = encode_to_codes(encoder, te, {"task": task, "split": "test"})
    if seed == config.seeds[0]:
        train_codes.save(code_dir / f"{task}-train.safetensors")
        test_codes.save(code_dir / f"{task}-test.safetensors")
    head_cfg = config.head_train_config(seed)
    bin_cfg = config.cnn_train_config(binary=True, seed=seed)
    fp_cfg = config.cnn_train_config(binary=False, seed=seed)
    model_dir = out / "models" / task
    runs: dict[str, tuple[History, Any]] = {}
    hidden = config.head.widths(tr.num_classes)
    head_dir = model_dir / f"hybnn-seed{seed}"
    extra = {"task": task, "train_samples": len(tr)}
    runs["hybnn"] = (_finished_model(head_dir, head_cfg, len(tr), encoder.fingerprint)
                     if resume else None) or _swap(
        train_head(train_codes, test_codes, head_cfg, hidden, out=head_dir, resume=resume,
                   progress=False, extra=extra))
    for name, arch, prep, cfg in (("bcnn_unit", "bcnn", "unit", bin_cfg),
                                  ("bcnn_centered", "bcnn", "centered", bin_cfg),
                                  ("fpcnn", "fpcnn", "centered", fp_cfg)):
        run_dir = model_dir / f"{name}-seed{seed}"
        runs[name] = (_finished_model(run_dir, cfg, len(tr)) if resume else None) or _swap(
            train_image_model(arch, tr, te, prep, cfg, out=run_dir, resume=resume,
                              progress=False, extra=extra))
    for name in runs:
        (model_dir / f"{name}-seed{seed}" / CHECKPOINT_NAME).unlink(missing_ok=True)
    return runs, extract_s


TIMED_AGAINST = ("bcnn_centered", "fpcnn")  # the baselines HyBNN's wall time is compared to


def _clocks(trained: dict[str, tuple[History, Any]], extract_s: float
            ) -> dict[str, dict[str, float]]:
    """HyBNN's wall time to a trained model against each baseline's, at equal accuracy."""
    head = TrainingClock.from_history("hybnn", trained["hybnn"][0], extract_s)
    return {name: time_to_same_accuracy(head, TrainingClock.from_history(name, trained[name][0]))
            for name in TIMED_AGAINST}


def _mean_clocks(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Seed means of every figure; the speed-up is the ratio of the mean times."""
    return {name: mean_over_seeds([seed[name] for seed in per_seed]) for name in TIMED_AGAINST}


CONFUSION_RUNS = ("hybnn", "fpcnn")  # the ten-class comparison the paper's limit is about


def _confusions(trained: dict[str, tuple[History, Any]], encoder: CodeEncoder,
                te: Dataset) -> dict[str, np.ndarray]:
    """Test-set confusion matrices of HyBNN and of the float CNN."""
    import torch

    codes, y = encode_to_codes(encoder, te).tensors()
    images = torch.from_numpy(prepare(te.x, "centered"))
    return {name: confusion_matrix(y.numpy(), predict_classes(trained[name][1], x),
                                   te.num_classes)
            for name, x in (("hybnn", codes), ("fpcnn", images))}


def _swap(trained: tuple[Any, History]) -> tuple[History, Any]:
    return trained[1], trained[0]


def _finished_model(path: Path, cfg: TrainConfig, train_samples: int,
                    encoder_fingerprint: str | None = None) -> tuple[History, Any] | None:
    """(history, model) an earlier run finished at ``path`` with these settings, else None
    (absent, unfinished: its checkpoint is still there, or trained otherwise)."""
    if (path / CHECKPOINT_NAME).is_file() or not (path / "meta.json").is_file():
        return None
    try:
        model, meta = load_model(path)
    except HybnnError:
        return None
    same = ({k: v for k, v in meta.get("train_config", {}).items() if k != "device"}
            == {k: v for k, v in asdict(cfg).items() if k != "device"}
            and meta.get("encoder_fingerprint") == encoder_fingerprint
            and meta.get("train_samples") == train_samples)
    if not same or not isinstance(meta.get("history"), list):
        return None
    return History(meta["history"]), model


def _aggregate(runs: list[tuple[History, Any]], name: str) -> dict[str, Any]:
    accs = [h.last("test_acc") for h, _ in runs]
    model = runs[0][1]
    rows = model_summary(model)
    return {
        "acc_mean": float(np.mean(accs)),
        "acc_std": float(np.std(accs)),
        "accs": accs,
        "train_s_per_epoch": float(np.mean([h.train_seconds_per_epoch() for h, _ in runs])),
        "epochs": len(runs[0][0].epochs),
        "model_bytes": int(sum(r.deployed_bytes for r in rows)),
        "binary_params": int(sum(r.binary_params for r in rows)),
        "float_params": int(sum(r.float_params for r in rows)),
        "input": "codes" if name == "hybnn" else ("unit" if name == "bcnn_unit" else "centered"),
    }


def _mean_curve(series: list[list[float]]) -> list[float]:
    n = min((len(s) for s in series), default=0)
    return [float(np.mean([s[i] for s in series])) for i in range(n)]


def _subsample(data: Dataset, limit: int | None, seed: int) -> Dataset:
    """At most ``limit`` samples, drawn per class in proportion (deterministic from seed)."""
    if limit is None or len(data) <= limit:
        return data
    from hybnn.data.splits import stratified_split

    _, keep = stratified_split(data.y, limit / len(data), seed=seed)
    return data.subset(keep)


def _write_outputs(results: dict[str, Any], curves: dict[str, Any], out: Path) -> None:
    atomic_write_json(out / "results.json", results)
    atomic_write(out / "results.md", lambda p: p.write_text(render_markdown(results)))
    atomic_write_json(out / "curves.json", curves)
    seeds = ", ".join(map(str, results["seeds"]))
    for m in RUNS:
        where = f"{results['data']}, mean over seeds {seeds}"
        plot_curves({t: c["acc"] for t, c in curves[m].items()}, out / f"acc_{m}.png",
                    f"{MODEL_LABELS[m]}: test accuracy per task ({where})", "test accuracy")
        plot_curves({t: c["loss"] for t, c in curves[m].items()}, out / f"loss_{m}.png",
                    f"{MODEL_LABELS[m]}: training loss per task ({where})", "training loss")
    _plot_accuracy_bars(results, out / "accuracy_by_task.png")
    for task, row in results["tasks"].items():
        for m in CONFUSION_RUNS if "confusion" in row else ():
            acc = 100 * row[m]["acc_mean"]
            plot_confusion(np.asarray(row["confusion"][m]), row["confusion"]["names"],
                           out / f"confusion_{task}_{m}.png",
                           f"{MODEL_LABELS[m]} on {results['data']} {task}: mean accuracy "
                           f"{acc:.2f} %, test predictions summed over seeds "
                           f"{', '.join(map(str, results['seeds']))}")


def _plot_accuracy_bars(results: dict[str, Any], path: Path) -> None:
    from hybnn.plots import outside_legend, plt, save_figure

    tasks = list(results["tasks"])
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(tasks)), 3.6))
    width = 0.8 / len(RUNS)
    for i, m in enumerate(RUNS):
        means = [results["tasks"][t][m]["acc_mean"] for t in tasks]
        stds = [results["tasks"][t][m]["acc_std"] for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width, means, width, yerr=stds, label=MODEL_LABELS[m])
    ax.set_xticks(np.arange(len(tasks)) + width * (len(RUNS) - 1) / 2, tasks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"HyBNN vs baselines on {results['data']} (mean ± std over seeds "
                 f"{', '.join(map(str, results['seeds']))})", fontsize=9)
    ax.set_xlabel("task")
    outside_legend(ax)
    save_figure(fig, path)


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _load() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages: how busy it was beside the run."""
    return [round(v, 2) for v in os.getloadavg()]
