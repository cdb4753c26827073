"""Secure aggregation benchmark; writes the `secagg` section of BENCHMARKS.md.

On one pair task of mnist-5k, 3 clients, IID, FedAvg: plain fp32 and 1bit against SecAgg+
fp32 and 1bit (``--secagg``): bytes up and down per client per round, measured from the
serialized messages (all four SecAgg+ exchanges of a round counted), and the final test
accuracy of the global head. Every run uses the same seed, partitions and initial head.

By default the runs go through :class:`~hybnn.federated.local_grid.LocalGrid` (the same
apps and Flower's serialization, sequential, no Ray: the bytes are the same as in the
simulation runtime); ``--engine ray`` uses Flower's simulation runtime. Usage:

    python -m bench.secagg [--encoder DIR] [--task 8v9] [--out runs/bench-secagg] [--quick]
                           [--engine local|ray] [--json FILE] [--benchmarks BENCHMARKS.md]
                           [--render]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import time
from typing import Any

import torch

from bench.common import target, write_json, write_section
from hybnn.federated.config import FedConfig
from hybnn.federated.report import environment
from hybnn.federated.simulation import ensure_encoder, federate

TARGET_ACC_GAP = 0.01  # SecAgg+ within 1 point of the same encoding in the clear
TARGET_UP_OVERHEAD = 2.1  # masked int64 values: about twice fp32's bytes up
TARGET_DOWN_SAVING = 8.0  # 1bit still shrinks the downlink under SecAgg+

RUNS = (("fp32", False), ("1bit", False), ("fp32", True), ("1bit", True))


def name_of(encoding: str, secagg: bool) -> str:
    return f"{'secagg' if secagg else 'plain'} {encoding}"


def secagg_rows(base: FedConfig, out: Path, engine: str = "local") -> list[dict[str, Any]]:
    """One row per run of :data:`RUNS` on ``base`` (its encoder set): accuracy and bytes."""
    rows = []
    for encoding, secagg in RUNS:
        cfg = base.with_(encoding=encoding).with_group("secagg", enabled=secagg)
        name = name_of(encoding, secagg)
        t0 = time.perf_counter()
        res = federate(cfg, out / name.replace(" ", "-"), centralized=False, engine=engine)
        rows.append({
            "name": name, "encoding": encoding, "secagg": secagg, "task": cfg.task,
            "final_acc": res["final_acc"], "best_acc": res["best_acc"],
            "acc_curve": [r["global_acc"] for r in res["rounds"]],
            "up_per_client_round": res["bytes_up_per_client_round"],
            "down_per_client_round": res["bytes_down_per_client_round"],
            "payload_bytes": res["model_payload_bytes"],
            "secagg_settings": res.get("secagg"),
            "wall_seconds": time.perf_counter() - t0,
        })
        r = rows[-1]
        print(f"  {name}: acc {r['final_acc']:.4f}, up {r['up_per_client_round']:,.0f} B, "
              f"down {r['down_per_client_round']:,.0f} B, {r['wall_seconds']:.0f} s",
              flush=True)
    return rows


def _by(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in raw["rows"]}


def targets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    by = _by(raw)
    found = []
    for enc in ("fp32", "1bit"):
        gap = by[name_of(enc, False)]["final_acc"] - by[name_of(enc, True)]["final_acc"]
        found.append(target(f"accuracy lost secagg {enc} vs plain {enc} (points)",
                            round(100 * gap, 2), f"<= {100 * TARGET_ACC_GAP:g}",
                            gap <= TARGET_ACC_GAP + 1e-9))
    over = by["secagg fp32"]["up_per_client_round"] / by["plain fp32"]["up_per_client_round"]
    found.append(target("bytes up secagg fp32 vs plain fp32 (ratio)", round(over, 3),
                        f"<= {TARGET_UP_OVERHEAD:g}x", over <= TARGET_UP_OVERHEAD))
    saving = (by["secagg fp32"]["down_per_client_round"]
              / by["secagg 1bit"]["down_per_client_round"])
    found.append(target("bytes down secagg fp32 vs secagg 1bit (ratio)", round(saving, 2),
                        f">= {TARGET_DOWN_SAVING:g}x", saving >= TARGET_DOWN_SAVING))
    return found


def markdown(raw: dict[str, Any]) -> str:
    cfg, env, by = raw["config"], raw["environment"], _by(raw)
    plain32 = by["plain fp32"]
    s = by["secagg fp32"]["secagg_settings"]
    lines = [
        "## Secure aggregation (SecAgg+)",
        "",
        f"Command: `python {raw['command']}` ({raw['seconds'] / 60:.0f} min). Machine: "
        f"{env['machine']}; flwr {env['flwr']}. mnist-5k {cfg['task']}, {cfg['clients']} "
        f"clients, IID, {cfg['rounds']} rounds x {cfg['local_epochs']} local epochs, FedAvg, "
        f"seed {cfg['seed']}, encoder {raw['encoder_fingerprint'][:12]}; engine "
        f"{raw['engine']}. SecAgg+: {s['shares']} shares, threshold {s['threshold']}, clip "
        f"{s['clip']:g}, 2^22 quantization levels, modulus 2^32, max weight "
        f"{s['max_weight']} (the largest partition).",
        "",
        "Bytes per client per round from the serialized messages (SecAgg+: the sum of its "
        "four exchanges, setup, key sharing, masked vector and unmasking).",
        "",
        "| run | final acc % | up B | down B | up vs plain fp32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for enc, sec in RUNS:
        r = by[name_of(enc, sec)]
        lines.append(f"| {r['name']} | {100 * r['final_acc']:.1f} | "
                     f"{r['up_per_client_round']:,.0f} | {r['down_per_client_round']:,.0f} | "
                     f"{r['up_per_client_round'] / plain32['up_per_client_round']:.2f}x |")
    lines += ["", *(f"- {t['name']}: {t['value']} — target {t['goal']}: "
                    f"{'met' if t['met'] else '**missed**'}" for t in targets(raw))]
    lines += [
        "",
        "Accuracy differences are a test image or two (0.5 point each, 200 test images): "
        "the quantizer's stochastic rounding moves each latent weight by ~1e-6, which flips "
        "the odd sign near 0, and the runs drift apart over the rounds (in Flower's "
        "simulation runtime plain runs vary from one run to the next as well).",
        "",
        "The masked vector is int64 (8 B per value, twice fp32) whatever the encoding: "
        "SecAgg+ costs 1bit its whole uplink saving. Under `--secagg`, `1bit` sends the "
        "global head down as signs and scales, and the update up as `scale · sign(w)` "
        "floats, whose masked sum is the plain 1bit majority vote. The server sees no "
        "update, so it validates none: only the clients' visible metadata and the unmasked "
        "aggregate (finite, in the model's domain).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="", help="encoder dir (default: pretrain one)")
    ap.add_argument("--task", default="8v9", help="one pair task of mnist-5k")
    ap.add_argument("--out", default="runs/bench-secagg")
    ap.add_argument("--engine", default="local", choices=("local", "ray"))
    ap.add_argument("--benchmarks", default="BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true", help="4 rounds x 2 epochs (smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="write the targets here as JSON")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the section (and --json) from --out/bench.json")
    args = ap.parse_args(argv)
    if args.render:
        raw = json.loads((Path(args.out) / "bench.json").read_text())
        _write(raw, args.benchmarks, args.json)
        return 0
    torch.set_num_threads(1)
    out = Path(args.out)
    t_start = time.perf_counter()
    rounds, epochs = (4, 2) if args.quick else (20, 5)
    base = FedConfig(data="mnist-5k", task=args.task, clients=3, rounds=rounds,
                     local_epochs=epochs, fraction_evaluate=0.0, seed=args.seed,
                     encoder=args.encoder, node_wait=120.0, round_timeout=300.0)
    base = ensure_encoder(base, out, pretrain_epochs=20)
    from hybnn.federated.task import encoder_at

    fingerprint = encoder_at(base.encoder).fingerprint
    print(f"encoder {base.encoder} ({fingerprint[:12]})", flush=True)
    rows = secagg_rows(base, out, args.engine)
    raw = {"rows": rows, "config": base.to_dict(), "environment": environment(),
           "engine": args.engine, "encoder_fingerprint": fingerprint,
           "command": " ".join(["-m bench.secagg", *(sys.argv[1:] if argv is None else argv)]),
           "seconds": time.perf_counter() - t_start}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(raw, indent=1) + "\n")
    _write(raw, args.benchmarks, args.json)
    print(f"wrote the secagg section of {args.benchmarks} and {out / 'bench.json'}")
    return 0


def _write(raw: dict[str, Any], benchmarks: str, json_path: str | None) -> None:
    write_section("secagg", markdown(raw), benchmarks)
    if json_path:
        write_json(json_path, targets(raw), command=raw["command"], config=raw["config"],
                   environment=raw["environment"])


if __name__ == "__main__":
    sys.exit(main())
