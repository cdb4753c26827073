"""The binary ResNet-18 study at full width on one GPU; writes the GPU part of BENCHMARKS.md's
`rebnn-resnet18` section (``python -m bench.rebnn --net resnet18`` writes the CPU part).

What ``hybnn study rebnn --net resnet18`` runs, at the paper's width (64) on the whole of
Fashion-MNIST (60,000 train / 10,000 test images), with bfloat16 autocast, sized to a time
budget (default 9 minutes, inside 10 of one H100): a probe times training steps of the
step-2 network first, and the epochs are chosen from it (the float twin and step 1 get
``--teacher-share`` and ``--step1-share`` of step 2's epochs). Default: distillation from the
float twin (ReActNet's and ReBNN's recipe), the four methods, three seeds.

The GPU machine is offline, so the data travel in the working tree: here, where
Fashion-MNIST is installed (``make data``) or downloadable, stage the four files into
``.cache/hybnn/fashion-mnist`` (an ignored path, 30 MB); carry ``.cache/hybnn`` there::

    python -m bench.rebnn_gpu --stage-data
    # on the GPU machine, from the repository root (.cache/hybnn carried):
    PYTHONPATH=src python3 -m bench.rebnn_gpu --no-write --json $OUT/rebnn-gpu.json
    # back here: its section into BENCHMARKS.md
    python -m bench.rebnn_gpu --merge rebnn-gpu.json

The ``--json`` file holds the targets, the section's text and the whole results, so a run
whose working tree is thrown away loses nothing.

``--device cpu --width 2 --train-size 256 ...`` runs the same code path on a CPU (tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import math
import os
import shlex
import shutil
import time
from dataclasses import dataclass

ROOT = Path(__file__).resolve().parents[1]
STAGED = ROOT / ".cache" / "hybnn"  # $HYBNN_CACHE layout: fashion-mnist/*.gz


@dataclass(frozen=True)
class Plan:
    """Epochs of each run, chosen to fit ``budget_s`` at ``epoch_s`` seconds per epoch."""

    teacher_epochs: int
    step1_epochs: int
    epochs: int
    epoch_s: float
    budget_s: float


def plan_epochs(budget_s: float, epoch_s: float, seeds: int, families: int, methods: int,
                teacher_share: float = 1.5, step1_share: float = 1.0,
                max_epochs: int = 40) -> Plan:
    """Step 2's epochs E (at least 1, at most ``max_epochs``) such that the float twin
    (``teacher_share`` x E epochs, if any family distils), ``families`` x ``seeds`` step-1 runs
    (``step1_share`` x E) and ``families`` x ``seeds`` x ``methods`` step-2 runs (E) take at
    most ``budget_s`` at ``epoch_s`` per epoch."""
    per_e = (teacher_share + families * seeds * (step1_share + methods)) * epoch_s
    e = max(1, min(max_epochs, math.floor(budget_s / per_e)))
    return Plan(max(1, round(teacher_share * e)), max(1, round(step1_share * e)), e, epoch_s,
                budget_s)


def probe_epoch_seconds(width: int, n_train: int, batch_size: int, device: str, amp: bool,
                        shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10,
                        steps: int = 20, warmup: int = 5, overhead: float = 1.45) -> float:
    """Seconds of one step-2 epoch over ``n_train`` images: ``steps`` timed training steps of
    the binary ResNet with ReBNN (after ``warmup``, on random data), times the number of
    batches, times ``overhead`` (the teacher's forward pass, the flip monitor, the test
    evaluation after every epoch)."""
    import torch
    import torch.nn.functional as F

    from hybnn.binary.layers import binary_layers
    from hybnn.binary.methods import method_callbacks, method_scaling
    from hybnn.pipeline.config import ResNetConfig
    from hybnn.pipeline.resnet import augment, autocast, build_resnet
    from hybnn.pipeline.train import optimizer_step

    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_resnet("resnet18", shape, classes, ResNetConfig(width=width), 2,
                         method_scaling("rebnn")).to(dev)
    callbacks = method_callbacks("rebnn", model)
    for cb in callbacks:
        cb.on_train_begin(model)
    latent = [layer for _, layer in binary_layers(model)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, *shape, device=dev)
    y = torch.randint(0, classes, (batch_size,), device=dev)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        with autocast(dev, amp):
            logits = model(augment(x, gen)).float()
        optimizer_step(model, optimizer, F.cross_entropy(logits, y), callbacks, latent)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    per_step = (time.perf_counter() - t0) / max(steps, 1)
    return per_step * math.ceil(n_train / batch_size) * overhead


def stage_data(target: Path = STAGED) -> Path:
    """Copy Fashion-MNIST's four files (from the Debian package or hybnn's download cache)
    into ``target``/fashion-mnist, to travel with the working tree."""
    from hybnn.data.sources import _fashion_files

    folder = target / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in _fashion_files().items():
        shutil.copyfile(path, folder / name)
    return folder


def use_staged_data() -> None:
    """Read Fashion-MNIST from the staged copy in the working tree where it is there (the
    checksums are still checked when it is read)."""
    if (STAGED / "fashion-mnist").is_dir() and "HYBNN_CACHE" not in os.environ:
        os.environ["HYBNN_CACHE"] = str(STAGED)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage-data", action="store_true",
                        help="copy Fashion-MNIST into .cache/hybnn for the GPU machine; exit")
    parser.add_argument("--merge", metavar="JSON", default="",
                        help="write the section of a finished run's --json file into "
                        "--benchmarks; exit")
    parser.add_argument("--out", default="runs/study-rebnn-resnet18-gpu")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", default="fashion-mnist", help="a data source (tests: digits)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--train-size", type=int, default=None, help="default: all 60,000")
    parser.add_argument("--test-size", type=int, default=None, help="default: all 10,000")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher", choices=("with", "without", "both"), default="with")
    parser.add_argument("--minutes", type=float, default=9.0,
                        help="time budget of the whole run, probe included")
    parser.add_argument("--epochs", type=int, default=None,
                        help="step 2's epochs (default: sized to --minutes by the probe)")
    parser.add_argument("--teacher-share", type=float, default=1.5)
    parser.add_argument("--step1-share", type=float, default=1.0)
    parser.add_argument("--no-amp", action="store_true", help="float32 throughout")
    parser.add_argument("--threads", type=int, default=4, help="torch CPU threads")
    parser.add_argument("--json", default="", help="also write the targets to this file")
    parser.add_argument("--benchmarks", default="BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if args.stage_data:
        print(f"Fashion-MNIST -> {stage_data()} (carry .cache/hybnn to the GPU machine)")
        return 0
    if args.merge:
        import json

        from bench.rebnn import write_resnet_part

        write_resnet_part("gpu", json.loads(Path(args.merge).read_text())["section"],
                          args.benchmarks)
        print(f"GPU part of the rebnn-resnet18 section -> {args.benchmarks}")
        return 0
    t_start = time.perf_counter()
    import torch

    from bench.common import write_json
    from bench.rebnn import load_average, resnet_section, resnet_targets, write_resnet_part
    from hybnn.experiments.config import RESNET_STUDY_METHODS, StudyConfig
    from hybnn.experiments.rebnn_study import run_study

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: this script is for a GPU (--device cpu for a tiny test run)",
              file=sys.stderr)
        return 2
    use_staged_data()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    amp = not args.no_amp and args.device.startswith("cuda")
    teacher = {"with": (True,), "without": (False,), "both": (False, True)}[args.teacher]
    n_train = args.train_size or 60_000  # Fashion-MNIST's train split
    epoch_s = probe_epoch_seconds(args.width, n_train, args.batch_size, args.device, amp)
    left = args.minutes * 60 - (time.perf_counter() - t_start) - 20  # data loading, plots
    plan = plan_epochs(left, epoch_s, len(args.seeds), len(teacher),
                       len(RESNET_STUDY_METHODS), args.teacher_share, args.step1_share)
    if args.epochs is not None:
        plan = Plan(max(1, round(args.teacher_share * args.epochs)),
                    max(1, round(args.step1_share * args.epochs)), args.epochs, epoch_s, left)
    print(f"probe: {epoch_s:.1f} s per step-2 epoch of {n_train} images; plan: float twin "
          f"{plan.teacher_epochs}, step 1 {plan.step1_epochs}, step 2 {plan.epochs} epochs")
    cfg = StudyConfig.make(
        data=args.data, net="resnet18", seeds=args.seeds, device=args.device,
        threads=args.threads, width=args.width, epochs=plan.epochs,
        train_size=args.train_size, test_size=args.test_size,
        teacher_epochs=plan.teacher_epochs,
        step1_epochs=plan.step1_epochs, batch_size=args.batch_size, lr=args.lr,
        teacher=teacher, amp=amp)
    start_load = load_average()
    results = run_study(cfg, args.out, progress=False)
    results["seconds"] = time.perf_counter() - t_start  # the probe included
    command = shlex.join(["python", "-m", "bench.rebnn_gpu", *argv])
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    precision = "bfloat16 autocast" if amp else "float32"
    body = resnet_section(results, command, f"GPU ({device}, {precision})",
                          (start_load, load_average()))
    body += (f"\n\nSizing: the probe measured {epoch_s:.1f} s per step-2 epoch; budget "
             f"{args.minutes:g} min, {results['seconds'] / 60:.1f} min used (probe "
             "included).")
    print(body)
    if not args.no_write:
        write_resnet_part("gpu", body, args.benchmarks)
    if args.json:
        write_json(args.json, resnet_targets(results), command=command, device=device,
                   section=body, results=results, seconds=results["seconds"],
                   plan={"epoch_s": epoch_s, "teacher_epochs": plan.teacher_epochs,
                         "step1_epochs": plan.step1_epochs, "epochs": plan.epochs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
