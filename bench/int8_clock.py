"""Time to a trained model when the codes come from the int8 encoder.

`hybnn export --encoder DIR --int8` deploys the frozen encoder as a static int8 ONNX model;
an edge user who deploys it should train the head on the codes that model produces. This
measures that pipeline on each task of a reproduce run, against the run's own binary CNNs:

- once per encoder (charged to no task, like phase 1): the int8 ONNX graph exactly as
  `hybnn export --int8` builds it with its defaults (`hybnn.bundle.export.encoder_graph`:
  calibrated on a seeded sample of the encoder's own general training data, label-free),
  and a first pass of the session over those images (ONNX Runtime plans on its first runs);
- per task and seed, on the clock: the int8 encoding of the task's raw training images,
  then the head's training with the run's recipe, evaluated on int8 codes of the test split
  after every epoch outside the clock (`hybnn.experiments.time_to_train`);
- beside it: the head's final accuracy on int8 codes and the share of code bits that equal
  the float32 encoder's.

`bench/hybnn_targets.py` calls :func:`int8_clocks` for its BENCHMARKS lines; standalone,
for finished reproduce runs: python bench/int8_clock.py RUN_DIR [RUN_DIR ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybnn.benchmarks import target, write_json
from hybnn.bundle.export import calibration_images, encoder_graph
from hybnn.bundle.onnx_export import INPUT_NAME
from hybnn.data import load_source, select_task, train_test
from hybnn.experiments.config import ReproduceConfig
from hybnn.experiments.reproduce import _subsample  # the run's own per-task sample
from hybnn.experiments.time_to_train import TrainingClock, time_to_same_accuracy
from hybnn.hooks import History
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.encoder import ENCODE_BATCH, Encoder, check_images, load_encoder
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head
from hybnn.runtime.onnx_encoder import make_session


class Int8CodeEncoder:
    """The encoder's int8 ONNX model in an ONNX Runtime session, as a code encoder."""

    def __init__(self, encoder: Encoder, int8_onnx: bytes, threads: int) -> None:
        self.session = make_session(int8_onnx, threads)
        self.channels = int(encoder.vae.config["in_channels"])
        self.size = encoder.image_size
        self.latent_bits = encoder.latent_bits
        self.fingerprint = encoder.fingerprint + "-int8"

    def encode(self, images: np.ndarray, batch_size: int = ENCODE_BATCH) -> np.ndarray:
        check_images(images, self.channels, self.size)
        out = [self.session.run(None, {INPUT_NAME: np.ascontiguousarray(
            images[i:i + batch_size], dtype=np.float32)})[0] >= 0
               for i in range(0, len(images), batch_size)]
        return (np.concatenate(out) if out
                else np.zeros((0, self.latent_bits), dtype=bool))


def _baseline_clock(run_dir: Path, task: str, seed: int) -> TrainingClock:
    meta = json.loads((run_dir / "models" / task / f"bcnn_centered-seed{seed}" / "meta.json")
                      .read_text())
    return TrainingClock.from_history("bcnn_centered", History(meta["history"]))


def int8_clocks(runs: list[tuple[ReproduceConfig, Path]], encoder_dir: Path, threads: int
                ) -> dict[str, Any]:
    """Per task of every run (one data set, one encoder): seed means of the int8 pipeline's
    time to the binary CNN's accuracy. The int8 graph is built once for all runs."""
    encoder = load_encoder(encoder_dir)
    train, test = train_test(load_source(runs[0][0].data))
    t0 = time.perf_counter()
    graph = encoder_graph(encoder, int8=True)  # what `hybnn export --int8` deploys
    export_s = time.perf_counter() - t0
    int8 = Int8CodeEncoder(encoder, graph.onnx, threads)
    calibration, info = calibration_images(encoder)
    int8.encode(calibration)  # the session's first runs allocate and plan: warm it, once
    tasks: dict[str, Any] = {}
    for config, run_dir in runs:
        for task in config.tasks:
            rows = []
            for seed in config.seeds:
                tr = _subsample(select_task(train, task), config.max_train, seed)
                te = select_task(test, task)
                t0 = time.perf_counter()
                codes = encode_to_codes(int8, tr, {"task": task, "split": "train"})
                extract_s = time.perf_counter() - t0
                test_codes = encode_to_codes(int8, te, {"task": task, "split": "test"})
                same_bits = float(np.mean(encoder.encode(tr.x) == codes.bits()))
                cfg = TrainConfig(config.head_epochs, config.head_batch, config.head_lr,
                                  code_noise=config.head_code_noise, seed=seed)
                hidden = (config.head_hidden if tr.num_classes == 2
                          else config.head_hidden_multiclass)
                _, history = train_head(codes, test_codes, cfg, hidden, progress=False)
                clock = TrainingClock.from_history("hybnn_int8", history, extract_s)
                rows.append({**time_to_same_accuracy(clock, _baseline_clock(run_dir, task, seed)),
                             "head_acc": clock.final_acc, "same_bits": same_bits,
                             "extract_us_per_image": 1e6 * extract_s / len(tr)})
            mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            mean["speedup"] = mean["slow_s"] / max(mean["fast_s"], 1e-9)  # of the mean times
            tasks[task] = mean
    return {"export_s": export_s, "threads": threads, "calibration": info,
            "seeds": sorted({s for c, _ in runs for s in c.seeds}), "tasks": tasks}


def main() -> None:
    """Standalone: the int8 lines for finished reproduce runs, as JSON targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path,
                        help="reproduce run directories of one data set (results.json inside)")
    parser.add_argument("--encoder", type=Path, help="encoder directory (default: the first "
                        "run's encoder as its results.json records it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", help="write the targets here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    for run_dir in args.runs:
        results = json.loads((run_dir / "results.json").read_text())
        runs.append((ReproduceConfig(**results["config"]), run_dir))
    encoder = args.encoder or Path(json.loads(
        (args.runs[0] / "results.json").read_text())["encoder"]["path"])
    clock = int8_clocks(runs, encoder, args.threads)
    found = []
    for task, c in clock["tasks"].items():
        found.append(target(f"time-to-train int8 {runs[0][0].data} {task} vs binary CNN (x)",
                            round(c["speedup"], 2), ">= 20x", c["speedup"] >= 20))
        print(f"{task}: {c['speedup']:.1f}x ({c['fast_s']:.2f} s vs {c['slow_s']:.2f} s at "
              f"{100 * c['accuracy']:.2f} %; head {100 * c['head_acc']:.2f} % on int8 codes)")
    if args.json:
        write_json(args.json, found, threads=args.threads, int8_clock=clock,
                   command=" ".join(["python bench/int8_clock.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
