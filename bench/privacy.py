"""Privacy vs utility of FedHyBNN under differential privacy; writes the `privacy` section
of BENCHMARKS.md.

For each pair task of mnist-5k, both update encodings: 10 clients, 20 rounds x 5 local
epochs, FedAvg, central DP with server-side fixed clipping (`--dp server-fixed`) at one
clipping norm and a few noise multipliers (0: no DP): the final accuracy of the global head
against the epsilon spent at delta 1e-5 (Flower's RDP accountant; client-level,
no sampling amplification). Plus one local-DP row per task (`--dp local`, fp32), and what an
update's norm is made of (one client's first-round update by tensor group), which is what
the clipping norm has to cover.

Every federation runs on the in-process LocalGrid (`federate(..., engine="local")`). The DP
noise is not seeded (see hybnn.federated.privacy): reruns differ a little. Raw results go
to --out/bench.json. Usage:

    python bench/privacy.py [--encoder DIR] [--out runs/bench-privacy] [--quick]
                            [--json FILE] [--render]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybnn.benchmarks import target, write_json, write_section
from hybnn.data import PAPER_TASKS
from hybnn.federated import task as fed_task
from hybnn.federated.config import FedConfig
from hybnn.federated.encoding import Layout, model_state
from hybnn.federated.report import environment
from hybnn.federated.simulation import ensure_encoder, federate

# Chosen by measuring without DP: a first-round update is ~1,500 long, later ones a few
# hundred (the section's medians: ~290 fp32, ~400 1bit), almost all of it batch-norm
# running variances. At 500 clipping alone costs nothing (0v1: 99.0 % at z = 0.001 for
# both encodings, 64.5 % at C = 10, measured while choosing).
CLIPPING_NORM = 500.0
NOISE = (0.0, 0.01, 0.1, 0.3, 1.0)  # 0: no DP
DELTA = 1e-5
LOCAL_EPSILON = 1.0  # per round, per client: the largest the classical mechanism covers


def update_parts(cfg: FedConfig) -> dict[str, float]:
    """L2 norm of partition 0's first-round update (the seeded initial head, trained
    locally), by tensor group: binary weights, batch-norm affine, running means and
    variances, and the whole."""
    encoder = fed_task.encoder_at(cfg.encoder)
    model = fed_task.build_model(cfg, encoder)
    layout = Layout.of(model)
    before = model_state(model, layout)
    train, _ = fed_task.client_tensors(cfg, 0, encoder)
    fed_task.train_local(model, train, cfg, 1, 0)
    after = model_state(model, layout)
    groups: dict[str, float] = {"binary weights": 0.0, "batch-norm affine": 0.0,
                                "running means": 0.0, "running variances": 0.0}
    for k, binary in zip(layout.keys, layout.binary, strict=True):
        group = ("binary weights" if binary else "running means" if k.endswith("running_mean")
                 else "running variances" if k.endswith("running_var")
                 else "batch-norm affine")
        groups[group] += float(np.sum((after[k].astype(np.float64) - before[k]) ** 2))
    parts = {g: math.sqrt(v) for g, v in groups.items()}
    parts["whole update"] = math.sqrt(sum(groups.values()))
    return parts


def run(cfg: FedConfig, out: Path, name: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = federate(cfg, out / name, centralized=False, engine="local")
    norms = [c["update_norm"] for r in res["rounds"] for c in r["clients"]
             if c["status"] == "ok"]
    row = {
        "name": name, "task": cfg.task, "encoding": cfg.encoding, "dp": cfg.dp,
        "noise_multiplier": cfg.noise_multiplier if cfg.dp == "server-fixed" else 0.0,
        "clipping_norm": cfg.clipping_norm if cfg.dp != "none" else None,
        "local_epsilon": cfg.local_epsilon if cfg.dp == "local" else None,
        "final_acc": res["final_acc"], "best_acc": res["best_acc"],
        "epsilon": res["epsilon"], "delta": res["delta"],
        "update_norm_median": statistics.median(norms) if norms else None,
        "aggregated_rounds": sum(r["aggregated"] for r in res["rounds"]),
        "wall_seconds": time.perf_counter() - t0,
    }
    eps = "–" if row["epsilon"] is None else f"{row['epsilon']:.4g}"
    print(f"  {name}: acc {row['final_acc']:.4f}, epsilon {eps}, "
          f"{row['wall_seconds']:.0f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="", help="encoder dir (default: pretrain one)")
    ap.add_argument("--out", default="runs/bench-privacy")
    ap.add_argument("--benchmarks", default="BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true",
                    help="one task, 4 rounds x 2 local epochs, three noise levels (smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="write the targets here as JSON")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the section from --out/bench.json")
    args = ap.parse_args(argv)
    if args.render:
        raw = json.loads((Path(args.out) / "bench.json").read_text())
        write_section("privacy", markdown(raw), args.benchmarks)
        _write_targets(raw, args.json)
        return 0
    torch.set_num_threads(1)
    out = Path(args.out)
    t_start = time.perf_counter()
    tasks = PAPER_TASKS[:1] if args.quick else PAPER_TASKS
    rounds, epochs = (4, 2) if args.quick else (20, 5)
    noise = (0.0, 0.1, 1.0) if args.quick else NOISE
    base = FedConfig(data="mnist-5k", clients=10, rounds=rounds, local_epochs=epochs,
                     fraction_evaluate=0.0, seed=args.seed, encoder=args.encoder,
                     clipping_norm=CLIPPING_NORM, dp_delta=DELTA)
    base = ensure_encoder(base, out, pretrain_epochs=3 if args.quick else 20)
    encoder = fed_task.encoder_at(base.encoder)
    print(f"encoder {base.encoder} ({encoder.fingerprint[:12]})", flush=True)
    parts = update_parts(base.with_(task=tasks[0]))
    print("first-round update norm by group: "
          + ", ".join(f"{k} {v:,.1f}" for k, v in parts.items()), flush=True)

    rows = []
    for t in tasks:
        for encoding in ("fp32", "1bit"):
            for z in noise:
                cfg = base.with_(task=t, encoding=encoding)
                cfg = cfg.with_(dp="server-fixed", noise_multiplier=z) if z > 0 else cfg
                rows.append(run(cfg, out, f"{t}-{encoding}-z{z:g}"))
        cfg = base.with_(task=t, dp="local", local_epsilon=LOCAL_EPSILON)
        rows.append(run(cfg, out, f"{t}-fp32-local"))

    raw = {"rows": rows, "update_parts": {"task": tasks[0], **parts},
           "noise": list(noise), "tasks": list(tasks), "config": base.to_dict(),
           "environment": {**environment(), "dp-accounting": version("dp-accounting")},
           "encoder_fingerprint": encoder.fingerprint,
           "seeds": {"run": args.seed, "dp_noise": "not seeded (numpy's global generator)"},
           "command": " ".join(["bench/privacy.py", *(sys.argv[1:] if argv is None
                                                         else argv)]),
           "seconds": time.perf_counter() - t_start}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(raw, indent=1) + "\n")
    write_section("privacy", markdown(raw), args.benchmarks)
    _write_targets(raw, args.json)
    print(f"wrote the privacy section of {args.benchmarks} and {out / 'bench.json'}")
    return 0


def expected_rows(raw: dict[str, Any]) -> int:
    return len(raw["tasks"]) * (2 * len(raw["noise"]) + 1)


def targets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """No numeric DP target was set: the table itself is the deliverable, every row there
    and every DP row with a finite epsilon."""
    rows = raw["rows"]
    complete = [r for r in rows if r["final_acc"] is not None
                and (r["dp"] == "none" or (r["epsilon"] is not None
                                           and math.isfinite(r["epsilon"])))]
    want = expected_rows(raw)
    return [target("dp table rows", len(complete),
                   f"{want} (tasks x encodings x noise multipliers, and local DP), each "
                   "with its accuracy and, under DP, a finite epsilon",
                   len(complete) == want)]


def _write_targets(raw: dict[str, Any], path: str | None) -> None:
    if path:
        write_json(path, targets(raw), command=raw["command"], config=raw["config"],
                   environment=raw["environment"], seeds=raw["seeds"])


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _eps(x: float | None) -> str:
    if x is None:
        return "∞ (no DP)"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def markdown(raw: dict[str, Any]) -> str:
    cfg, env, tasks = raw["config"], raw["environment"], raw["tasks"]
    by = {(r["task"], r["encoding"], r["dp"], r["noise_multiplier"]): r for r in raw["rows"]}
    lines = [
        "## Differential privacy (FedHyBNN, central DP with server-side fixed clipping)",
        "",
        f"Command: `python {raw['command']}` ({raw['seconds'] / 60:.0f} min). Machine: "
        f"{env['machine']}; flwr {env['flwr']}, dp-accounting {env['dp-accounting']}. Data "
        f"mnist-5k, {cfg['clients']} clients (IID), {cfg['rounds']} rounds x "
        f"{cfg['local_epochs']} local epochs, FedAvg (equal weights under DP), every client "
        f"every round, LocalGrid engine. Encoder {raw['encoder_fingerprint'][:12]} "
        f"({'given with --encoder' if '--encoder' in raw['command'] else 'pretrained here'}"
        f"), seed "
        f"{cfg['seed']} for partitions, initial head and training; the DP noise is not "
        "seeded. Clipping norm "
        f"{cfg['clipping_norm']:g} on the decoded update (for 1bit: scale · sign); epsilon "
        f"at delta {cfg['dp_delta']:g} from Flower's RDP accountant (client-level, "
        "add-or-remove-one, no sampling amplification): it depends only on the noise "
        "multiplier and the rounds.",
        "",
        "Final test accuracy (%) of the global head:",
        "",
        "| encoding | DP | noise z | epsilon | " + " | ".join(tasks) + " | mean |",
        "|---|---|---:|---:|" + "---:|" * (len(tasks) + 1),
    ]

    def line(encoding: str, dp: str, z: float, label: str, zcell: str) -> None:
        cells = [by.get((t, encoding, dp, z)) for t in tasks]
        accs = [c["final_acc"] for c in cells if c and c["final_acc"] is not None]
        eps = next((c["epsilon"] for c in cells if c), None)
        lines.append(f"| {encoding} | {label} | {zcell} | {_eps(eps)} | "
                     + " | ".join(_pct(c["final_acc"]) if c else "–" for c in cells)
                     + f" | {_pct(statistics.mean(accs)) if accs else '–'} |")

    for encoding in ("fp32", "1bit"):
        for z in raw["noise"]:
            if z == 0:
                line(encoding, "none", 0.0, "none", "–")
            else:
                line(encoding, "server-fixed", z, "server-fixed", f"{z:g}")
    local = next((r for r in raw["rows"] if r["dp"] == "local"), None)
    if local:
        line("fp32", "local", 0.0, f"local, ε {local['local_epsilon']:g} per round", "–")
    parts = raw["update_parts"]
    whole = parts["whole update"]
    medians = {e: statistics.median(r["update_norm_median"] for r in raw["rows"]
                                    if r["dp"] == "none" and r["encoding"] == e)
               for e in ("fp32", "1bit")}
    z_min = min(z for z in raw["noise"] if z > 0)
    share = (parts["running variances"] / whole) ** 2
    lines += [
        "",
        f"What an update is made of (partition 0's first-round update on {parts['task']}, "
        "L2 norm by tensor group): " + ", ".join(
            f"{k} {parts[k]:,.1f}" for k in ("binary weights", "batch-norm affine",
                                              "running means", "running variances"))
        + f"; whole {whole:,.1f}. Median update norm without DP over all rounds and "
        "clients: " + ", ".join(f"{e} {m:,.0f}" for e, m in medians.items()) + ".",
        "",
        f"The batch-norm running variances are {share:.2%} of the squared norm of an update, "
        "so the clipping norm has to cover them; the noise, stddev z · C / clients on "
        f"every value, is then {z_min * cfg['clipping_norm'] / cfg['clients']:g} per value "
        f"at z = {z_min:g}, against latent weights in [-1, 1]. The local-DP row clips each "
        "update to C and adds noise of stddev 2C · sqrt(2 ln(1.25/δ)) / ε per client and "
        "value; its epsilon is the RDP composition of one such release per round.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
