"""The ReBNN study (``ste`` vs ``xnor`` vs ``rebnn`` vs ``rebnn-const`` on the binary CNN and
the BNN head); writes BENCHMARKS.md's `rebnn` section. ``--net resnet18``: the binary
ResNet-18 study (ReActNet vs ReBNN, without and with a float teacher); writes the CPU part of
the `rebnn-resnet18` section (``bench/rebnn_gpu.py`` writes its GPU part).

Runs :func:`hybnn.experiments.rebnn_study.run_study` (what ``hybnn study rebnn`` runs, with
the same options) and checks the targets. CNN: per family and ReBNN variant, at least 2x
fewer late weight flips than ``ste`` and a higher accuracy. ResNet: per teacher setting and
ReBNN variant, at least 2x fewer late flips than ReActNet and an accuracy no lower (mean of
the seeds); the best binary ResNet at or above 92.9 % (Fashion-MNIST, CBCNN's 92.86 %) and
within 2 points of its float twin.

    python -m bench.rebnn [--net cnn|resnet18] [--width W] [--out DIR] [--threads 1]
                          [--data D] [--quick] [--seeds S ...] [--epochs N] [--json FILE]
                          [--no-write]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import shlex
from typing import Any

from bench.common import target, write_json, write_section
from hybnn.experiments.config import STUDY_NETS, StudyConfig
from hybnn.experiments.rebnn_study import results_table, run_study

SECTION = "rebnn"
RESNET_SECTION = "rebnn-resnet18"
FLIP_CUT = 2.0  # ReBNN's late flip ratio at least this many times lower than the baseline's
RECORD = 0.929  # above the bitwise CBCNN's 92.86 % on Fashion-MNIST
TWIN_GAP = 2.0  # points of the float twin the best binary ResNet stays within


def versus(base: dict[str, Any], method: dict[str, Any]) -> tuple[float, float]:
    """(how many times fewer late flips, accuracy gain in points) of ``method`` over
    ``base``, two rows of a study's methods."""
    cut = (base["flip_ratio_late"] / method["flip_ratio_late"]
           if method["flip_ratio_late"] > 0 else float("inf"))
    return cut, 100 * (method["acc_mean"] - base["acc_mean"])


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per family and ReBNN variant: the flip reduction and the accuracy change vs ``ste``
    (vs ``reactnet`` on the ResNet, :func:`resnet_targets`)."""
    if results["config"].get("net") == "resnet18":
        return resnet_targets(results)
    found = []
    for family, res in results["models"].items():
        methods = res["methods"]
        if "ste" not in methods:
            continue
        base = methods["ste"]
        for name in ("rebnn", "rebnn-const"):
            if name not in methods:
                continue
            cut, gain = versus(base, methods[name])
            found.append(target(f"{family} {name} late flip ratio vs ste (times lower)",
                                round(cut, 2), f">= {FLIP_CUT:g}x", cut >= FLIP_CUT))
            found.append(target(f"{family} {name} accuracy vs ste (points)", round(gain, 2),
                                "> 0", gain > 0))
    return found


def verdict(results: dict[str, Any]) -> list[str]:
    """One line per family and ReBNN variant: both targets met or not."""
    found = targets(results)
    lines = []
    for cut, gain in zip(found[::2], found[1::2], strict=True):
        family, name = cut["name"].split()[:2]
        met = cut["met"] and gain["met"]
        lines.append(f"- {family}, {name}: late flip ratio {cut['value']:.2f}× lower than ste, "
                     f"accuracy {gain['value']:+.2f} points; target (≥{FLIP_CUT:g}× fewer "
                     f"flips and higher accuracy): {'met' if met else 'not met'}.")
    return lines


def section(results: dict[str, Any], command: str) -> str:
    """The BENCHMARKS.md ``rebnn`` section for a finished study."""
    cfg = results["config"]
    v = results["versions"]
    shown = {k: cfg[k] for k in ("data", "methods", "seeds", "train_size", "head_train_size",
                                 "test_size", "pretrain_size", "bcnn_epochs", "head_epochs",
                                 "pretrain_epochs", "batch_size", "lr", "threads", "device")}
    lines = [
        "## ReBNN study: weight oscillation and accuracy",
        "",
        f"Command: `{command}` ({results['seconds'] / 60:.1f} min wall time, with the "
        "machine's cores shared with other jobs)",
        "",
        f"Machine: {results['machine']}; hybnn {v['hybnn']}, numpy {v['numpy']}.",
        "",
        f"Config: `{json.dumps(shown)}`. Adam with cosine decay; flip ratio = fraction of "
        "latent weights whose sign differs from the previous epoch's end, averaged over the "
        "binary layers and the last quarter of epochs, then over seeds. Training data are "
        "random subsets of the official train split where the sizes say so.",
        "",
        results_table(results),
        "",
        *verdict(results),
    ]
    return "\n".join(lines)


def best_binary(results: dict[str, Any]) -> tuple[str, str, float]:
    """(family, method, mean accuracy) of the most accurate binary ResNet of the study."""
    return max(((f, m, r["acc_mean"]) for f, res in results["models"].items()
                for m, r in res["methods"].items()), key=lambda t: t[2])


def resnet_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per teacher setting and ReBNN variant vs ReActNet: the late flip reduction (>= 2x) and
    the accuracy change (no lower); then the best binary ResNet against the record and
    against its float twin."""
    found = []
    cfg = results["config"]
    for family, res in results["models"].items():
        methods = res["methods"]
        base = methods.get("reactnet")
        for name in ("rebnn", "rebnn-const"):
            if base is None or name not in methods:
                continue
            cut, gain = versus(base, methods[name])
            found.append(target(f"{family} {name} late flip ratio vs reactnet (times lower)",
                                round(cut, 2), f">= {FLIP_CUT:g}x", cut >= FLIP_CUT))
            found.append(target(f"{family} {name} accuracy vs reactnet (points)",
                                round(gain, 2), ">= 0", gain >= 0))
    family, method, acc = best_binary(results)
    rc = cfg["resnet"]
    where = (f"width {rc['width']}, {results['models'][family]['sizes']['train']} train "
             f"images, {rc['epochs']} step-2 epochs")
    found.append(target(f"best binary ResNet-18 test accuracy on {cfg['data']} ({family} "
                        f"{method}; {where})", round(acc, 4), f">= {RECORD}", acc >= RECORD))
    twin = results.get("float_twin")
    if twin:
        gap = 100 * (twin["acc"] - acc)
        found.append(target(f"best binary ResNet-18 below its float twin (points; twin "
                            f"{twin['acc']:.4f})", round(gap, 2), f"<= {TWIN_GAP:g}",
                            gap <= TWIN_GAP))
    return found


def resnet_verdict(results: dict[str, Any]) -> list[str]:
    """One line per target of :func:`resnet_targets`."""
    return [f"- {t['name']}: {t['value']} (goal {t['goal']}): "
            f"{'met' if t['met'] else 'not met'}." for t in resnet_targets(results)]


def resnet_bounds(results: dict[str, Any]) -> list[str]:
    """What bounds this run next to the targets' setting, and the size of the paper's γ."""
    cfg, rc = results["config"], results["config"]["resnet"]
    sizes = next(iter(results["models"].values()))["sizes"]
    lines = [f"- Bounds: width {rc['width']} (the target's: 64), {sizes['train']:,} training "
             f"and {sizes['test']:,} test images of {cfg['data']} (the target's: 60,000 and "
             f"10,000), float twin {rc['teacher_epochs']}, step 1 {rc['step1_epochs']} and "
             f"step 2 {rc['epochs']} epochs (ReBNN: 256 on ImageNet); flips are compared over "
             f"the last {max(1, -(-rc['epochs'] // 4))} epoch(s) of step 2."]
    for family, res in results["models"].items():
        r = res["methods"].get("rebnn")
        if r and r["gamma_late_layers"]:
            g = list(r["gamma_late_layers"].values())
            lines.append(f"- {family}: the paper's γ, last quarter, ranges {min(g):.1e} to "
                         f"{max(g):.1e} over the layers (mean {r['gamma_late']:.1e}), "
                         f"{2e-4 / r['gamma_late']:.0f}× below the official constant 2e-4."
                         if r["gamma_late"] > 0 else f"- {family}: the paper's γ stayed 0.")
    return lines


def load_average() -> str:
    """The machine's 1/5/15-minute load averages, for the record beside a timing."""
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def resnet_section(results: dict[str, Any], command: str, where: str,
                   load: tuple[str, str] | None = None) -> str:
    """One part (``where``: CPU or GPU) of BENCHMARKS.md's ``rebnn-resnet18`` section;
    ``load``: the load averages at the start and the end of the run."""
    cfg = results["config"]
    v = results["versions"]
    shown = {k: cfg[k] for k in ("data", "methods", "seeds", "device", "threads")}
    lines = [
        f"### {where}",
        "",
        f"Command: `{command}` ({results['seconds'] / 60:.1f} min wall time)",
        "",
        f"Machine: {results['machine']}; hybnn {v['hybnn']}."
        + (f" Load average (1/5/15 min): {load[0]} at the start, {load[1]} at the end (the "
           "cores are shared with other jobs)." if load else ""),
        "",
        f"Config: `{json.dumps(shown)}`, ResNet: `{json.dumps(cfg['resnet'])}`.",
        "",
        results_table(results),
        "",
        *resnet_verdict(results),
        *resnet_bounds(results),
    ]
    return "\n".join(lines)


RESNET_HEAD = """## ReBNN on the binary ResNet-18: ReActNet vs ReBNN, oscillation and accuracy

`hybnn study rebnn --net resnet18`: the float twin trained once (the teacher); per seed,
step 1 (binary activations, real weights), then step 2 from it with each method, without
and with distillation from the twin (`resnet18` / `resnet18-kd`). Flip ratio = fraction of
the 16 binary convolutions' latent weights whose sign differs from the previous epoch's end,
averaged over the layers and the last quarter of step 2's epochs, then over seeds; γ per
layer likewise. Targets: ReBNN ≥ 2× fewer late flips than ReActNet *and* accuracy no lower
(mean of the seeds); the best binary ResNet-18 ≥ 92.9 % on Fashion-MNIST and within 2 points
of its float twin."""


NO_GPU_RUN = """### GPU

**No GPU run exists yet.** `bench/rebnn_gpu.py` is the script: width 64, all 60,000 / 10,000
images of Fashion-MNIST, bfloat16 autocast, the float twin and distillation in both steps, the
four methods, seeds 0 1 2, its epochs sized by a probe of training steps to 9 minutes (inside
10 of one H100). Its code path is tested on the meta device (the full-width step) and on a
CPU at width 2 only. To run it: `python -m bench.rebnn_gpu --stage-data` here (Fashion-MNIST
into `.cache/hybnn`, carried along), `PYTHONPATH=src python3 -m bench.rebnn_gpu --no-write
--json rebnn-gpu.json` on the GPU machine, then `python -m bench.rebnn_gpu --merge
rebnn-gpu.json` here."""


def write_resnet_part(part: str, body: str, path: str | os.PathLike[str]) -> None:
    """Write the ``cpu`` or ``gpu`` part of the ``rebnn-resnet18`` section (the section is
    made, with both parts empty, where it is missing)."""
    text = Path(path).read_text() if Path(path).is_file() else ""
    if f"<!-- {RESNET_SECTION}:start -->" not in text:
        empty = {"cpu": "### CPU\n\nNo CPU run yet.", "gpu": NO_GPU_RUN}
        parts = [f"<!-- {RESNET_SECTION}-{p}:start -->\n{b}\n<!-- {RESNET_SECTION}-{p}:end -->"
                 for p, b in empty.items()]
        write_section(RESNET_SECTION, "\n\n".join([RESNET_HEAD, *parts]), path)
    write_section(f"{RESNET_SECTION}-{part}", body, path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="", help="the study's directory (default: "
                        "runs/study-rebnn, runs/study-rebnn-resnet18)")
    parser.add_argument("--data", default=StudyConfig.data)
    parser.add_argument("--net", default=StudyConfig.net, choices=STUDY_NETS)
    parser.add_argument("--width", type=int, default=None,
                        help="--net resnet18: base channels (default 8)")
    parser.add_argument("--quick", action="store_true", help="small subsets, few epochs, 2 seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every BNN run (default: 8 bcnn, 25 head)")
    parser.add_argument("--device", default=StudyConfig.device)
    parser.add_argument("--threads", type=int, default=StudyConfig.threads)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json", default="", help="also write the targets to this file")
    parser.add_argument("--benchmarks", default="BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    cfg = StudyConfig.make(data=args.data, quick=args.quick, seeds=args.seeds,
                           epochs=args.epochs, device=args.device, threads=args.threads,
                           net=args.net, width=args.width)
    out = args.out or ("runs/study-rebnn" if args.net == "cnn" else "runs/study-rebnn-resnet18")
    start_load = load_average()
    results = run_study(cfg, out, progress=not args.no_progress)
    command = shlex.join(["python", "-m", "bench.rebnn", *argv])
    if args.net == "resnet18":
        body = resnet_section(results, command, f"CPU ({cfg.threads} torch thread(s))",
                              (start_load, load_average()))
    else:
        body = section(results, command)
    print(body)
    if not args.no_write:
        if args.net == "resnet18":
            write_resnet_part("cpu", body, args.benchmarks)
        else:
            write_section(SECTION, body, args.benchmarks)
        print(f"{RESNET_SECTION if args.net == 'resnet18' else SECTION} section -> "
              f"{args.benchmarks}")
    if args.json:
        write_json(args.json, targets(results), command=command, config=results["config"],
                   seconds=results["seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
