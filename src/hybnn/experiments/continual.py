"""`hybnn continual`: the five pair tasks arrive one after another; one BNN head learns them.

Phase 1 pretrains the VAE once on the general data (the training split, labels unused), or
reuses ``--encoder``; every image is encoded once into packed codes. Then, per scenario,
strategy and seed, one head trains on task 1, 2, ... in order and after each task is tested
on every task seen so far (no task id at test time):

- ``class``: one head over all classes (10 outputs), labels are the original classes;
- ``domain``: one 2-output head, the label is the class's position in its pair.

The accuracy matrix ``R[t][j]`` (accuracy on task j after training task t, j <= t) gives the
final average accuracy (mean of the last row) and the average forgetting (mean over j < T of
the best earlier accuracy on j minus the final one, Chaudhry et al. 2018).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybnn.artifacts import atomic_write, versions
from hybnn.data import load_source, task_classes, train_test
from hybnn.data.dataset import Dataset
from hybnn.encoders import CodeEncoder, open_encoder
from hybnn.errors import DataError
from hybnn.experiments.continual_config import BUDGETED, SCENARIOS, STRATEGIES, ContinualConfig
from hybnn.experiments.continual_ewc import EWC
from hybnn.experiments.continual_memory import (
    LABEL_BYTES,
    BernoulliCodeModel,
    ReplayMemory,
    frequency_bits,
)
from hybnn.experiments.continual_report import summary_lines, write_outputs
from hybnn.models.bnn_head import BNNHead
from hybnn.pipeline.codes import CodeStore, bits_to_signs, unpack_code_bits
from hybnn.pipeline.config import PretrainConfig, TrainConfig
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.pretrain import pretrain
from hybnn.pipeline.train import evaluate_classifier, fit_classifier
from hybnn.progress import bar


@dataclass
class TaskStream:
    """The codes of every task, labelled with their original classes."""

    tasks: list[str]
    classes: list[list[int]]  # the original classes of each task, in pair order
    train: CodeStore
    test: CodeStore

    def rows(self, store: CodeStore, t: int) -> np.ndarray:
        return np.flatnonzero(np.isin(store.labels, self.classes[t]))

    @property
    def task_class_count(self) -> int:
        return sum(len(c) for c in self.classes)

    @property
    def num_classes(self) -> int:
        return max(max(c) for c in self.classes) + 1

    def budget_bytes(self, fraction: float) -> int:
        """``fraction`` of the bytes of every training code of the stream, with its label."""
        n = sum(len(self.rows(self.train, t)) for t in range(len(self.tasks)))
        return int(fraction * n * (self.train.bytes_per_sample + LABEL_BYTES))


def continual(config: ContinualConfig, out: str | os.PathLike[str], progress: bool = True,
              echo: bool = True) -> dict[str, Any]:
    """Run every scenario x strategy x seed; write results.json, results.md and plots."""
    for given, known in ((config.scenarios, SCENARIOS), (config.strategies, STRATEGIES)):
        if set(given) - set(known):
            raise DataError(f"unknown name(s) {sorted(set(given) - set(known))}; "
                            f"use {', '.join(known)}")
    for name in ("generator_temperature", "generator_samples"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            raise DataError(f"--{name.replace('_', '-')} must be a finite number > 0, "
                            f"got {value!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / ".write-test", lambda p: p.write_text("ok"))
    (out / ".write-test").unlink()
    t_start = time.perf_counter()
    train, test = train_test(load_source(config.data))
    encoder, pretrain_s = _encoder(config, train, out, progress)
    stream = encode_stream(encoder, train, test, config.tasks)
    stream.train.save(out / "codes" / "train.safetensors")
    stream.test.save(out / "codes" / "test.safetensors")
    budget = stream.budget_bytes(config.memory_fraction)
    if "generative" in config.strategies and config.generator_bits is None:
        frequency_bits(budget, stream.task_class_count, stream.train.num_bits)  # fail early
    results: dict[str, Any] = {
        "data": config.data, "seeds": config.seeds, "quick": config.quick,
        "tasks": config.tasks, "config": asdict(config),
        "encoder": {"fingerprint": encoder.fingerprint, "latent_bits": encoder.latent_bits,
                    "pretrain_seconds": pretrain_s,
                    "path": config.encoder or str(out / "encoder")},
        "train_codes": int(sum(len(stream.rows(stream.train, t))
                               for t in range(len(config.tasks)))),
        "bytes_per_code": stream.train.bytes_per_sample,
        "memory_budget_bytes": budget, "scenarios": {}, "versions": versions(),
    }
    jobs = [(s, m, seed) for s in config.scenarios for m in config.strategies
            for seed in config.seeds]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for scenario, strategy, seed in bar(jobs, "continual", progress, total=len(jobs),
                                        leave=True):
        run = run_sequence(stream, scenario, strategy, config, seed, budget)
        runs.setdefault(scenario, {}).setdefault(strategy, []).append(run)
    for scenario, by_strategy in runs.items():
        results["scenarios"][scenario] = {m: aggregate(r) for m, r in by_strategy.items()}
    results["seconds_total"] = time.perf_counter() - t_start
    write_outputs(results, out)
    if echo:
        print("\n".join(summary_lines(results)))
        print(f"results: {out / 'results.md'}")
    return results


def encode_stream(encoder: CodeEncoder, train: Dataset, test: Dataset,
                  tasks: list[str]) -> TaskStream:
    """Encode the train and test splits once; keep the classes the tasks use."""
    classes = [task_classes(t, train.num_classes) for t in tasks]
    used = sorted({c for pair in classes for c in pair})
    if len(used) != sum(len(c) for c in classes):
        raise DataError(f"continual tasks must not share classes: {tasks}")
    stores = []
    for part, split in ((train, "train"), (test, "test")):
        keep = part.subset(np.flatnonzero(np.isin(part.y, used)))
        stores.append(encode_to_codes(encoder, keep, {"split": split, "tasks": tasks}))
    return TaskStream(list(tasks), classes, stores[0], stores[1])


def run_sequence(stream: TaskStream, scenario: str, strategy: str, config: ContinualConfig,
                 seed: int, budget_bytes: int) -> dict[str, Any]:
    """One head through every task in order; the accuracy matrix and what was kept."""
    t0 = time.perf_counter()
    position = {c: i for pair in stream.classes for i, c in enumerate(pair)}

    def labels(classes: np.ndarray) -> torch.Tensor:
        y = classes if scenario == "class" else np.array([position[int(c)] for c in classes])
        return torch.from_numpy(np.asarray(y, dtype=np.int64))

    def new_head() -> BNNHead:
        torch.manual_seed(seed)
        if scenario == "class":
            return BNNHead(stream.train.num_bits, stream.num_classes, config.hidden_multiclass)
        return BNNHead(stream.train.num_bits, 2, config.hidden)

    rng = np.random.default_rng(seed)
    memory = ReplayMemory(budget_bytes, stream.train.bytes_per_sample, seed)
    generator = BernoulliCodeModel(stream.train.num_bits, config.generator_bits or (
        frequency_bits(budget_bytes, stream.task_class_count, stream.train.num_bits)
        if strategy == "generative" else 8))
    ewc = EWC(config.ewc_lambda, seed=seed)
    model = new_head()
    matrix: list[list[float | None]] = []
    for t in range(len(stream.tasks)):
        rows = stream.rows(stream.train, t)
        packed, classes = stream.train.packed[rows], stream.train.labels[rows]
        if strategy == "joint":  # every task so far, from scratch
            model = new_head()
            seen = np.concatenate([stream.rows(stream.train, j) for j in range(t + 1)])
            packed, classes = stream.train.packed[seen], stream.train.labels[seen]
        elif strategy in BUDGETED:
            per_class = round(len(classes) / len(stream.classes[t]))
            if strategy == "generative":  # sampling costs no memory: draw more
                per_class = round(per_class * config.generator_samples)
            extra = _replayed(memory if strategy == "replay" else generator, per_class,
                              stream.train.bytes_per_sample, rng, config.generator_temperature)
            packed = np.concatenate([packed, extra[0]])
            classes = np.concatenate([classes, extra[1]])
        x = bits_to_signs(unpack_code_bits(packed, stream.train.num_bits))
        y = labels(classes)
        cfg = TrainConfig(config.epochs, config.batch_size, config.lr, seed=seed * 100 + t,
                          device=config.device)
        fit_classifier(model, (x, y), None, cfg, callbacks=[ewc] if strategy == "ewc" else (),
                       progress=False)
        if strategy == "replay":
            memory.add(stream.train.packed[rows], stream.train.labels[rows])
        elif strategy == "generative":
            generator.fit(stream.train.packed[rows], stream.train.labels[rows])
        elif strategy == "ewc":
            ewc.consolidate(model, x, y)
        matrix.append([_accuracy(model, stream, j, labels) if j <= t else None
                       for j in range(len(stream.tasks))])
    kept = {"finetune": 0, "replay": memory.nbytes, "generative": generator.nbytes,
            "ewc": ewc.nbytes,
            "joint": len(stream.train) * (stream.train.bytes_per_sample + LABEL_BYTES)}
    return {"seed": seed, "matrix": matrix, "memory_bytes": int(kept[strategy]),
            "generator_bits": generator.bits if strategy == "generative" else None,
            "seconds": time.perf_counter() - t0}


def _replayed(source: ReplayMemory | BernoulliCodeModel, per_class: int, code_bytes: int,
              rng: np.random.Generator, temperature: float = 1.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` packed codes of every class the source holds (stored codes: as many as
    a current class has, so old and new classes weigh the same in the loss)."""
    packed, labels = [], []
    for c in source.classes():
        if isinstance(source, ReplayMemory):
            stored = source.codes_of(c)
            packed.append(stored[np.resize(rng.permutation(len(stored)), per_class)])
        else:
            packed.append(source.sample(c, per_class, rng, temperature))
        labels.append(np.full(per_class, c, dtype=np.int64))
    if not packed:
        return np.zeros((0, code_bytes), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(packed), np.concatenate(labels)


def _accuracy(model: BNNHead, stream: TaskStream, j: int, labels: Any) -> float:
    rows = stream.rows(stream.test, j)
    x = bits_to_signs(unpack_code_bits(stream.test.packed[rows], stream.test.num_bits))
    return evaluate_classifier(model, x, labels(stream.test.labels[rows]))[1]


def final_accuracy(matrix: list[list[float | None]]) -> float:
    """Mean accuracy over every task after the last one."""
    return float(np.mean([a for a in matrix[-1] if a is not None]))


def forgetting(matrix: list[list[float | None]]) -> float:
    """Mean over tasks but the last of (best accuracy before the end - final accuracy)."""
    last = len(matrix) - 1
    acc = [[float("nan") if a is None else a for a in row] for row in matrix]
    drops = [max(acc[t][j] for t in range(j, last)) - acc[last][j] for j in range(last)]
    return float(np.mean(drops)) if drops else 0.0


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of final accuracy and forgetting, and the mean matrix."""
    finals = [final_accuracy(r["matrix"]) for r in runs]
    forgets = [forgetting(r["matrix"]) for r in runs]
    size = len(runs[0]["matrix"])
    mean_matrix = [[float(np.mean([r["matrix"][t][j] for r in runs])) if j <= t else None
                    for j in range(size)] for t in range(size)]
    curve = [float(np.mean([np.mean([a for a in r["matrix"][t] if a is not None])
                            for r in runs])) for t in range(size)]
    return {"final_acc_mean": float(np.mean(finals)), "final_acc_std": float(np.std(finals)),
            "final_accs": finals, "forgetting_mean": float(np.mean(forgets)),
            "forgetting_std": float(np.std(forgets)), "forgettings": forgets,
            "memory_bytes": max(r["memory_bytes"] for r in runs),
            "matrix_mean": mean_matrix, "avg_acc_after_task": curve,
            "seconds": float(np.mean([r["seconds"] for r in runs])),
            "runs": runs}


def _encoder(config: ContinualConfig, train: Dataset, out: Path,
             progress: bool) -> tuple[CodeEncoder, float]:
    if config.encoder is not None:
        return open_encoder(config.encoder, config.device), 0.0
    t0 = time.perf_counter()
    pcfg = PretrainConfig(latent_bits=config.latent_bits, epochs=config.vae_epochs,
                          seed=config.seeds[0], device=config.device)
    info = {"source": config.data, "split": "train", "samples": len(train)}
    encoder = pretrain(train.x, out / "encoder", pcfg, info, progress=progress)
    return encoder, time.perf_counter() - t0
