"""Deployed HyBNN vs the float CNN, per image, 1 thread: writes BENCHMARKS.md's `deploy` section.

One run trains an encoder on the general data, then per task a BNN head (bundled with the
encoder as fp32 and int8 ONNX) and the float CNN (run in torch eager, ONNX Runtime fp32 and
ONNX Runtime int8), and reports each variant's test accuracy and bytes on disk. Speed is
timed on one task at batch 1 and 256, every variant in the same process, repetitions
interleaved in random order (medians), so that load from other jobs hits all alike; ratios
are of those medians. torch, ONNX Runtime and the engine each use 1 thread. Cold start
(import + load + first prediction of the torch-free runtime) is timed in fresh processes.

    python -m bench.deploy [--quick] [--json FILE] [--no-write]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import platform
import shlex
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch import nn

from bench.common import interleaved, write_section
from hybnn import runtime
from hybnn.artifacts import versions
from hybnn.bundle.export import build_bundle, encoder_graph
from hybnn.bundle.onnx_export import INPUT_NAME, export_onnx
from hybnn.bundle.quantize import quantize_int8
from hybnn.data import load_split, prepare
from hybnn.encoders.vae import VaeEncoder as Encoder
from hybnn.engine import load as load_engine
from hybnn.engine.export import export_artifact, export_fully_binary
from hybnn.machine import machine_description
from hybnn.models.io import load_model
from hybnn.onnxgraph.session import make_session
from hybnn.pipeline.config import DistillConfig, PretrainConfig, TrainConfig
from hybnn.pipeline.distill import distill
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head, train_image_model
from hybnn.pipeline.pretrain import pretrain

TASKS = ("0v1", "2v3", "4v5", "6v7", "8v9", "all")
FULLY_BINARY = "fully binary HyBNN (packed engine)"
SRC = Path(__file__).resolve().parents[1] / "src"
COLD = """import time; t0 = time.perf_counter()
import numpy as np
from hybnn import runtime
m = runtime.load({path!r}, threads=1)
m.predict(np.full((1, *m.input_shape), 0.5, np.float32))
print(time.perf_counter() - t0)"""


@dataclass
class Variant:
    """One deployed model of a task: how to classify (N, C, H, W) [0, 1] images, its bytes."""

    name: str
    predict: Callable[[np.ndarray], np.ndarray]
    bytes_on_disk: int
    note: str


class Prepared(nn.Module):
    """The float CNN with its input preparation inside, so every variant takes [0, 1] pixels."""

    def __init__(self, cnn: nn.Module, prep: str) -> None:
        super().__init__()
        self.cnn, self.shift = cnn, 0.5 if prep == "centered" else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(x - self.shift)


def ort_predict(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0].argmax(1)


def fully_binary_variants(task: str, train: Any, test: Any, binary: Any, binary_dir: Path,
                          args: argparse.Namespace, work: Path) -> list[Variant]:
    """The fully binary HyBNN: a head trained on the distilled binary encoder's codes, and
    that encoder, exported as one packed engine network (images in, logits out)."""
    tdir = work / task
    tr = encode_to_codes(binary, train, {"task": task, "split": "train"})
    te = encode_to_codes(binary, test, {"task": task, "split": "test"})
    head_cfg = TrainConfig.for_model("head", args.head_epochs, None, seed=0)
    train_head(tr, te, head_cfg, [128], out=tdir / "head-binary", progress=False)
    path = tdir / "fully-binary.engine"
    export_fully_binary(tdir / "head-binary", binary_dir, path)
    net = load_engine(path, threads=1)
    return [Variant(FULLY_BINARY, net.predict, path.stat().st_size,
                    "distilled binary encoder + head, one packed engine file")]


def task_variants(task: str, data: str, encoder: Encoder, enc_dir: Path, graphs: dict[str, Any],
                  args: argparse.Namespace, work: Path, binary: Any, binary_dir: Path,
                  ) -> tuple[list[Variant], dict[str, Any]]:
    """Train the task's head and float CNN; every deployed variant of them, and fidelity."""
    train, test = load_split(data, task, "train"), load_split(data, task, "test")
    tdir = work / task
    tr_codes = encode_to_codes(encoder, train, {"task": task, "split": "train"})
    te_codes = encode_to_codes(encoder, test, {"task": task, "split": "test"})
    head_cfg = TrainConfig.for_model("head", args.head_epochs, None, seed=0)
    train_head(tr_codes, te_codes, head_cfg, [128], out=tdir / "head", progress=False)
    head, meta = load_model(tdir / "head")
    bundles = {}
    for precision, graph in graphs.items():
        path = tdir / f"hybnn-{precision}.bundle"
        build_bundle(head, meta, encoder, graph, path, {"model_dir": str(tdir / "head")})
        bundles[precision] = path
    export_artifact(tdir / "head", tdir / "head.engine")
    packed = load_engine(tdir / "head.engine", threads=1)

    cnn_cfg = TrainConfig.for_model("fpcnn", args.cnn_epochs, None, seed=0)
    cnn, _ = train_image_model("fpcnn", train, test, "centered", cnn_cfg, out=tdir / "fpcnn",
                               progress=False)
    cnn.eval()
    wrapped = Prepared(cnn, "centered").eval()
    fp32 = export_onnx(wrapped, tuple(train.x.shape[1:]), "logits")
    rng = np.random.default_rng(0)
    calib = train.x[np.sort(rng.choice(len(train), min(args.calibration, len(train)),
                                       replace=False))]
    int8 = quantize_int8(fp32, INPUT_NAME, calib)
    (tdir / "fpcnn.onnx").write_bytes(fp32)
    (tdir / "fpcnn-int8.onnx").write_bytes(int8)

    def torch_cnn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return cnn(torch.from_numpy(prepare(x, "centered"))).argmax(1).numpy()

    def torch_path(x: np.ndarray) -> np.ndarray:
        return packed.predict_packed(np.packbits(encoder.encode(x), axis=1))

    models = {p: runtime.load(b, threads=1) for p, b in bundles.items()}
    enc_bytes = (enc_dir / "weights.safetensors").stat().st_size
    variants = [
        Variant("HyBNN bundle, int8 encoder", models["int8"].predict,
                bundles["int8"].stat().st_size, "ONNX Runtime int8 + packed head, one file"),
        Variant("HyBNN bundle, fp32 encoder", models["fp32"].predict,
                bundles["fp32"].stat().st_size, "ONNX Runtime fp32 + packed head, one file"),
        Variant("HyBNN torch path", torch_path,
                enc_bytes + (tdir / "head.engine").stat().st_size,
                "torch eager encoder + packed head (VAE weights file + engine file)"),
        Variant("float CNN, torch eager", torch_cnn,
                (tdir / "fpcnn" / "weights.safetensors").stat().st_size, "safetensors weights"),
        Variant("float CNN, ORT fp32", ort_predict(make_session(fp32, 1)), len(fp32), "ONNX"),
        Variant("float CNN, ORT int8", ort_predict(make_session(int8, 1)), len(int8),
                "ONNX, static QDQ, calibrated on its own training images"),
        *fully_binary_variants(task, train, test, binary, binary_dir, args, work),
    ]
    torch_codes = encoder.encode(test.x)
    fidelity = {p: float(np.mean(m.codes(test.x) == torch_codes)) for p, m in models.items()}
    return variants, {"test": test, "fidelity": fidelity}


def accuracy(v: Variant, x: np.ndarray, y: np.ndarray) -> float:
    pred = np.concatenate([v.predict(np.ascontiguousarray(x[i:i + 256]))
                           for i in range(0, len(x), 256)])
    return float(np.mean(pred == y))


def cold_start(path: Path, runs: int) -> dict[str, float]:
    """Seconds of import + load + first prediction in fresh processes (and whole process)."""
    inner, whole = [], []
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD.format(path=str(path))], env=env,
                             capture_output=True, text=True, check=True).stdout
        whole.append(time.perf_counter() - t0)
        inner.append(float(out.strip().splitlines()[-1]))
    return {"import_load_first_predict_s": statistics.median(inner),
            "process_s": statistics.median(whole), "runs": runs}


def targets(speed: dict[str, dict[str, float]], cold: dict[str, float],
            rows_by_name: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    b1 = speed["1"]
    rows = [("bundle int8 batch-1 vs float CNN ORT int8",
             b1["float CNN, ORT int8"] / b1["HyBNN bundle, int8 encoder"], 1.0),
            ("bundle int8 batch-1 vs torch path",
             b1["HyBNN torch path"] / b1["HyBNN bundle, int8 encoder"], 5.0),
            ("fully binary batch-1 vs float CNN ORT int8",
             b1["float CNN, ORT int8"] / b1[FULLY_BINARY], 5.0)]
    out = [{"name": n, "value": round(v, 3), "goal": f">= {g:g}x", "met": v >= g}
           for n, v, g in rows]
    vae, fb = rows_by_name["HyBNN torch path"]["accuracy"], rows_by_name[FULLY_BINARY]["accuracy"]
    for task in (t for t in fb if t != "all"):  # the target is per pair task
        gap = 100 * (vae[task] - fb[task])
        out.append({"name": f"fully binary {task} gap vs VAE-code HyBNN (points)",
                    "value": round(gap, 2), "goal": "<= 1", "met": gap <= 1.0})
    c = cold["import_load_first_predict_s"]
    out.append({"name": "runtime cold start", "value": round(c, 3), "goal": "< 0.5 s",
                "met": c < 0.5})
    return out


def markdown(result: dict[str, Any]) -> str:
    tasks = result["tasks"]
    names = list(result["rows"])
    lines = [f"Command: `{result['command']}`  ", f"Machine: {result['machine']}; "
             f"1 thread for torch, ONNX Runtime {onnxruntime.__version__} and the engine  ",
             f"Data: {result['config']['data']}; timing on task `{result['config']['timed']}`; "
             f"per image, median of {result['config']['rounds']} interleaved rounds.", "",
             "| Target | Value | Goal | Met |", "|---|---:|---|---|"]
    lines += [f"| {t['name']} | {t['value']} | {t['goal']} | {'yes' if t['met'] else 'NO'} |"
              for t in result["targets"]]
    lines += ["", "| Variant | batch 1 µs/img | batch 256 µs/img | bytes on disk | "
              + " | ".join(tasks) + " |", "|---|---:|---:|---:|" + "---:|" * len(tasks)]
    for n in names:
        r = result["rows"][n]
        accs = " | ".join(f"{100 * r['accuracy'][t]:.2f}" for t in tasks)
        lines.append(f"| {n} | {r['us_batch_1']:.0f} | {r['us_batch_256']:.0f} | "
                     f"{r['bytes']:,} | {accs} |")
    lines += ["", "int8 encoder fidelity (test split; identical bits vs torch codes, accuracy "
              "change int8 - fp32 bundle, points):", "",
              "| Task | fp32 identical bits % | int8 identical bits % | int8 accuracy change |",
              "|---|---:|---:|---:|"]
    for t in tasks:
        f = result["fidelity"][t]
        lines.append(f"| {t} | {100 * f['fp32']:.3f} | {100 * f['int8']:.2f} | "
                     f"{100 * f['int8_accuracy_change']:+.2f} |")
    c = result["cold_start"]
    lines += ["", f"Cold start (fresh process, median of {c['runs']}): import + load + first "
              f"prediction {c['import_load_first_predict_s']:.3f} s; the whole process, "
              f"interpreter start included, {c['process_s']:.3f} s.",
              f"Calibration: {result['config']['calibration']} images, seed 0 (encoder: its "
              "general training split; float CNN: its task's training images)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist-5k")
    ap.add_argument("--quick", action="store_true", help="2 tasks, few epochs (minutes)")
    ap.add_argument("--out", default="runs/bench-deploy")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--benchmarks", default="BENCHMARKS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    quick = args.quick
    tasks = ("0v1", "all") if quick else TASKS
    args.vae_epochs, args.head_epochs, args.cnn_epochs = (2, 5, 2) if quick else (20, 50, 15)
    args.calibration = 64 if quick else 512
    args.distill_epochs = 3 if quick else DistillConfig.epochs
    rounds = {"1": 30 if quick else 200, "256": 5 if quick else 25}
    work = Path(args.out)
    shutil.rmtree(work, ignore_errors=True)  # every number comes from this run
    work.mkdir(parents=True)
    t_start = time.perf_counter()

    general = load_split(args.data, "all", "train")
    info = {"source": args.data, "split": "train", "samples": len(general)}
    enc_dir = work / "encoder"
    encoder = pretrain(general.x, enc_dir, PretrainConfig(epochs=args.vae_epochs, seed=0), info,
                       progress=False, plots=False)
    graphs = {"fp32": encoder_graph(encoder),
              "int8": encoder_graph(encoder, True, args.calibration, 0)}
    binary_dir = work / "binary-encoder"
    held_out = load_split(args.data, "all", "test")
    binary = distill(encoder, general.x, binary_dir, DistillConfig(epochs=args.distill_epochs),
                     info, held_out.x, progress=False)
    rows: dict[str, dict[str, Any]] = {}
    fidelity: dict[str, dict[str, float]] = {}
    timed_variants: list[Variant] = []
    timed_test = None
    for task in tasks:
        variants, extra = task_variants(task, args.data, encoder, enc_dir, graphs, args, work,
                                        binary, binary_dir)
        test = extra["test"]
        for v in variants:
            row = rows.setdefault(v.name, {"accuracy": {}, "bytes": v.bytes_on_disk,
                                           "note": v.note})
            row["accuracy"][task] = accuracy(v, test.x, test.y)
        fidelity[task] = {**extra["fidelity"], "int8_accuracy_change":
                          rows["HyBNN bundle, int8 encoder"]["accuracy"][task]
                          - rows["HyBNN bundle, fp32 encoder"]["accuracy"][task]}
        print(f"{task}: " + ", ".join(f"{n} {100 * r['accuracy'][task]:.2f}"
                                      for n, r in rows.items()), flush=True)
        if task == tasks[-1]:
            timed_variants, timed_test = variants, test
    assert timed_test is not None
    speed: dict[str, dict[str, float]] = {}
    for batch, n_rounds in rounds.items():
        x = np.ascontiguousarray(timed_test.x[: int(batch)])
        if len(x) < int(batch):
            x = np.ascontiguousarray(np.resize(timed_test.x, (int(batch), *x.shape[1:])))
        fns = {v.name: (lambda v=v, x=x: v.predict(x)) for v in timed_variants}
        speed[batch] = {k: median / int(batch)
                        for k, (median, _) in interleaved(fns, n_rounds).items()}
    for name, row in rows.items():
        row["us_batch_1"] = 1e6 * speed["1"][name]
        row["us_batch_256"] = 1e6 * speed["256"][name]
    cold = cold_start(work / tasks[-1] / "hybnn-int8.bundle", 3 if quick else 7)
    result = {
        "machine": f"{machine_description()}, {platform.machine()}",
        "threads": 1,
        "command": shlex.join(["python", "-m", "bench.deploy", *(argv or sys.argv[1:])]),
        "config": {"data": args.data, "tasks": list(tasks), "quick": quick,
                   "vae_epochs": args.vae_epochs, "head_epochs": args.head_epochs,
                   "cnn_epochs": args.cnn_epochs, "calibration": args.calibration,
                   "distill_epochs": args.distill_epochs,
                   "timed": tasks[-1], "rounds": rounds["1"], "rounds_batch_256": rounds["256"]},
        "versions": {**versions(), "onnxruntime": onnxruntime.__version__},
        "targets": targets(speed, cold, rows),
        "rows": rows, "tasks": list(tasks), "fidelity": fidelity, "cold_start": cold,
        "seconds_total": time.perf_counter() - t_start,
    }
    md = markdown(result)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_write and not quick:
        write_section("deploy", "## Deploy: bundle vs float CNN\n\n" + md,
                      args.benchmarks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
