"""Federated benchmarks; writes the `federated` section of BENCHMARKS.md.

1. Skewed clients: every Flower strategy x partition (Dirichlet 0.5, Dirichlet 0.1, one
   class per client) x encoding on the five pair tasks of mnist-5k, 3 clients, 20 rounds x 5
   local epochs, against centralized HyBNN trained for the same 100 epochs (plus FedAvg on
   IID partitions).
2. Update encodings: bytes up and down per client per round as serialized (Flower's object
   tree, framing included) and the accuracy of each encoding.
3. FedHyBNN vs FedAvg of the whole float and binary CNNs: bytes per round and accuracy.
4. Hostile clients: k of 10 clients send sign-flipped, random or scaled updates, per robust
   strategy (FedAvg for reference), the validating wrapper in front.
5. Scale: N = 10, 100, 1,000 simulated clients, 10 % sampled per round: seconds per round and
   peak memory, each N in a fresh process.
6. The default strategy (`--only default`): FedAvg and the server-optimiser strategies on IID,
   Dirichlet(0.5) and Dirichlet(0.1) partitions, both encodings, five pairs, three seeds
   (partitions, initial head and training; centralized per seed), against the rule
   `--strategy auto` follows.
7. Label skew on ten classes (`--only skew`): 10 clients on Dirichlet(0.5), Dirichlet(0.1),
   1 and 2 classes per client; the default strategy, FedAvg, FedProx, SCAFFOLD and the
   client losses FedRS and FedLC; both encodings, three seeds, against centralized per seed
   (the shipped `general` encoder unless --encoder is given).

Federations run on :class:`hybnn.federated.local_grid.LocalGrid` (Flower's ServerApp,
strategies, ClientApp and mods in this process; `tests/federated/test_fed_strategies.py`
checks it reaches the model Ray's simulation reaches); the scale section also runs Flower's
Ray simulation engine. Every run's row is cached in --out/runs/NAME.json and the pretrained
encoder in --out/encoder, so an interrupted benchmark resumes (--fresh starts over). Usage:

    python -m bench.federated [--encoder DIR] [--out runs/bench-federated] [--quick]
                              [--json FILE] [--render] [--fresh] [--only scale|default]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import torch

from bench._federated_tables import (
    default_markdown,
    markdown,
    physical_memory_mib,
    scale_markdown,
    skew10_markdown,
    targets,
)
from bench.common import write_json, write_section
from hybnn.artifacts import atomic_write_json
from hybnn.data import PAPER_TASKS
from hybnn.federated import faults
from hybnn.federated.config import ENCODINGS, ROBUST, STRATEGIES, FedConfig
from hybnn.federated.encoding import Layout
from hybnn.federated.report import build_results, centralized_baseline, environment
from hybnn.federated.simulation import ensure_encoder
from hybnn.federated.task import encoder_at as task_encoder
from hybnn.federated.task import task_splits
from hybnn.models.bnn_head import BNNHead

ROOT = Path(__file__).resolve().parents[1]  # the repository
SKEWS = (("dirichlet", 0.5), ("dirichlet", 0.1), ("classes", 0.5))  # (scheme, alpha)
HOSTILE_CLIENTS = 10
HOSTILE_KS = (1, 2)
DEFAULT_CANDIDATES = ("fedavg", "fedyogi", "fedadam", "fedadagrad")
DEFAULT_PARTITIONS = (("iid", 0.5), ("dirichlet", 0.5), ("dirichlet", 0.1))
DEFAULT_ENCODINGS = ("fp32", "1bit")
DEFAULT_SEEDS = (0, 1, 2)
# --only skew: (scheme, alpha, classes per client); methods as FedConfig changes
SKEW10_PARTITIONS = (("dirichlet", 0.5, 1), ("dirichlet", 0.1, 1), ("classes", 0.5, 1),
                     ("classes", 0.5, 2))
SKEW10_METHODS: dict[str, dict[str, str]] = {
    "default": {}, "fedavg": {"strategy": "fedavg"}, "fedprox": {"strategy": "fedprox"},
    "scaffold": {"strategy": "scaffold"}, "fedrs": {"skew_loss": "fedrs"},
    "fedlc": {"skew_loss": "fedlc"}}
SKEW10_ROUNDS, SKEW10_EPOCHS = 10, 2  # about 35 minutes on 2 shared cores, 1 thread


def skew_name(scheme: str, alpha: float) -> str:
    if scheme == "iid":
        return "iid"
    return f"dirichlet {alpha:g}" if scheme == "dirichlet" else "one class per client"


def head_layout(encoder: Any) -> dict[str, int]:
    layout = Layout.of(BNNHead(encoder.latent_bits, 2))
    return {"binary": layout.num_binary, "binary_tensors": sum(layout.binary),
            "float": sum(n for n, b in zip(layout.sizes(), layout.binary, strict=True)
                         if not b)}


def local_federation(cfg: FedConfig, mods: Sequence[Any] = ()) -> dict[str, Any]:
    """One federation on the local grid; results.json's content (no files written)."""
    from hybnn.federated.local_grid import run_local

    return build_results(run_local(cfg, mods)[0], None, {"runtime": "local grid"})


def row_of(cfg: FedConfig, res: dict[str, Any], seconds: float, **extra: Any) -> dict[str, Any]:
    rounds = res["rounds"]
    secs = [r["round_seconds"] for r in rounds if r.get("round_seconds") is not None]
    rejected = sum(c["status"] == "rejected" for r in rounds for c in r["clients"])
    return {
        "task": cfg.task, "model": cfg.model, "partition": cfg.partition, "alpha": cfg.alpha,
        "encoding": cfg.encoding, "strategy": cfg.resolved_strategy, "clients": cfg.clients,
        "fraction": cfg.fraction, "rounds": cfg.rounds, "local_epochs": cfg.local_epochs,
        "final_acc": res["final_acc"], "best_acc": res["best_acc"],
        "up_per_client_round": res["bytes_up_per_client_round"],
        "down_per_client_round": res["bytes_down_per_client_round"],
        "bytes_per_round": statistics.mean(r["bytes_up"] + r["bytes_down"] for r in rounds),
        "sampled_per_round": statistics.mean(r["sampled"] for r in rounds),
        "round_seconds_median": statistics.median(secs) if secs else None,
        "rejected_updates": rejected, "wall_seconds": seconds, **extra,
    }


class Runner:
    """Runs federations, caching each row in ``out/runs/NAME.json``."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "runs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.done = 0

    def cached(self, name: str) -> dict[str, Any] | None:
        path = self.dir / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def store(self, name: str, row: dict[str, Any]) -> dict[str, Any]:
        atomic_write_json(self.dir / f"{name}.json", {"name": name, **row})
        self.done += 1
        acc = row.get("final_acc", row.get("acc"))
        print(f"[{self.done}] {name}: final {acc if acc is None else round(100 * acc, 1)} "
              f"({row.get('wall_seconds', 0):.1f} s)", flush=True)
        return {"name": name, **row}

    def federation(self, cfg: FedConfig, name: str, mods: Sequence[Any] = (),
                   **extra: Any) -> dict[str, Any]:
        if (row := self.cached(name)) is not None:
            return row
        t0 = time.perf_counter()
        res = local_federation(cfg, mods)
        return self.store(name, row_of(cfg, res, time.perf_counter() - t0, **extra))

    def central(self, cfg: FedConfig) -> dict[str, Any]:
        name = f"central-{cfg.task}" + (f"-seed{cfg.seed}" if cfg.seed else "")
        if (row := self.cached(name)) is not None:
            return row
        return self.store(name, centralized_baseline(cfg))


def skew_rows(run: Runner, base: FedConfig, tasks: Sequence[str],
              strategies: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for task in tasks:
        for scheme, alpha in SKEWS:
            for enc in ("fp32", "1bit"):
                for strategy in strategies:
                    cfg = base.with_(task=task, partition=scheme, alpha=alpha, encoding=enc,
                                     strategy=strategy)
                    rows.append(run.federation(
                        cfg, f"skew-{task}-{scheme}{alpha:g}-{enc}-{strategy}",
                        skew=skew_name(scheme, alpha)))
    return rows


def encoding_rows(run: Runner, base: FedConfig, tasks: Sequence[str]) -> list[dict[str, Any]]:
    """FedAvg with every encoding, IID and Dirichlet(0.5)."""
    rows = []
    for task in tasks:
        for scheme in ("iid", "dirichlet"):
            for enc in ENCODINGS:
                cfg = base.with_(task=task, partition=scheme, encoding=enc)
                name = (f"skew-{task}-dirichlet0.5-{enc}-fedavg" if scheme == "dirichlet"
                        else f"iid-{task}-{enc}")
                rows.append(run.federation(cfg, name, skew=scheme))
    return rows


def cnn_rows(run: Runner, base: FedConfig, tasks: Sequence[str], quick: bool
             ) -> list[dict[str, Any]]:
    rounds, epochs = (2, 1) if quick else (10, 2)
    # one task: the bytes per round do not depend on it, and a CNN federation costs minutes
    return [run.federation(base.with_(task=t, model=m, rounds=rounds, local_epochs=epochs,
                                      partition="iid", encoding="fp32"), f"cnn-{m}-{t}")
            for t in tasks[:1] for m in ("fpcnn", "bcnn")]


def hostile_rows(run: Runner, base: FedConfig, task: str, quick: bool) -> list[dict[str, Any]]:
    """k of 10 clients attack in every round; robust strategies told f = k."""
    rows = []
    for k in HOSTILE_KS[:1] if quick else HOSTILE_KS:
        for attack in faults.ATTACKS:
            mods = [faults.attack(range(k), attack)]
            for strategy in ("fedavg", *ROBUST):
                if strategy == "bulyan" and HOSTILE_CLIENTS < 4 * k + 3:
                    continue  # Bulyan needs 4f + 3 updates
                f = k if strategy in ("krum", "multikrum", "bulyan") else 0
                cfg = base.with_(task=task, clients=HOSTILE_CLIENTS, strategy=strategy,
                                 partition="iid", encoding="fp32").with_group("robust", hostile=f)
                rows.append(run.federation(cfg, f"hostile-{task}-k{k}-{attack}-{strategy}",
                                           mods, attack=attack, attackers=k))
    for strategy in ("fedavg", *ROBUST):  # the reference: nobody attacks
        cfg = base.with_(task=task, clients=HOSTILE_CLIENTS, strategy=strategy, partition="iid",
                         encoding="fp32")
        rows.append(run.federation(cfg, f"hostile-{task}-k0-none-{strategy}", attack="none",
                                   attackers=0))
    return rows


def default_rows(run: Runner, base: FedConfig, tasks: Sequence[str], quick: bool
                 ) -> dict[str, Any]:
    """Every candidate default x partition x encoding x task x seed, and centralized per
    task and seed."""
    seeds = DEFAULT_SEEDS[:1] if quick else DEFAULT_SEEDS
    central = {f"{t} {s}": run.central(base.with_(task=t, seed=s))["acc"]
               for t in tasks for s in seeds}
    rows = []
    for seed in seeds:
        for task in tasks:
            for scheme, alpha in DEFAULT_PARTITIONS:
                for enc in DEFAULT_ENCODINGS:
                    for strategy in DEFAULT_CANDIDATES:
                        cfg = base.with_(task=task, partition=scheme, alpha=alpha,
                                         encoding=enc, strategy=strategy, seed=seed)
                        rows.append(run.federation(
                            cfg, f"default-{task}-{scheme}{alpha:g}-{enc}-{strategy}-seed{seed}",
                            skew=skew_name(scheme, alpha), seed=seed))
    return {"central": central, "rows": rows, "seeds": list(seeds), "tasks": list(tasks),
            "candidates": list(DEFAULT_CANDIDATES),
            "partitions": [skew_name(scheme, alpha) for scheme, alpha in DEFAULT_PARTITIONS],
            "auto": {enc: FedConfig(encoding=enc).resolved_strategy
                     for enc in DEFAULT_ENCODINGS}}


def skew10_rows(run: Runner, base: FedConfig, quick: bool) -> dict[str, Any]:
    """Ten classes, 10 clients: every method x partition x encoding x seed, and the
    centralized head per seed (seeds outermost: an interrupted run leaves whole seeds)."""
    seeds = DEFAULT_SEEDS[:1] if quick else DEFAULT_SEEDS
    base = base.with_(task="all", clients=10, strategy="auto",
                      rounds=2 if quick else SKEW10_ROUNDS,
                      local_epochs=1 if quick else SKEW10_EPOCHS)
    tag = f"skew10-r{base.rounds}x{base.local_epochs}"
    central = {}
    for seed in seeds:
        name = f"{tag}-central-seed{seed}"
        row = run.cached(name) or run.store(name, centralized_baseline(base.with_(seed=seed)))
        central[str(seed)] = row["acc"]
    rows = []
    for seed in seeds:
        for scheme, alpha, k in SKEW10_PARTITIONS:
            part = (f"dirichlet {alpha:g}" if scheme == "dirichlet"
                    else f"{k} class{'es' if k > 1 else ''} per client")
            for enc in DEFAULT_ENCODINGS:
                for method, changes in SKEW10_METHODS.items():
                    cfg = base.with_(partition=scheme, alpha=alpha, classes_per_client=k,
                                     encoding=enc, seed=seed, **changes)
                    rows.append(run.federation(
                        cfg, f"{tag}-{scheme}{alpha:g}k{k}-{enc}-{method}-seed{seed}",
                        skew=part, method=method, seed=seed))
    return {"central": central, "rows": rows, "seeds": list(seeds),
            "methods": list(SKEW10_METHODS), "encodings": list(DEFAULT_ENCODINGS),
            "config": base.to_dict(), "encoder": base.encoder,
            "test_size": len(task_splits(base.data, base.task)[1].y),
            "auto": {enc: base.with_(encoding=enc).resolved_strategy
                     for enc in DEFAULT_ENCODINGS}}


SCALE_CHILD = """import json, time, torch
torch.set_num_threads(1)
from bench.federated import local_federation, row_of
from hybnn.federated.config import FedConfig
from hybnn.federated.simulation import federate
cfg = FedConfig(**json.loads({cfg!r}))
t0 = time.perf_counter()
res = (local_federation(cfg) if {engine!r} == "local"
       else federate(cfg, {out!r}, centralized=False, num_cpus=1.0))
# VmHWM, not ru_maxrss: Linux keeps the parent's peak in ru_maxrss across fork and exec
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
row = row_of(cfg, res, time.perf_counter() - t0, engine={engine!r}, peak_rss_mib=hwm / 1024)
print("ROW " + json.dumps(row))
"""


def scale_rows(run: Runner, base: FedConfig, quick: bool) -> list[dict[str, Any]]:
    """Each N in a fresh process (its peak RSS is the federation's); local grid and Ray."""
    rows = []
    sizes = (10, 100) if quick else (10, 100, 1000)
    for engine in ("local", "ray"):
        for n in sizes:
            name = f"scale-{engine}-{n}"
            if (row := run.cached(name)) is not None:
                rows.append(row)
                continue
            cfg = base.with_(task="all", clients=n, fraction=0.1, rounds=3 if quick else 8,
                             local_epochs=2, partition="iid", encoding="1bit", min_clients=2,
                             node_wait=600.0, round_timeout=600.0)
            code = SCALE_CHILD.format(cfg=json.dumps(cfg.to_dict()), engine=engine,
                                      out=str((run.dir / name).resolve()))
            try:  # python -c in the repository root imports bench.federated
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                      text=True, timeout=600, cwd=ROOT)
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")),
                            None)
                row = (json.loads(line[4:]) if line else
                       {"engine": engine, "clients": n, "error": proc.stderr[-400:]})
            except subprocess.TimeoutExpired:
                row = {"engine": engine, "clients": n, "error": "timed out after 600 s"}
            row.setdefault("sampled_per_round", cfg.sampled_per_round)
            rows.append(run.store(name, row))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="", help="encoder dir (default: pretrain one)")
    ap.add_argument("--out", default="runs/bench-federated")
    ap.add_argument("--benchmarks", default="BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true", help="2 tasks, 4 strategies, few rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="write the targets here as JSON")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the section from --out/bench.json")
    ap.add_argument("--fresh", action="store_true", help="ignore cached runs")
    ap.add_argument("--only", choices=("scale", "default", "skew"),
                    help="measure only this part and rewrite only its section")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.render:
        raw = json.loads((out / (f"bench-{args.only}.json" if args.only
                                 else "bench.json")).read_text())
    else:
        if args.fresh:
            shutil.rmtree(out / "runs", ignore_errors=True)
            shutil.rmtree(out / "encoder", ignore_errors=True)
        raw = measure(args, out)
    if not args.quick:
        only = raw.get("only")
        if only is None:
            write_section("federated", markdown(raw), args.benchmarks)
        if only in (None, "scale"):
            write_section("federated-scale", scale_markdown(raw), args.benchmarks)
        if only == "default":
            write_section("federated-default", default_markdown(raw), args.benchmarks)
        if only == "skew":
            write_section("federated-skew", skew10_markdown(raw), args.benchmarks)
    if args.json:
        write_json(args.json, targets(raw), command=raw["command"], config=raw["config"],
                   environment=raw["environment"])
    print(f"federated benchmark: {out / 'bench.json'}"
          + ("" if args.quick else f", section in {args.benchmarks}"))
    return 0


def measure(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    quick = args.quick
    tasks = PAPER_TASKS[:2] if quick else PAPER_TASKS
    strategies = ("fedavg", "fedprox", "fedavgm", "fedmedian") if quick else STRATEGIES
    rounds, epochs = (4, 2) if quick else (20, 5)
    base = FedConfig(data="mnist-5k", clients=3, rounds=rounds, local_epochs=epochs,
                     fraction_evaluate=0.0, seed=args.seed, encoder=args.encoder,
                     strategy="fedavg")
    if not args.encoder and (out / "encoder" / "weights.safetensors").is_file():
        base = base.with_(encoder=str((out / "encoder").resolve()))  # this bench's, cached
    if args.only == "skew" and not args.encoder:
        base = base.with_(encoder="general")  # the shipped encoder: no pretraining
    base = ensure_encoder(base, out, pretrain_epochs=20)
    encoder = task_encoder(base.encoder)
    print(f"encoder {base.encoder} ({encoder.fingerprint[:12]})", flush=True)
    run = Runner(out)
    common = {
        "config": base.to_dict(), "threads": 1,
        "environment": {**environment(), "memory_mib": physical_memory_mib()},
        "encoder_fingerprint": encoder.fingerprint, "head": head_layout(encoder),
        "command": " ".join(["-m bench.federated", *sys.argv[1:]]),
    }
    if args.only == "scale":
        raw = {"only": "scale", "scale": scale_rows(run, base, quick), **common,
               "seconds": time.perf_counter() - t_start}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "bench-scale.json", raw)
        return raw
    if args.only == "default":
        raw = {"only": "default", "default": default_rows(run, base, tasks, quick), **common,
               "seconds": time.perf_counter() - t_start}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "bench-default.json", raw)
        return raw
    if args.only == "skew":
        load = f"{os.getloadavg()[0]:.1f}"
        skew = skew10_rows(run, base.with_(encoder=args.encoder or "general"), quick)
        skew["encoder"] = args.encoder or "general"
        raw = {"only": "skew", "skew10": skew, **common,
               "load": {"start": load, "end": f"{os.getloadavg()[0]:.1f}"},
               "seconds": time.perf_counter() - t_start}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "bench-skew.json", raw)
        return raw
    central = {t: run.central(base.with_(task=t)) for t in tasks}
    raw = {
        "centralized": central,
        "skew": skew_rows(run, base, tasks, strategies),
        "encodings": encoding_rows(run, base, tasks),
        "cnn": cnn_rows(run, base, tasks, quick),
        "hostile": hostile_rows(run, base.with_(rounds=10 if not quick else 3,
                                                local_epochs=2), "2v3", quick),
        "scale": scale_rows(run, base, quick),
        "strategies": list(strategies), "quick": quick, **common,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - t_start,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "bench.json", raw)
    return raw


if __name__ == "__main__":
    sys.exit(main())
