"""``hybnn study``: the studies' subcommands (registered into the main parser by cli.py)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add ``study`` (with sub-study ``rebnn``) to the ``hybnn`` subparsers ``sub``."""
    p = sub.add_parser("study", help="method studies (rebnn: ste vs xnor vs ReBNN)")
    studies = p.add_subparsers(dest="study", required=True, metavar="STUDY")
    r = studies.add_parser("rebnn", help="ReBNN vs ste/xnor: accuracy and weight oscillation")
    r.add_argument("--data", default="fashion-mnist", help="data source (default: %(default)s)")
    r.add_argument("--out", default="runs/study-rebnn", help="output directory")
    r.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2")
    r.add_argument("--epochs", type=int, default=None,
                   help="epochs of every BNN run (default: 8 bcnn, 25 hybnn head)")
    r.add_argument("--quick", action="store_true", help="small subsets, few epochs, 2 seeds")
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    r.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    r.add_argument("--benchmarks", default=None, metavar="FILE",
                   help="also write the rebnn section of this BENCHMARKS.md")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.set_defaults(func=cmd_study_rebnn)


def cmd_study_rebnn(args: argparse.Namespace) -> int:
    from hybnn.experiments.rebnn_study import StudyConfig, run_study, write_benchmarks

    cfg = StudyConfig.make(data=args.data, quick=args.quick, seeds=args.seeds,
                           epochs=args.epochs, device=args.device)
    cfg.threads = args.threads
    results = run_study(cfg, args.out, progress=not args.no_progress)
    print(Path(args.out, "table.md").read_text())
    print(f"results -> {args.out}/results.json, plots -> {args.out}/plots/")
    if args.benchmarks:
        write_benchmarks(results, command_line(args), args.benchmarks)
        print(f"rebnn section -> {args.benchmarks}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The ``hybnn study rebnn`` command that reproduces ``args``."""
    parts = ["hybnn", "study", "rebnn", "--data", args.data, "--out", args.out]
    if args.quick:
        parts.append("--quick")
    if args.seeds:
        parts += ["--seeds", *map(str, args.seeds)]
    if args.epochs is not None:
        parts += ["--epochs", str(args.epochs)]
    parts += ["--device", args.device, "--threads", str(args.threads)]
    if args.benchmarks:
        parts += ["--benchmarks", args.benchmarks]
    return " ".join(shlex.quote(p) for p in parts)
