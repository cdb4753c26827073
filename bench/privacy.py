"""Privacy vs utility of FedHyBNN under differential privacy; writes the `privacy` section
of BENCHMARKS.md.

For each pair task of mnist-5k, both update encodings, 10 and 100 clients (IID, every client
every round): 10 rounds x 5 local epochs, FedAvg, central DP with server-side fixed clipping
(`--dp server-fixed`) at one clipping norm and noise multipliers from epsilon ~1 to ~100
(0: no DP): the final accuracy of the global head against the epsilon spent at delta 1e-5
(Flower's RDP accountant; client-level, no sampling amplification). Plus one local-DP row
per task and federation size (`--dp local`, fp32), and what an update's norm is made of
(one client's first-round update by tensor group, in raw and in transport coordinates:
DP clips in the latter, see hybnn.federated.transport_scale).

Every federation runs on the in-process LocalGrid (`federate(..., engine="local")`, which
runs `hybnn.federated.local_grid.run_local`). The DP noise is not seeded (see
hybnn.federated.privacy): reruns differ a little. Without --encoder the bench pretrains one
into --out/encoder and reuses it on later runs. Raw results go to --out/bench.json. Usage:

    python -m bench.privacy [--encoder DIR] [--out runs/bench-privacy] [--quick]
                            [--json FILE] [--render]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import math
import statistics
import time
from importlib.metadata import version
from typing import Any

import numpy as np
import torch

from bench.common import target, write_json, write_section
from hybnn.data import PAPER_TASKS
from hybnn.federated import task as fed_task
from hybnn.federated.config import FedConfig, PrivacyConfig
from hybnn.federated.encoding import Layout, model_state
from hybnn.federated.report import environment
from hybnn.federated.simulation import ensure_encoder, federate
from hybnn.federated.transport_scale import transport_bounds

# The default of --clipping-norm (see docs/federated.md for how it was chosen), a norm in
# transport coordinates.
CLIPPING_NORM = PrivacyConfig().clipping_norm
NOISE = (0.0, 0.3, 1.0, 3.0, 10.0)  # 0: no DP; 10 rounds: epsilon 104, 19, 5.0, 1.3
CLIENTS = (10, 100)
DELTA = 1e-5
LOCAL_EPSILON = 1.0  # per round, per client: the largest the classical mechanism covers
GROUPS = ("binary weights", "batch-norm affine", "running means", "running variances")


def update_parts(cfg: FedConfig) -> dict[str, dict[str, float]]:
    """L2 norm of partition 0's first-round update (the seeded initial head, trained
    locally), by tensor group (binary weights, batch-norm affine, running means and
    variances) and whole, in raw coordinates and in transport coordinates (``raw``,
    ``transport``)."""
    encoder = fed_task.encoder_at(cfg.encoder)
    model = fed_task.build_model(cfg, encoder)
    layout = Layout.of(model)
    bounds = transport_bounds(model, layout)
    before = model_state(model, layout)
    train, _ = fed_task.client_tensors(cfg, 0, encoder)
    fed_task.train_local(model, train, cfg, 1, 0)
    after = model_state(model, layout)
    squares = {"raw": dict.fromkeys(GROUPS, 0.0), "transport": dict.fromkeys(GROUPS, 0.0)}
    for k, binary in zip(layout.keys, layout.binary, strict=True):
        group = ("binary weights" if binary else "running means" if k.endswith("running_mean")
                 else "running variances" if k.endswith("running_var")
                 else "batch-norm affine")
        sq = float(np.sum((after[k].astype(np.float64) - before[k]) ** 2))
        squares["raw"][group] += sq
        squares["transport"][group] += sq / bounds[k] ** 2
    parts = {}
    for coords, groups in squares.items():
        parts[coords] = {g: math.sqrt(v) for g, v in groups.items()}
        parts[coords]["whole update"] = math.sqrt(sum(groups.values()))
    return parts


def run(cfg: FedConfig, out: Path, name: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = federate(cfg, out / name, centralized=False, engine="local")
    norms = [c["update_norm"] for r in res["rounds"] for c in r["clients"]
             if c["status"] == "ok"]
    row = {
        "name": name, "task": cfg.task, "encoding": cfg.encoding, "dp": cfg.dp.mode,
        "clients": cfg.clients,
        "noise_multiplier": cfg.dp.noise_multiplier if cfg.dp.mode == "server-fixed" else 0.0,
        "clipping_norm": cfg.dp.clipping_norm if cfg.dp.enabled else None,
        "local_epsilon": cfg.dp.local_epsilon if cfg.dp.mode == "local" else None,
        "final_acc": res["final_acc"], "best_acc": res["best_acc"],
        "epsilon": res["epsilon"], "delta": res["delta"],
        "update_norm_median": statistics.median(norms) if norms else None,
        "update_norm_first_round_median": statistics.median(
            c["update_norm"] for c in res["rounds"][0]["clients"] if c["status"] == "ok"),
        "aggregated_rounds": sum(r["aggregated"] for r in res["rounds"]),
        "wall_seconds": time.perf_counter() - t0,
    }
    eps = "–" if row["epsilon"] is None else f"{row['epsilon']:.4g}"
    print(f"  {name}: acc {row['final_acc']:.4f}, epsilon {eps}, "
          f"{row['wall_seconds']:.0f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="",
                    help="encoder dir (default: --out/encoder, pretrained there if missing)")
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
    rounds, epochs = (4, 2) if args.quick else (10, 5)
    noise = (0.0, 1.0, 10.0) if args.quick else NOISE
    base = FedConfig(data="mnist-5k", clients=CLIENTS[0], rounds=rounds, local_epochs=epochs,
                     fraction_evaluate=0.0, seed=args.seed, encoder=args.encoder,
                     dp=PrivacyConfig(clipping_norm=CLIPPING_NORM, delta=DELTA))
    if not args.encoder and (out / "encoder" / "weights.safetensors").is_file():
        base = base.with_(encoder=str((out / "encoder").resolve()))  # this bench's, cached
    base = ensure_encoder(base, out, pretrain_epochs=3 if args.quick else 20)
    encoder = fed_task.encoder_at(base.encoder)
    print(f"encoder {base.encoder} ({encoder.fingerprint[:12]})", flush=True)
    parts = update_parts(base.with_(task=tasks[0], clients=CLIENTS[0]))
    for coords, groups in parts.items():
        print(f"first-round update norm by group ({coords}): "
              + ", ".join(f"{k} {v:,.3g}" for k, v in groups.items()), flush=True)

    rows = []
    for t in tasks:
        for n in CLIENTS:
            for encoding in ("fp32", "1bit"):
                for z in noise:
                    cfg = base.with_(task=t, encoding=encoding, clients=n)
                    if z > 0:
                        cfg = cfg.with_group("dp", mode="server-fixed", noise_multiplier=z)
                    rows.append(run(cfg, out, f"{t}-n{n}-{encoding}-z{z:g}"))
            cfg = base.with_(task=t, clients=n).with_group("dp", mode="local",
                                                           local_epsilon=LOCAL_EPSILON)
            rows.append(run(cfg, out, f"{t}-n{n}-fp32-local"))

    raw = {"rows": rows, "update_parts": {"task": tasks[0], "clients": CLIENTS[0], **parts},
           "noise": list(noise), "tasks": list(tasks), "clients": list(CLIENTS),
           "config": base.to_dict(),
           "environment": {**environment(), "dp-accounting": version("dp-accounting")},
           "encoder_fingerprint": encoder.fingerprint,
           "seeds": {"run": args.seed, "dp_noise": "not seeded (numpy's global generator)"},
           "command": " ".join(["-m bench.privacy", *(sys.argv[1:] if argv is None
                                                         else argv)]),
           "seconds": time.perf_counter() - t_start}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(raw, indent=1) + "\n")
    write_section("privacy", markdown(raw), args.benchmarks)
    _write_targets(raw, args.json)
    print(f"wrote the privacy section of {args.benchmarks} and {out / 'bench.json'}")
    return 0


def expected_rows(raw: dict[str, Any]) -> int:
    return len(raw["tasks"]) * len(raw["clients"]) * (2 * len(raw["noise"]) + 1)


def targets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """No numeric DP target was set: the table itself is the deliverable, every row there
    and every DP row with a finite epsilon."""
    rows = raw["rows"]
    complete = [r for r in rows if r["final_acc"] is not None
                and (r["dp"] == "none" or (r["epsilon"] is not None
                                           and math.isfinite(r["epsilon"])))]
    want = expected_rows(raw)
    return [target("dp table rows", len(complete),
                   f"{want} (tasks x clients x encodings x noise multipliers, and local DP), "
                   "each with its accuracy and, under DP, a finite epsilon",
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
    by = {(r["clients"], r["task"], r["encoding"], r["dp"], r["noise_multiplier"]): r
          for r in raw["rows"]}
    clients = " and ".join(str(n) for n in raw["clients"])
    lines = [
        "## Differential privacy (FedHyBNN, central DP with server-side fixed clipping)",
        "",
        f"Command: `python {raw['command']}` ({raw['seconds'] / 60:.0f} min). Machine: "
        f"{env['machine']}; flwr {env['flwr']}, dp-accounting {env['dp-accounting']}. Data "
        f"mnist-5k, {clients} clients (IID), {cfg['rounds']} rounds x "
        f"{cfg['local_epochs']} local epochs, FedAvg (equal weights under DP), every client "
        f"every round, LocalGrid engine. Encoder {raw['encoder_fingerprint'][:12]} "
        f"({'given with --encoder' if '--encoder' in raw['command'] else 'pretrained here'}"
        f"), seed "
        f"{cfg['seed']} for partitions, initial head and training; the DP noise is not "
        "seeded. Clipping norm "
        f"{cfg['dp']['clipping_norm']:g} on the decoded update (for 1bit: scale · sign) in "
        "transport coordinates (batch-norm running means / K, running variances / K², K "
        "the fan-in of the layer before; latent weights as they are); epsilon "
        f"at delta {cfg['dp']['delta']:g} from Flower's RDP accountant (client-level, "
        "add-or-remove-one, no sampling amplification): it depends only on the noise "
        "multiplier and the rounds, not on the number of clients. The noise on the mean "
        "update has stddev z · C / clients per value: ten times less at 100 clients.",
        "",
        "Final test accuracy (%) of the global head:",
        "",
        "| clients | encoding | DP | noise z | epsilon | " + " | ".join(tasks) + " | mean |",
        "|---:|---|---|---:|---:|" + "---:|" * (len(tasks) + 1),
    ]

    def line(n: int, encoding: str, dp: str, z: float, label: str, zcell: str) -> None:
        cells = [by.get((n, t, encoding, dp, z)) for t in tasks]
        accs = [c["final_acc"] for c in cells if c and c["final_acc"] is not None]
        eps = next((c["epsilon"] for c in cells if c), None)
        lines.append(f"| {n} | {encoding} | {label} | {zcell} | {_eps(eps)} | "
                     + " | ".join(_pct(c["final_acc"]) if c else "–" for c in cells)
                     + f" | {_pct(statistics.mean(accs)) if accs else '–'} |")

    for n in raw["clients"]:
        for encoding in ("fp32", "1bit"):
            for z in raw["noise"]:
                if z == 0:
                    line(n, encoding, "none", 0.0, "none", "–")
                else:
                    line(n, encoding, "server-fixed", z, "server-fixed", f"{z:g}")
        local = next((r for r in raw["rows"] if r["dp"] == "local" and r["clients"] == n),
                     None)
        if local:
            line(n, "fp32", "local", 0.0, f"local, ε {local['local_epsilon']:g} per round",
                 "–")
    parts = raw["update_parts"]
    raw_parts, scaled_parts = parts["raw"], parts["transport"]

    def groups(p: dict[str, float]) -> str:
        return ", ".join(f"{k} {p[k]:,.3g}" for k in GROUPS) + f"; whole {p['whole update']:,.3g}"

    medians = {(n, e): statistics.median(r["update_norm_median"] for r in raw["rows"]
                                         if r["dp"] == "none" and r["encoding"] == e
                                         and r["clients"] == n)
               for n in raw["clients"] for e in ("fp32", "1bit")}
    share = (scaled_parts["binary weights"] / scaled_parts["whole update"]) ** 2
    lines += [
        "",
        f"What an update is made of (partition 0's first-round update on {parts['task']} "
        f"with {parts['clients']} clients, L2 norm by tensor group): raw "
        + groups(raw_parts) + "; in transport coordinates " + groups(scaled_parts)
        + f". In transport coordinates the binary weights are {share:.1%} of the squared "
        "norm (in raw ones the running variances were "
        f"{(raw_parts['running variances'] / raw_parts['whole update']) ** 2:.2%}).",
        "",
        "Median update norm in transport coordinates without DP, over all rounds and "
        "clients (median over the tasks): " + ", ".join(
            f"{n} clients {e} {m:.3g}" for (n, e), m in medians.items()) + ". The local-DP "
        "rows clip each update to C and add noise of stddev 2C · sqrt(2 ln(1.25/δ)) / ε per "
        "client and value; their epsilon is the RDP composition of one such release per "
        "round.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
