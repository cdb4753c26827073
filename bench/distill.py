"""Fully binary HyBNN: binary encoders distilled from the VAE (the fully binary cnn student and
the binary ResNet-18 student), vs VAE-code HyBNN and the float CNN; writes BENCHMARKS.md's
`distill` section.

1. The teacher: the VAE pretrained on mnist-5k's training split (or ``--encoder``).
2. The students: `hybnn distill` on the same images, labels unused (seed 0, once each):
   ``cnn`` (today's default, width 32, 20 epochs) and ``resnet18`` (``--resnet-width``,
   default 16, ``--resnet-epochs``, default 12: sized for a run of ~25 minutes on 1 thread).
3. Bit agreement with the teacher's codes on the test split (every class).
4. Per task (0v1 2v3 4v5 6v7 8v9 all) and head seed: a BNN head on VAE codes and one on each
   student's codes, same settings as `hybnn reproduce` (200 -> 128 -> 2, or 200 -> 512 -> 10
   on `all`; 100 epochs unless `--head-epochs`, Adam 1e-2, batch 64), test accuracy after the
   last epoch. Each student with the first seed's head is exported as one engine file (the
   cnn's a chain of binary layers, the ResNet's a graph) and run on the test images too: its
   accuracy should equal the torch head's on that student's codes.
5. Latency per image, 1 thread, batch 1 and 256: the fully binary network in the packed
   engine, the ResNet student's engine graph, the float CNN of the same task in torch
   (untrained: timing only), and today's HyBNN path (VAE encoder in torch + packed head),
   interleaved in one run.

    python -m bench.distill [--quick] [--json FILE] [--encoder VAE_DIR] [--seeds 0 1 2]
                            [--students cnn resnet18] [--resnet-width 16] [--resnet-epochs 12]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import datetime as dt
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from bench.common import write_section
from bench.engine import interleaved
from hybnn.artifacts import versions
from hybnn.data import PAPER_TASKS, load_source, select_task, train_test
from hybnn.data.dataset import Dataset
from hybnn.encoders.vae import VaeEncoder as Encoder
from hybnn.encoders.vae import load as load_encoder
from hybnn.engine import export_fully_binary, load
from hybnn.machine import machine_description
from hybnn.models import FloatCNN
from hybnn.pipeline.config import DISTILL_STUDENTS, DistillConfig, PretrainConfig, TrainConfig
from hybnn.pipeline.distill import bit_agreement, distill
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head
from hybnn.pipeline.pretrain import pretrain
from hybnn.pipeline.train import evaluate_classifier

DATA = "mnist-5k"
TASKS = [*PAPER_TASKS, "all"]
GAP_GOAL = 1.0  # points: the target "within 1 point of VAE-code HyBNN on every pair task"
RESNET_WIDTH = 16  # the resnet18 student's base channels (hybnn distill's default)
RESNET_EPOCHS = 12  # with width 16 ~35 s an epoch of 4,000 images, 1 thread: ~7 min
SPEED_GOAL = 5.0  # x faster than the float CNN in torch at batch 1


def teacher(args: argparse.Namespace, general: Dataset, out: Path) -> tuple[Encoder, str]:
    if args.encoder:
        return load_encoder(args.encoder), args.encoder
    cfg = PretrainConfig(epochs=3 if args.quick else 20, seed=0)
    info = {"source": DATA, "split": "train", "samples": len(general)}
    return pretrain(general.x, out / "vae", cfg, info, progress=False, plots=False), str(
        out / "vae")


def heads(enc: Any, tr: Dataset, te: Dataset, task: str, seeds: list[int], epochs: int,
          out: Path) -> dict[str, Any]:
    """Test accuracies of heads on ``enc``'s codes of ``task``, one per seed."""
    train_codes = encode_to_codes(enc, tr, {"task": task, "split": "train"})
    test_codes = encode_to_codes(enc, te, {"task": task, "split": "test"})
    hidden = [128] if tr.num_classes == 2 else [512]
    accs = []
    for seed in seeds:
        cfg = TrainConfig(epochs=epochs, batch_size=64, lr=1e-2, seed=seed)
        save = out if seed == seeds[0] else None
        test_codes.require_encoder(train_codes.encoder_fingerprint)
        head, _ = train_head(train_codes, None, cfg, hidden, out=save, progress=False,
                             extra={"task": task})  # evaluated once, after the last epoch
        accs.append(evaluate_classifier(head, *test_codes.tensors())[1])
    return {"accs": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)),
            "hidden": hidden, "test_samples": len(te)}


def latency(fb_path: Path, vae: Encoder, vae_head: Path, tmp: Path, rounds: int,
            num_classes: int, resnet_path: Path | None = None) -> dict[str, Any]:
    """Per-image seconds at batch 1 and 256 of the paths, interleaved (``resnet_path``: the
    ResNet student's engine graph too)."""
    from hybnn.engine.export import export_artifact

    engine = load(fb_path, threads=1)
    resnet = load(resnet_path, threads=1) if resnet_path is not None else None
    export_artifact(vae_head, tmp / "vae-head.st")
    head_engine = load(tmp / "vae-head.st", threads=1)
    torch.manual_seed(0)
    fcnn = FloatCNN(num_classes=num_classes).eval()
    out: dict[str, Any] = {}
    for batch, inner in ((1, 20), (256, 1)):
        x = np.random.default_rng(batch).random((batch, 1, 28, 28), dtype=np.float32)
        xc = torch.from_numpy(x - np.float32(0.5))
        xt = torch.from_numpy(x)
        paths: dict[str, Callable[[], Any]] = {
            "fully_binary_engine": lambda x=x: engine.predict(x),
            "float_cnn_torch": lambda xc=xc: fcnn(xc).argmax(1),
            "vae_torch+packed_head": lambda xt=xt: head_engine.predict(
                vae.vae.logits(xt).numpy()),
        }
        if resnet is not None:
            paths["resnet18_student_engine"] = lambda x=x: resnet.predict(x)
        with torch.inference_mode():
            t = interleaved(paths, rounds, inner)
        out[f"b{batch}"] = {k: v / batch for k, v in t.items()}
        out[f"b{batch}"]["ratio_float_cnn_vs_fully_binary"] = (
            t["float_cnn_torch"] / t["fully_binary_engine"])
    return out


def _acc(run: dict[str, Any]) -> str:
    """Mean test accuracy in %, with the std over seeds when there are several."""
    spread = f" ± {100 * run['std']:.2f}" if len(run["accs"]) > 1 else ""
    return f"{100 * run['mean']:.2f}{spread}"


STUDENT_TITLES = {"cnn": "fully binary cnn", "resnet18": "binary ResNet-18 (real-valued stem, "
                  "shortcuts and classifier)"}


def markdown(r: dict[str, Any]) -> str:
    c = r["config"]
    students = r["students"]
    seed0 = c["seeds"][0]
    lines = [
        "## Fully binary HyBNN: a binary encoder distilled from the VAE",
        "",
        f"Command: `{r['command']}` ({r['seconds'] / 60:.1f} min)  ",
        f"Machine: {r['machine']}, 1 torch thread, engine 1 thread; 1-min load average "
        f"{r.get('load_average', 'not recorded')} (shared machine: latencies move with it); "
        f"{r['date']}  ",
        f"Data {DATA} (4,000 train / 1,000 test; 200 test images per pair task: one image = "
        f"0.5 point). Teacher: VAE `{r['teacher']['fingerprint'][:12]}` "
        f"(`{r['teacher']['path']}`, pretrained with `{json.dumps(r['teacher']['pretrain'])}`)."
        " Students, each distilled once on the training images, labels unused: "
        + "; ".join(f"**{name}** ({STUDENT_TITLES[name]}): binary encoder "
                    f"`{st['fingerprint'][:12]}`, `{json.dumps(st['distill'])}`, "
                    f"{st['train_seconds'] / 60:.1f} min" for name, st in students.items())
        + f". Heads: {c['head_epochs']} epochs, Adam 1e-2, batch 64, seeds {c['seeds']}, "
        "accuracy after the last epoch.",
        "",
        "Bit agreement with the VAE's codes (50 % is chance): " + "; ".join(
            f"{name} test split {100 * st['bit_agreement']['test']:.2f} % (train "
            f"{100 * st['bit_agreement']['train']:.2f} %)" for name, st in students.items())
        + ".",
        "",
        "| task | HyBNN on VAE codes | " + " | ".join(
            f"{name}: codes | gap (points) | engine, seed {seed0} | = torch head"
            for name in students) + " |",
        "|---|---:|" + "---:|---:|---:|:---:|" * len(students),
    ]
    for task, t in r["tasks"].items():
        cells = [task, _acc(t["vae"])]
        for name in students:
            d = t["students"][name]
            same = "yes" if d["engine_acc"] == d["accs"][0] else "**no**"
            cells += [_acc(d), f"{d['gap_points']:+.2f}", f"{100 * d['engine_acc']:.2f}", same]
        lines.append("| " + " | ".join(cells) + " |")
    lat = r["latency"]
    resnet = "resnet18_student_engine" in lat["b1"]
    lines += [
        "",
        f"Latency per image ({r['latency_task']}, 1 thread; medians of interleaved "
        "repetitions; the float CNN is untrained, timing only):",
        "",
        "| batch | fully binary cnn (packed engine) | "
        + ("resnet18 student (engine graph) | " if resnet else "")
        + "float CNN (torch eager) | VAE (torch) + packed head | float CNN / fully binary |",
        "|---|---:|" + ("---:|" if resnet else "") + "---:|---:|---:|",
    ]
    for b in ("b1", "b256"):
        x = lat[b]
        res = f"{1e6 * x['resnet18_student_engine']:.1f} us | " if resnet else ""
        lines.append(f"| {b[1:]} | {1e6 * x['fully_binary_engine']:.1f} us | {res}"
                     f"{1e6 * x['float_cnn_torch']:.1f} us | "
                     f"{1e6 * x['vae_torch+packed_head']:.1f} us | "
                     f"{x['ratio_float_cnn_vs_fully_binary']:.1f}x |")
    lines += ["", "Engine files: " + ", ".join(
        f"{name} {st['engine_file_bytes']} bytes" for name, st in students.items()) + ".",
        "", "Targets:", ""]
    for t in r["targets"]:
        lines.append(f"- {t['name']}: {t['value']:.2f} (goal {t['goal']}): "
                     f"{'met' if t['met'] else '**missed**'}")
    lines += ["", "The speed target (>= 5x faster than the float CNN in ONNX Runtime "
              "int8 at batch 1) needs ONNX Runtime and is measured by `bench/deploy.py`; the "
              "ratio here is against torch eager."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs, one seed")
    parser.add_argument("--encoder", help="reuse this VAE encoder (default: pretrain one)")
    parser.add_argument("--seeds", type=int, nargs="+", help="head seeds (default 0 1 2)")
    parser.add_argument("--head-epochs", type=int, help="head epochs (default 100; quick 20)")
    parser.add_argument("--distill-epochs", type=int,
                        help=f"distillation epochs (default {DistillConfig.epochs}; quick 3)")
    parser.add_argument("--students", nargs="+", choices=DISTILL_STUDENTS,
                        default=["cnn", "resnet18"], help="the students measured (the cnn "
                        "first: its engine file is the latency's fully binary network)")
    parser.add_argument("--resnet-width", type=int, default=RESNET_WIDTH,
                        help=f"the resnet18 student's base channels (default {RESNET_WIDTH})")
    parser.add_argument("--resnet-epochs", type=int,
                        help=f"the resnet18 student's distillation epochs (default "
                        f"{RESNET_EPOCHS}; quick 3)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-distill"))
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    if "cnn" not in args.students:
        parser.error("--students must include cnn (the fully binary network timed)")
    torch.set_num_threads(1)
    random.seed(0)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    head_epochs = args.head_epochs or (20 if args.quick else 100)
    epochs = args.distill_epochs or (3 if args.quick else DistillConfig.epochs)
    configs = {"cnn": DistillConfig(epochs=epochs),
               "resnet18": DistillConfig(epochs=args.resnet_epochs or (
                   3 if args.quick else RESNET_EPOCHS),
                                         student="resnet18", width=args.resnet_width)}
    out = args.out
    general, held_out = train_test(load_source(DATA))
    vae, vae_path = teacher(args, general, out)
    teacher_test = vae.encode(held_out.x)
    students: dict[str, Any] = {}
    encoders: dict[str, Any] = {}
    for name in args.students:
        enc = distill(vae, general.x, out / f"binary-encoder-{name}", configs[name],
                      {"source": DATA, "split": "train", "samples": len(general)}, held_out.x,
                      progress=False, teacher_path=vae_path)
        encoders[name] = enc
        students[name] = {
            "fingerprint": enc.fingerprint, "distill": enc.meta["distill"],
            "train_seconds": enc.meta["train_seconds"], "history": enc.meta["history"],
            "bit_agreement": {"train": enc.meta["bit_agreement"]["train"],
                              "test": bit_agreement(enc.encode(held_out.x), teacher_test)}}
        print(f"{name} student: test bit agreement "
              f"{100 * students[name]['bit_agreement']['test']:.2f} % "
              f"({enc.meta['train_seconds'] / 60:.1f} min)", flush=True)
    tasks: dict[str, Any] = {}
    for task in TASKS:
        tr, te = select_task(general, task), select_task(held_out, task)
        v = heads(vae, tr, te, task, seeds, head_epochs, out / "heads" / f"vae-{task}")
        tasks[task] = {"vae": v, "students": {}}
        for name, enc in encoders.items():
            d = heads(enc, tr, te, task, seeds, head_epochs, out / "heads" / f"{name}-{task}")
            fb = out / f"fully-binary-{name}-{task}.safetensors"
            export_fully_binary(out / "heads" / f"{name}-{task}",
                                out / f"binary-encoder-{name}", fb)
            d["engine_acc"] = float((load(fb).predict(te.x) == te.y).mean())
            d["gap_points"] = 100 * (v["mean"] - d["mean"])
            tasks[task]["students"][name] = d
        print(f"{task}: VAE codes {100 * v['mean']:.2f}, " + ", ".join(
            f"{name} {100 * d['mean']:.2f} (engine {100 * d['engine_acc']:.2f})"
            for name, d in tasks[task]["students"].items()), flush=True)
    lat_task = "0v1"
    resnet_path = (out / f"fully-binary-resnet18-{lat_task}.safetensors"
                   if "resnet18" in encoders else None)
    lat = latency(out / f"fully-binary-cnn-{lat_task}.safetensors", vae,
                  out / "heads" / f"vae-{lat_task}", out, 5 if args.quick else 41, 2,
                  resnet_path)
    for name in students:
        students[name]["engine_file_bytes"] = (
            out / f"fully-binary-{name}-{lat_task}.safetensors").stat().st_size
    targets = []
    for name in students:
        label = "fully binary" if name == "cnn" else f"{name} student"
        targets += [{"name": f"{label} {task} gap vs VAE codes",
                     "value": round(t["students"][name]["gap_points"], 4),
                     "goal": f"<= {GAP_GOAL:g} point",
                     "met": bool(t["students"][name]["gap_points"] <= GAP_GOAL + 1e-9)}
                    for task, t in tasks.items()]
    ratio = lat["b1"]["ratio_float_cnn_vs_fully_binary"]
    targets.append({"name": "fully binary batch-1 vs float CNN torch", "value": round(ratio, 3),
                    "goal": f">= {SPEED_GOAL:g}x", "met": bool(ratio >= SPEED_GOAL)})
    command = "python -m bench.distill " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {
        "machine": machine_description(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command.strip(),
        "targets": targets,
        "config": {"data": DATA, "seeds": seeds, "head_epochs": head_epochs,
                   "distill": {name: asdict(configs[name]) for name in students},
                   "quick": args.quick},
        "teacher": {"fingerprint": vae.fingerprint, "path": vae_path,
                    "pretrain": vae.meta.get("pretrain")},
        "students": students,
        "tasks": tasks,
        "latency_task": lat_task,
        "latency": lat,
        "versions": versions(),
        "load_average": f"{load0:.1f} -> {os.getloadavg()[0]:.1f}",
        "seconds": time.perf_counter() - t0,
    }
    text = markdown(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_write:
        write_section("distill", text, args.benchmarks)
    return results


if __name__ == "__main__":
    main()
