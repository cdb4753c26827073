"""The ReBNN study (``ste`` vs ``xnor`` vs ``rebnn`` vs ``rebnn-const`` on the binary CNN and
the BNN head); writes BENCHMARKS.md's `rebnn` section.

Runs :func:`hybnn.experiments.rebnn_study.run_study` (what ``hybnn study rebnn`` runs, with
the same options) and checks the target per family and ReBNN variant: at least 2x fewer late
weight flips than ``ste`` and a higher accuracy.

    python -m bench.rebnn [--out runs/study-rebnn] [--threads 1] [--data D] [--quick]
                          [--seeds S ...] [--epochs N] [--json FILE] [--no-write]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import shlex
from typing import Any

from bench.common import target, write_json, write_section
from hybnn.experiments.config import StudyConfig
from hybnn.experiments.rebnn_study import results_table, run_study

SECTION = "rebnn"
FLIP_CUT = 2.0  # ReBNN's late flip ratio at least this many times lower than ste's


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per family and ReBNN variant: the flip reduction and the accuracy change vs ``ste``."""
    found = []
    for family, res in results["models"].items():
        methods = res["methods"]
        if "ste" not in methods:
            continue
        base = methods["ste"]
        for name in ("rebnn", "rebnn-const"):
            if name not in methods:
                continue
            r = methods[name]
            cut = (base["flip_ratio_late"] / r["flip_ratio_late"]
                   if r["flip_ratio_late"] > 0 else float("inf"))
            gain = 100 * (r["acc_mean"] - base["acc_mean"])
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/study-rebnn", help="the study's directory")
    parser.add_argument("--data", default=StudyConfig.data)
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
                           epochs=args.epochs, device=args.device, threads=args.threads)
    results = run_study(cfg, args.out, progress=not args.no_progress)
    command = shlex.join(["python", "-m", "bench.rebnn", *argv])
    body = section(results, command)
    print(body)
    if not args.no_write:
        write_section(SECTION, body, args.benchmarks)
        print(f"{SECTION} section -> {args.benchmarks}")
    if args.json:
        write_json(args.json, targets(results), command=command, config=results["config"],
                   seconds=results["seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
