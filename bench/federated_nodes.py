"""A deployment against the simulation on the same node files; writes BENCHMARKS.md's
``federated-nodes`` section.

Per seed, ``hybnn partition`` writes a Dirichlet(alpha) partition of the task as one file per
node (and the test split as the server's test file); then the same federation runs twice on
those files: in Flower's Ray simulation (``hybnn federate --node-data``) and as a real
deployment (``hybnn federate --deploy --node-data``: a SuperLink and one SuperNode process
per file, TLS and SuperNode authentication on). Both execute the same ClientApp on the same
files, so they should end at the same accuracy: the target is that the deployment ends
within 1 point of the simulation (mean over the seeds of the absolute difference of the
final accuracies on the server's test file).

    python -m bench.federated_nodes [--data mnist-5k] [--task all] [--clients 3]
        [--alpha 0.5] [--seeds 0 1 2] [--rounds 10] [--local-epochs 2] [--encoder general]
        [--out runs/bench-federated-nodes] [--json FILE] [--no-write] [--render]
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
import shutil
import statistics
import time
from typing import Any

from bench.common import machine_description, target, write_json, write_section
from hybnn import api
from hybnn.federated.config import FedConfig
from hybnn.federated.report import environment

GOAL_POINTS = 1.0


def federation(cfg: FedConfig, out: Path, nodes: list[str], deploy: bool) -> dict[str, Any]:
    """One federation on the node files; its results and wall time."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = api.federate(api.FederateOptions(out=str(out), config=cfg, node_data=nodes,
                                           deploy=deploy, centralized=False, progress=False))
    seconds = time.perf_counter() - t0
    return {"final_acc": res["final_acc"], "status": res["status"],
            "runtime": res.get("runtime"), "seconds": seconds,
            "trained": [sorted(c["num_examples"] for c in r["clients"] if c["status"] == "ok")
                        for r in res["rounds"]],
            "security": res.get("security"),
            "accs": [r["global_acc"] for r in res["rounds"]]}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        part = api.PartitionOptions(out=str(out / f"seed{seed}" / "nodes"), data=args.data,
                                    task=args.task, clients=args.clients,
                                    partition="dirichlet", alpha=args.alpha, seed=seed)
        shutil.rmtree(part.out, ignore_errors=True)
        files = api.partition(part)
        manifest = files.manifest
        cfg = FedConfig(data=args.data, task=args.task, clients=args.clients,
                        rounds=args.rounds, local_epochs=args.local_epochs, seed=seed,
                        encoder=args.encoder, min_clients=args.clients, fraction_evaluate=0.0,
                        round_timeout=600.0, node_wait=300.0)
        cfg = cfg.with_group("local_data", server_test=str(files.server_test),
                             labels=",".join(map(str, files.labels)))
        nodes = [str(p) for p in files.nodes]
        row: dict[str, Any] = {"seed": seed,
                               "node_samples": [n["samples"] for n in manifest["nodes"]],
                               "node_classes": [n["classes"] for n in manifest["nodes"]]}
        for name, deploy in (("simulation", False), ("deployment", True)):
            print(f"seed {seed}: {name}", flush=True)
            row[name] = federation(cfg, out / f"seed{seed}" / name, nodes, deploy)
        sim, dep = row["simulation"]["final_acc"], row["deployment"]["final_acc"]
        row["gap_points"] = abs(dep - sim) * 100
        row["same_every_round"] = row["simulation"]["accs"] == row["deployment"]["accs"]
        rows.append(row)
    return {"rows": rows, "settings": vars(args), "environment": environment(),
            "date": str(dt.date.today()), "machine": machine_description(),
            "load_end": f"{os.getloadavg()[0]:.1f}"}


def markdown(raw: dict[str, Any]) -> str:
    s = raw["settings"]
    rows = raw["rows"]
    gap = statistics.fmean(r["gap_points"] for r in rows)
    lines = [
        "## Federated: a deployment against the simulation on the same node files",
        "",
        f"Command: `python -m bench.federated_nodes` ({raw.get('date', dt.date.today())}; "
        f"hybnn {raw['environment'].get('hybnn', '')}, flwr {raw['environment'].get('flwr', '')}; "
        f"{raw.get('machine', '')}). "
        f"`hybnn partition` writes a Dirichlet({s['alpha']:g}) partition of {s['data']} "
        f"`{s['task']}` as {s['clients']} node files (and the test split as the server's test "
        f"file); the same federation ({s['rounds']} rounds x {s['local_epochs']} local epochs, "
        f"encoder `{s['encoder']}`, otherwise `hybnn federate`'s defaults) then runs in "
        "Flower's Ray simulation and as a real deployment (SuperLink and one SuperNode "
        "process per file, TLS and SuperNode authentication on). Accuracy on the server's "
        "test file after the last round.",
        "",
        "| seed | node images | simulation | deployment | difference (points) | "
        "every round equal | simulation s | deployment s |",
        "|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        sim, dep = r["simulation"], r["deployment"]
        lines.append(f"| {r['seed']} | {', '.join(map(str, r['node_samples']))} | "
                     f"{sim['final_acc'] * 100:.2f} | {dep['final_acc'] * 100:.2f} | "
                     f"{r['gap_points']:.2f} | {'yes' if r['same_every_round'] else 'no'} | "
                     f"{sim['seconds']:.0f} | {dep['seconds']:.0f} |")
    lines += ["", f"Mean difference {gap:.2f} points (target: at most {GOAL_POINTS:g}). "
              "Both runs execute the same ClientApp on the same files with the same seeds; "
              "a difference would come from the transport (message order, a node missing a "
              "round), not from the data."]
    return "\n".join(lines)


def targets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    gap = statistics.fmean(r["gap_points"] for r in raw["rows"])
    return [target("deployment vs simulation on the same node files: mean |final accuracy "
                   "difference| (points)", round(gap, 3), f"<= {GOAL_POINTS:g}",
                   gap <= GOAL_POINTS)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist-5k")
    ap.add_argument("--task", default="all")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--encoder", default="general")
    ap.add_argument("--out", default="runs/bench-federated-nodes")
    ap.add_argument("--benchmarks", default="BENCHMARKS.md")
    ap.add_argument("--json", metavar="FILE", help="write the targets here as JSON")
    ap.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the section from --out/bench.json")
    args = ap.parse_args(argv)
    if args.render:
        raw = json.loads((Path(args.out) / "bench.json").read_text())
    else:
        raw = measure(args)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench.json").write_text(json.dumps(raw, indent=1) + "\n")
    if not args.no_write:
        write_section("federated-nodes", markdown(raw), args.benchmarks)
    if args.json:
        write_json(args.json, targets(raw), command="python -m bench.federated_nodes "
                   + " ".join(sys.argv[1:]), settings=vars(args))
    for t in targets(raw):
        print(f"{t['name']}: {t['value']} (goal {t['goal']}, met {t['met']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
