"""Time to a trained model when the codes come from the int8 encoder.

`hybnn quantize --encoder DIR --out DIR8` makes the frozen encoder a static int8 ONNX graph;
`hybnn extract --encoder DIR8` computes the codes the int8 bundle
(`hybnn export HEAD --encoder DIR8`) computes, so the head trains on its deployed codes.
This measures that pipeline on each task of a reproduce run, against the run's own binary
CNNs:

- once per encoder (charged to no task, like phase 1): `hybnn quantize` with its defaults
  (`hybnn.api.quantize`: calibrated on a seeded sample of the encoder's own general training
  data, label-free), and a first pass of the session over the calibration images (ONNX
  Runtime plans on its first runs);
- per task and seed, on the clock: the int8 encoding of the task's raw training images
  (`hybnn.encoders.int8.Int8Encoder`, as `hybnn extract` runs it), then the head's
  training with the run's recipe, evaluated on int8 codes of the test split after every
  epoch outside the clock (`hybnn.experiments.time_to_train`);
- beside it: the head's final accuracy on int8 codes and the share of code bits that equal
  the float32 encoder's.

`bench/hybnn_targets.py` calls :func:`int8_clocks` for its BENCHMARKS lines; standalone,
for finished reproduce runs: python -m bench.int8_clock RUN_DIR [RUN_DIR ...] [--json FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np
import torch

from bench.common import target, write_json
from hybnn import api
from hybnn.bundle.encoder_graph import calibration_images
from hybnn.data import load_source, select_task, train_test
from hybnn.encoders.int8 import load as load_int8_encoder
from hybnn.encoders.vae import load as load_encoder
from hybnn.experiments.config import ReproduceConfig
from hybnn.experiments.reproduce import _subsample  # the run's own per-task sample
from hybnn.experiments.time_to_train import (
    TrainingClock,
    mean_over_seeds,
    time_to_same_accuracy,
)
from hybnn.hooks import History
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head


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
    with tempfile.TemporaryDirectory(prefix="hybnn-int8-") as tmp:
        t0 = time.perf_counter()
        api.quantize(api.QuantizeOptions(encoder=str(encoder_dir), out=f"{tmp}/enc8",
                                         agreement_samples=0, threads=threads))
        export_s = time.perf_counter() - t0
        int8 = load_int8_encoder(f"{tmp}/enc8", threads)
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
                cfg = config.head_train_config(seed)
                hidden = config.head.widths(tr.num_classes)
                _, history = train_head(codes, test_codes, cfg, hidden, progress=False)
                clock = TrainingClock.from_history("hybnn_int8", history, extract_s)
                rows.append({**time_to_same_accuracy(clock, _baseline_clock(run_dir, task, seed)),
                             "head_acc": clock.final_acc, "same_bits": same_bits,
                             "extract_us_per_image": 1e6 * extract_s / len(tr)})
            tasks[task] = mean_over_seeds(rows)
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
                   command=" ".join(["python -m bench.int8_clock", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
