"""Continual-learning targets: writes the `continual` section of BENCHMARKS.md.

Runs `hybnn continual` on mnist-5k (five pair tasks in order, class- and domain-incremental,
every strategy, three seeds) and checks the target: class-incremental, with at most
1 % of the training codes' bytes kept, final accuracy within 2 points of joint training.
Replay is also run at larger budgets, to show what stored-code replay needs.

Usage: python -m bench.continual [--json FILE] [--quick] [--encoder DIR] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import datetime as dt
import json
import shlex
from dataclasses import replace
from typing import Any

import torch

from bench.common import write_section
from hybnn.experiments.continual import continual
from hybnn.experiments.continual_config import BUDGETED, SCENARIO_TITLES, ContinualConfig
from hybnn.experiments.continual_report import strategy_table
from hybnn.machine import machine_description

GOAL_POINTS = 2.0
SWEEP_FRACTIONS = (0.05, 0.2)  # replay budgets beyond the target's 1 %


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = results["scenarios"]["class"]
    joint = rows["joint"]["final_acc_mean"]
    out = []
    for name in BUDGETED:
        gap = 100 * (joint - rows[name]["final_acc_mean"])
        out.append({"name": f"class-incremental {name} gap vs joint", "value": round(gap, 2),
                    "goal": f"<= {GOAL_POINTS:g} points", "met": bool(gap <= GOAL_POINTS),
                    "memory_bytes": rows[name]["memory_bytes"],
                    "budget_bytes": results["memory_budget_bytes"]})
    return out


def _pretrain(encoder: str) -> str:
    meta = json.loads((Path(encoder) / "meta.json").read_text())
    p, d = meta.get("pretrain", {}), meta.get("data", {})
    return (f"{p.get('epochs')} epochs, seed {p.get('seed')}, beta {p.get('beta')} on "
            f"{d.get('samples')} {d.get('source')} {d.get('split')} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="write machine, targets and results")
    parser.add_argument("--quick", action="store_true", help="one seed, few epochs")
    parser.add_argument("--encoder", help="reuse this encoder (else phase 1 runs first)")
    parser.add_argument("--out", default="runs/bench-continual")
    parser.add_argument("--benchmarks", default="BENCHMARKS.md")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = ContinualConfig.make(quick=args.quick, encoder=args.encoder)
    out = Path(args.out)
    results = continual(config, out / "main", progress=False, echo=False)
    encoder = config.encoder or str(out / "main" / "encoder")
    joint = results["scenarios"]["class"]["joint"]["final_acc_mean"]
    sweep = []
    for fraction in SWEEP_FRACTIONS:
        cfg = replace(config, encoder=encoder, scenarios=["class"], strategies=["replay"],
                      memory_fraction=fraction)
        cell = continual(cfg, out / f"replay-{fraction:g}", progress=False,
                         echo=False)["scenarios"]["class"]["replay"]
        sweep.append({"memory_fraction": fraction, "memory_bytes": cell["memory_bytes"],
                      "final_acc_mean": cell["final_acc_mean"],
                      "final_acc_std": cell["final_acc_std"],
                      "gap_vs_joint": 100 * (joint - cell["final_acc_mean"])})
    found = targets(results)
    command = shlex.join(["python", "-m", "bench.continual", *sys.argv[1:]])
    lines = [f"Command: `{command}`  ", f"Machine: {machine_description()}, "
             f"{args.threads} torch thread(s)  ", f"Date: {dt.date.today().isoformat()}", "",
             f"Data {results['data']}, tasks {' → '.join(results['tasks'])}, seeds "
             f"{results['seeds']}, {config.epochs} head epochs per task (batch "
             f"{config.batch_size}); memory budget {results['memory_budget_bytes']:,} B = "
             f"{100 * config.memory_fraction:g} % of {results['train_codes']:,} training "
             f"codes at {results['bytes_per_code']} B + 1 B label. Mean ± std over seeds.", "",
             f"Encoder `{results['encoder']['fingerprint'][:12]}`: "
             + (f"reused from `{args.encoder}` (pretrained with {_pretrain(args.encoder)})"
                if args.encoder else "pretrained by this run (phase-1 defaults)") + ".", "",
             "Targets (class-incremental, <= 1 % memory, final accuracy within "
             f"{GOAL_POINTS:g} points of joint):", ""]
    lines += [f"- {t['name']}: {t['value']:.2f} points ({t['memory_bytes']:,} B kept): "
              f"{'PASS' if t['met'] else 'MISS'}" for t in found]
    for scenario in results["scenarios"]:
        lines += ["", f"#### {SCENARIO_TITLES[scenario]}", "",
                  *strategy_table(results, scenario)]
    lines += ["", "#### class-incremental replay at larger budgets", "",
              "| memory | bytes | final accuracy % | gap vs joint (points) |", "|---|---|---|---|"]
    lines += [f"| {100 * s['memory_fraction']:g} % | {s['memory_bytes']:,} "
              f"| {100 * s['final_acc_mean']:.2f} ± {100 * s['final_acc_std']:.2f} "
              f"| {s['gap_vs_joint']:.2f} |" for s in sweep]
    lines += ["", f"Accuracy matrices: `{out / 'main' / 'results.md'}`. Total "
              f"{results['seconds_total']:.0f} s for the main run."]
    body = "### Continual learning: five pair tasks in order, one head\n\n" + "\n".join(lines)
    write_section("continual", body, args.benchmarks)
    print(body)
    if args.json:
        summary = {s: {m: {k: c[k] for k in ("final_acc_mean", "final_acc_std",
                                             "forgetting_mean", "forgetting_std",
                                             "memory_bytes", "matrix_mean")}
                       for m, c in rows.items()} for s, rows in results["scenarios"].items()}
        Path(args.json).write_text(json.dumps(
            {"machine": machine_description(), "command": command, "targets": found,
             "config": results["config"], "seeds": results["seeds"],
             "versions": results["versions"], "results": summary, "replay_sweep": sweep},
            indent=1) + "\n")


if __name__ == "__main__":
    main()
