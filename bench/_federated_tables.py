"""The federated benchmark's tables and targets, from its raw results: a module of
``bench/federated.py``, not a script (the leading underscore). ``python -m bench.federated
--json FILE`` writes these targets; ``--render`` re-renders them from saved results."""

from __future__ import annotations

import os
import statistics
from typing import Any

from bench.common import target
from hybnn.federated.config import FedConfig

TARGET_ACC_GAP = 0.01  # within 1 point of centralized
TARGET_UP_RATIO = 30.0  # >= 30x fewer bytes up than fp32
TARGET_ENCODING_LOSS = 0.01  # ... at <= 1 point lost
TARGET_CNN_RATIO = 100.0  # >= 100x fewer bytes per round than FedAvg of the float CNN
SKEW_ORDER = ("dirichlet 0.5", "dirichlet 0.1", "one class per client")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ok(flag: bool) -> str:
    return "met" if flag else "**missed**"


def _within(gap: float, limit: float) -> bool:
    return gap <= limit + 1e-9  # accuracies are multiples of 1/200: no float noise


def _tasks(raw: dict[str, Any]) -> list[str]:
    return list(raw["centralized"])


def skew_gaps(raw: dict[str, Any], skew: str) -> dict[tuple[str, str], dict[str, float]]:
    """(strategy, encoding) -> task -> centralized minus final federated accuracy."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in raw["skew"]:
        if r["skew"] == skew and r["final_acc"] is not None:
            central = raw["centralized"][r["task"]]["acc"]
            out.setdefault((r["strategy"], r["encoding"]), {})[r["task"]] = \
                central - r["final_acc"]
    return out


def best_strategy(raw: dict[str, Any], skew: str, encoding: str) -> tuple[str, float] | None:
    """The strategy with the smallest worst-task gap (complete rows only)."""
    tasks = set(_tasks(raw))
    worst = {s: max(g.values()) for (s, e), g in skew_gaps(raw, skew).items()
             if e == encoding and set(g) == tasks}
    return min(worst.items(), key=lambda kv: kv[1]) if worst else None


def _encoding_runs(raw: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["task"], r["partition"], r["encoding"]): r for r in raw["encodings"]}


def encoding_stats(raw: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per encoding: mean bytes up/down per client per round, worst accuracy lost vs fp32."""
    runs = _encoding_runs(raw)
    stats = {}
    for enc in sorted({e for _, _, e in runs}, key=lambda e: (e != "fp32", e)):
        rows = [r for (_, _, e), r in runs.items() if e == enc]
        losses = [runs[(t, s, "fp32")]["final_acc"] - r["final_acc"]
                  for (t, s, e), r in runs.items() if e == enc and (t, s, "fp32") in runs]
        stats[enc] = {"up": statistics.mean(r["up_per_client_round"] for r in rows),
                      "down": statistics.mean(r["down_per_client_round"] for r in rows),
                      "worst_loss": max(losses), "mean_loss": statistics.mean(losses),
                      "runs": len(rows)}
    return stats


def _cnn_ratios(raw: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    runs = _encoding_runs(raw)
    out = []
    for r in raw["cnn"]:
        h = runs.get((r["task"], "iid", "1bit"))
        out.append((r, r["bytes_per_round"] / h["bytes_per_round"] if h else float("nan")))
    return out


def targets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets against what was measured (the same numbers as the section)."""
    found = []
    if raw.get("only") == "scale":
        return _scale_targets(raw)
    if raw.get("only") == "default":
        return _default_targets(raw)
    if raw.get("only") == "skew":
        return _skew10_targets(raw)
    for (strategy, enc), g in sorted(skew_gaps(raw, "dirichlet 0.5").items()):
        worst = max(g.values())
        found.append(target(f"dirichlet 0.5 {strategy} {enc} worst gap vs centralized (points)",
                            round(100 * worst, 2), f"<= {100 * TARGET_ACC_GAP:g}",
                            _within(worst, TARGET_ACC_GAP) and len(g) == len(_tasks(raw))))
    for enc in ("fp32", "1bit"):
        if (best := best_strategy(raw, "dirichlet 0.5", enc)) is not None:
            found.append(target(f"dirichlet 0.5 best strategy {enc} worst gap (points; "
                                f"{best[0]})", round(100 * best[1], 2),
                                f"<= {100 * TARGET_ACC_GAP:g}", _within(best[1], TARGET_ACC_GAP)))
    stats = encoding_stats(raw)
    for enc, st in stats.items():
        if enc == "fp32":
            continue
        ratio = stats["fp32"]["up"] / st["up"]
        found.append(target(f"bytes up {enc} vs fp32 (ratio)", round(ratio, 2),
                            f">= {TARGET_UP_RATIO:g}x", ratio >= TARGET_UP_RATIO))
        found.append(target(f"bytes accuracy lost {enc} vs fp32 (points, worst)",
                            round(100 * st["worst_loss"], 2),
                            f"<= {100 * TARGET_ENCODING_LOSS:g}",
                            _within(st["worst_loss"], TARGET_ENCODING_LOSS)))
    fp = [x for r, x in _cnn_ratios(raw) if r["model"] == "fpcnn"]
    if fp:
        found.append(target("bytes per round FedHyBNN 1bit vs FedAvg float CNN (ratio)",
                            round(min(fp), 1), f">= {TARGET_CNN_RATIO:g}x",
                            min(fp) >= TARGET_CNN_RATIO))
    return found + _scale_targets(raw)


def physical_memory_mib() -> int:
    """This machine's physical memory: the limit of the 1,000-client federation's peak RSS."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


def _scale_targets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    limit = raw["environment"].get("memory_mib") or physical_memory_mib()
    for r in raw["scale"]:
        if r.get("clients") != 1000:
            continue
        ok = r.get("error") is None
        found.append(target(f"scale 1000 {r['engine']} seconds per round (median)",
                            round(r["round_seconds_median"], 3) if ok else None,
                            "completes", ok))
        mem = r.get("peak_rss_mib")
        found.append(target(f"scale 1000 {r['engine']} peak memory (MiB, main process)",
                            round(mem) if ok and mem else None, f"< {limit}",
                            ok and mem is not None and mem < limit))
    return found


def _header(raw: dict[str, Any]) -> list[str]:
    cfg, env = raw["config"], raw["environment"]
    return [
        "## Federated (FedHyBNN on Flower)", "",
        f"Command: `python {raw['command']}` ({raw['seconds'] / 60:.0f} min of new runs; "
        f"cached rows reused). Machine: {env['machine']}; flwr {env['flwr']}, ray "
        f"{env['ray']}; torch 1 thread. Data mnist-5k (4,000 train / 1,000 test, 200 test "
        f"images per pair task: one image = 0.5 point). Encoder "
        f"{raw['encoder_fingerprint'][:12]} (VAE, 20 epochs on the training split, seed "
        f"{cfg['seed']}). Seed {cfg['seed']} for partitions, initial head, sampling and "
        "training. Runs on the local grid (Flower's ServerApp, strategies, ClientApp and "
        "mods in one process; the scale section also on Flower's Ray simulation engine).",
    ]


def _skew_section(raw: dict[str, Any]) -> list[str]:
    cfg, tasks = raw["config"], _tasks(raw)
    central = raw["centralized"]
    lines = ["", f"### Skewed clients: every strategy ({cfg['clients']} clients, "
             f"{cfg['rounds']} rounds x {cfg['local_epochs']} local epochs) vs centralized "
             f"HyBNN ({cfg['rounds'] * cfg['local_epochs']} epochs)", "",
             "Final test accuracy (%) of the global head after the last round; worst gap = "
             "largest (centralized - federated) over the pair tasks, points. Centralized: "
             + ", ".join(f"{t} {_pct(central[t]['acc'])}" for t in tasks) + "."]
    for skew in SKEW_ORDER:
        gaps = skew_gaps(raw, skew)
        if not gaps:
            continue
        accs = {(r["strategy"], r["encoding"], r["task"]): r["final_acc"]
                for r in raw["skew"] if r["skew"] == skew}
        lines += ["", f"**{skew}**", "", "| strategy | encoding | " + " | ".join(tasks)
                  + " | worst gap |", "|---|---|" + "---:|" * (len(tasks) + 1)]
        for enc in ("fp32", "1bit"):
            for strategy in raw["strategies"]:
                g = gaps.get((strategy, enc))
                if not g:
                    continue
                cells = [_pct(accs.get((strategy, enc, t))) for t in tasks]
                lines.append(f"| {strategy} | {enc} | " + " | ".join(cells)
                             + f" | {100 * max(g.values()):+.1f} |")
        for enc in ("fp32", "1bit"):
            if (best := best_strategy(raw, skew, enc)) is not None:
                lines.append("")
                lines.append(f"- {skew}, {enc}: best `{best[0]}`, worst gap "
                             f"{100 * best[1]:+.1f} points"
                             + (f" — target within 1 point: {_ok(_within(best[1], 0.01))}"
                                if skew == "dirichlet 0.5" else ""))
    return lines


def _encoding_section(raw: dict[str, Any]) -> list[str]:
    stats = encoding_stats(raw)
    head = raw["head"]
    runs = _encoding_runs(raw)
    tasks = _tasks(raw)
    lines = ["", "### Update encodings (FedAvg, IID and Dirichlet 0.5)", "",
             "Bytes per client per round, measured from the serialized messages (Flower's "
             "object tree: records, array headers and chunks, metrics included). The head has "
             f"{head['binary']:,} binary weights and {head['float']} float values (batch-norm "
             "affine and running statistics).", "",
             "| encoding | up B | down B | up: x fewer than fp32 | accuracy lost vs fp32: "
             "mean / worst (points) |", "|---|---:|---:|---:|---|"]
    for enc, st in stats.items():
        ratio = stats["fp32"]["up"] / st["up"]
        lines.append(f"| {enc} | {st['up']:,.0f} | {st['down']:,.0f} | {ratio:.1f} | "
                     f"{100 * st['mean_loss']:+.1f} / {100 * st['worst_loss']:+.1f} |")
    lines += ["", "| task | partition | " + " | ".join(stats) + " |",
              "|---|---|" + "---:|" * len(stats)]
    for t in tasks:
        for skew in ("iid", "dirichlet"):
            lines.append(f"| {t} | {skew} | " + " | ".join(
                _pct(runs[(t, skew, e)]["final_acc"]) if (t, skew, e) in runs else "–"
                for e in stats) + " |")
    for enc, st in stats.items():
        if enc != "fp32":
            ratio = stats["fp32"]["up"] / st["up"]
            lines.append("")
            lines.append(f"- {enc}: {ratio:.1f}x fewer bytes up — target >= "
                         f"{TARGET_UP_RATIO:.0f}x: {_ok(ratio >= TARGET_UP_RATIO)}; worst "
                         f"accuracy lost {100 * st['worst_loss']:+.1f} points — target <= 1: "
                         f"{_ok(_within(st['worst_loss'], TARGET_ENCODING_LOSS))}.")
    return lines


def _cnn_section(raw: dict[str, Any]) -> list[str]:
    if not raw["cnn"]:
        return []
    r0 = raw["cnn"][0]
    lines = ["", f"### vs FedAvg of whole CNNs (IID; {r0['rounds']} rounds x "
             f"{r0['local_epochs']} local epochs, fp32)", "",
             "| task | model | final acc % | bytes per round (up+down, 3 clients) | "
             "FedHyBNN 1bit: x fewer |", "|---|---|---:|---:|---:|"]
    worst = float("inf")
    for r, x in _cnn_ratios(raw):
        if r["model"] == "fpcnn":
            worst = min(worst, x)
        lines.append(f"| {r['task']} | {r['model']} | {_pct(r['final_acc'])} | "
                     f"{r['bytes_per_round']:,.0f} | {x:,.0f} |")
    lines += ["", f"- FedHyBNN 1bit vs FedAvg of the float CNN: >= {worst:,.0f}x fewer bytes "
              f"per round — target >= {TARGET_CNN_RATIO:.0f}x: {_ok(worst >= TARGET_CNN_RATIO)}."
              " The frozen encoder is shipped to each client once, not per round."]
    return lines


def _hostile_section(raw: dict[str, Any]) -> list[str]:
    rows = raw["hostile"]
    if not rows:
        return []
    r0 = rows[0]
    cols = sorted({(r["attackers"], r["attack"]) for r in rows})
    by = {(r["strategy"], r["attackers"], r["attack"]): r for r in rows}
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    lines = ["", f"### Hostile clients (task {r0['task']}, {r0['clients']} clients, IID, fp32, "
             f"{r0['rounds']} rounds x {r0['local_epochs']} local epochs)", "",
             "k of the clients send, every round: `sign-flip` (every binary weight's sign "
             "flipped at latent magnitude 1), `random` (uniform latent weights) or `scaled` "
             "(update x 10). Krum, MultiKrum and Bulyan are told f = k; Bulyan needs 4f + 3 "
             "updates. Final accuracy %, (rejected updates by the validating wrapper).", "",
             "| strategy | " + " | ".join(f"k={k} {a}" for k, a in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for s in strategies:
        cells = []
        for k, a in cols:
            r = by.get((s, k, a))
            cells.append("n/a" if r is None else _pct(r["final_acc"])
                         + (f" ({r['rejected_updates']})" if r["rejected_updates"] else ""))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def _scale_section(raw: dict[str, Any]) -> list[str]:
    rows = raw["scale"]
    if not rows:
        return []
    lines = ["", "### Scale (task `all`, IID, 1bit, 10 % of the clients per round, 2 local "
             "epochs, 8 rounds)", "",
             "| engine | clients | sampled per round | s per round (median) | peak RSS MiB | "
             "final acc % | wall s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['engine']} | {r['clients']} | – | failed: "
                         f"{r['error'].splitlines()[-1][:80]} | – | – | – |")
            continue
        lines.append(f"| {r['engine']} | {r['clients']} | {r['sampled_per_round']:.0f} | "
                     f"{r['round_seconds_median']:.2f} | {r['peak_rss_mib']:,.0f} | "
                     f"{_pct(r['final_acc'])} | {r['wall_seconds']:.0f} |")
    lines += ["", "Each N runs in a fresh process; peak RSS is that process's VmHWM (for Ray, "
              "the driver only: its workers are separate processes). Seconds per round: server "
              "evaluation included, median over the rounds; wall time includes start-up and "
              "the handshake with every client. Accuracy is not a target here (10 classes, "
              "few rounds, 4 training images per client at 1,000 clients)."]
    return lines


def markdown(raw: dict[str, Any]) -> str:
    """The `federated` section: everything but the scale table (its own section)."""
    return "\n".join(_header(raw) + _skew_section(raw) + _encoding_section(raw)
                     + _cnn_section(raw) + _hostile_section(raw))


def scale_markdown(raw: dict[str, Any]) -> str:
    """The `federated-scale` section (``python -m bench.federated --only scale`` writes it
    alone)."""
    env = raw["environment"]
    return "\n".join(["## Federated at scale (FedHyBNN on Flower)", "",
                      f"Command: `python {raw['command']}`. Machine: {env['machine']}; flwr "
                      f"{env['flwr']}, ray {env['ray']}; torch 1 thread. Encoder "
                      f"{raw['encoder_fingerprint'][:12]}, seed {raw['config']['seed']}.",
                      *_scale_section(raw)[1:]])



def default_stats(raw: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(partition, encoding, strategy) -> per seed: mean accuracy over the tasks and the worst
    task's gap to centralized (same task and seed); complete seeds only."""
    d = raw["default"]
    cells: dict[tuple[str, str, str], dict[int, dict[str, float]]] = {}
    for r in d["rows"]:
        if r["final_acc"] is None:
            continue
        key = (r["skew"], r["encoding"], r["strategy"])
        cells.setdefault(key, {}).setdefault(r["seed"], {})[r["task"]] = r["final_acc"]
    out = {}
    for key, per_seed in cells.items():
        full = {s: accs for s, accs in per_seed.items() if set(accs) == set(d["tasks"])}
        if not full:
            continue
        worst = [max(d["central"][f"{t} {s}"] - a for t, a in accs.items())
                 for s, accs in sorted(full.items())]
        mean = [statistics.mean(accs.values()) for _, accs in sorted(full.items())]
        out[key] = {"worst": worst, "mean": mean, "seeds": sorted(full)}
    return out


def default_pick(stats: dict[tuple[str, str, str], dict[str, Any]], encoding: str,
                 partitions: list[str]) -> tuple[str, float] | None:
    """The candidate with the smallest worst-task gap, averaged over seeds and partitions
    (candidates measured on every partition only)."""
    score: dict[str, list[float]] = {}
    for (part, enc, strategy), st in stats.items():
        if enc == encoding and part in partitions:
            score.setdefault(strategy, []).append(statistics.mean(st["worst"]))
    full = {k: statistics.mean(v) for k, v in score.items() if len(v) == len(partitions)}
    return min(full.items(), key=lambda kv: kv[1]) if full else None


def _mean_std(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * statistics.mean(xs):+.1f} ± {100 * sd:.1f}"


def current_auto(encoding: str) -> str:
    """What ``--strategy auto`` runs now for the HyBNN head with ``encoding`` (a table
    records what it ran when measured, which may have changed since)."""
    return FedConfig(encoding=encoding).resolved_strategy


def _default_targets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    stats, found = default_stats(raw), []
    for enc in raw["default"]["auto"]:
        auto = current_auto(enc)
        st = stats.get(("dirichlet 0.5", enc, auto))
        worst = statistics.mean(st["worst"]) if st else None
        found.append(target(f"dirichlet 0.5 default ({auto}) {enc} worst gap vs centralized "
                            f"(points, mean of {len(st['seeds']) if st else 0} seeds)",
                            None if worst is None else round(100 * worst, 2),
                            f"<= {100 * TARGET_ACC_GAP:g}",
                            worst is not None and _within(worst, TARGET_ACC_GAP)))
        pick = default_pick(stats, enc, raw["default"]["partitions"])
        found.append(target(f"default strategy {enc}: the table's pick", pick and pick[0],
                            f"{auto} (--strategy auto)", pick is not None and pick[0] == auto))
    return found


def default_markdown(raw: dict[str, Any]) -> str:
    """The `federated-default` section (``python -m bench.federated --only default``)."""
    d, env, cfg = raw["default"], raw["environment"], raw["config"]
    stats = default_stats(raw)
    lines = ["## Federated: the default strategy (FedHyBNN on Flower)", "",
             f"Command: `python {raw['command']}` ({raw['seconds'] / 60:.0f} min of new runs; "
             "cached rows reused). "
             f"Machine: {env['machine']}; flwr {env['flwr']}; torch 1 thread. Data mnist-5k, "
             f"tasks {', '.join(d['tasks'])}, {cfg['clients']} clients, {cfg['rounds']} rounds x "
             f"{cfg['local_epochs']} local epochs, centralized HyBNN for the same epochs on the "
             f"same seed. Encoder {raw['encoder_fingerprint'][:12]}. Seeds "
             f"{', '.join(map(str, d['seeds']))} (partitions, initial head, sampling, training).",
             "", "Worst gap: per seed, the largest (centralized - federated) over the pair "
             "tasks, in points, then mean ± std over the seeds; mean accuracy over tasks and "
             "seeds.", ""]
    parts = d["partitions"]
    for enc, measured in d["auto"].items():
        auto = current_auto(enc)
        lines += [f"**{enc}**", "", "| strategy | " + " | ".join(
            f"{p}: worst gap | {p}: mean %" for p in parts) + " |",
            "|---|" + "---:|---:|" * len(parts)]
        for strategy in d["candidates"]:
            cells = []
            for part in parts:
                st = stats.get((part, enc, strategy))
                cells += ([_mean_std(st["worst"]), f"{100 * statistics.mean(st['mean']):.1f}"]
                          if st else ["–", "–"])
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
        pick = default_pick(stats, enc, parts)
        lines += ["", f"- {enc}: smallest worst gap averaged over the {len(parts)} partitions: "
                  + (f"`{pick[0]}` ({100 * pick[1]:+.1f} points); `--strategy auto` runs "
                     f"`{auto}`" + (f" (`{measured}` when this table was measured)"
                                    if measured != auto else "") + ": "
                     + ("the table's pick." if pick[0] == auto else
                        "**not the table's pick.**")
                     if pick else "incomplete."), ""]
    lines += ["`--strategy auto` (the default) runs, for the HyBNN head, "
              + ", ".join(f"`{current_auto(e)}` with {e}" for e in d["auto"])
              + " (`xor` as `1bit`), and FedAvg under `--secagg` or `--dp` (both need a mean "
              "of the updates) and for `--model bcnn|fpcnn` (a server step of 0.1 is sized "
              "for latent weights in [-1, 1], not for a float CNN's)."]
    return "\n".join(lines)


# -- label skew, ten classes (``--only skew``) ------------------------------------------------
NIID_BENCH_RATIO = 81.3 / 99  # NIID-Bench's FedProx with one label per client, vs centralized
SKEW_TABLE_ORDER = ("dirichlet 0.5", "dirichlet 0.1", "1 class per client",
                    "2 classes per client")
FEW_CLASSES = ("1 class per client", "2 classes per client")
MAX_BYTES_RATIO = 2.0  # a default may cost at most this many times the bytes it replaces


def skew10_stats(raw: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, list[float]]]:
    """(partition, encoding, method) -> per seed (sorted): accuracy and gap to the
    centralized head of the same seed (points as fractions)."""
    d = raw["skew10"]
    cells: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in d["rows"]:
        if r["final_acc"] is not None:
            key = (r["skew"], r["encoding"], r["method"])
            cells.setdefault(key, {})[r["seed"]] = r["final_acc"]
    return {key: {"seeds": sorted(per), "acc": [per[s] for s in sorted(per)],
                  "gap": [d["central"][str(s)] - per[s] for s in sorted(per)]}
            for key, per in cells.items()}


def skew10_best(stats: dict[tuple[str, str, str], dict[str, list[float]]], partition: str,
                encoding: str) -> tuple[str, float] | None:
    """The method with the smallest mean gap on ``partition`` (mean over its seeds)."""
    gaps = {m: statistics.mean(st["gap"]) for (p, e, m), st in stats.items()
            if p == partition and e == encoding}
    return min(gaps.items(), key=lambda kv: kv[1]) if gaps else None


def _ratio(stats: dict[tuple[str, str, str], dict[str, list[float]]], central: list[float],
           key: tuple[str, str, str]) -> float:
    st = stats[key]
    return statistics.mean(a / c for a, c in zip(st["acc"], central, strict=True))


def _skew10_targets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    d, stats, found = raw["skew10"], skew10_stats(raw), []
    central = [d["central"][str(s)] for s in d["seeds"]]
    for enc in d["encodings"]:
        now = current_auto(enc)
        method = "default" if d["auto"][enc] == now else now
        st = stats.get(("dirichlet 0.5", enc, method))
        gap = statistics.mean(st["gap"]) if st else None
        found.append(target(f"ten classes, dirichlet 0.5, default ({now}) {enc}: "
                            f"gap to centralized (points, mean of "
                            f"{len(st['seeds']) if st else 0} seeds)",
                            None if gap is None else round(100 * gap, 2),
                            f"<= {100 * TARGET_ACC_GAP:g}",
                            gap is not None and _within(gap, TARGET_ACC_GAP)))
        for part in FEW_CLASSES:
            best = skew10_best(stats, part, enc)
            ratio = _ratio(stats, central, (part, enc, best[0])) if best else None
            found.append(target(f"ten classes, {part}, best method {enc} "
                                f"({best[0] if best else '-'}): accuracy / centralized",
                                None if ratio is None else round(ratio, 4),
                                f">= {NIID_BENCH_RATIO:.4f} (81.3/99)",
                                ratio is not None and ratio >= NIID_BENCH_RATIO))
    return found


def skew10_markdown(raw: dict[str, Any]) -> str:
    """The `federated-skew` section (``python -m bench.federated --only skew``)."""
    d, env, cfg = raw["skew10"], raw["environment"], d_cfg(raw)
    stats = skew10_stats(raw)
    central = [d["central"][str(s)] for s in d["seeds"]]
    load = raw.get("load", {})
    lines = [
        "## Federated: label skew on ten classes (FedHyBNN on Flower)", "",
        f"Command: `python {raw['command']}` ({raw['seconds'] / 60:.0f} min of new runs; "
        f"cached rows reused). Machine: {env['machine']}; flwr {env['flwr']}; torch 1 thread; "
        f"load average {load.get('start', '–')} at the start, {load.get('end', '–')} at the "
        "end (2 cores shared with other work). "
        f"Data {cfg['data']}, task `{cfg['task']}` (ten classes; the server's test set has "
        f"{d['test_size']:,} images: one image = {100 / d['test_size']:.2g} point), "
        f"{cfg['clients']} clients, all sampled every round, {cfg['rounds']} rounds x "
        f"{cfg['local_epochs']} local epochs (sized to fit about 35 minutes here), "
        f"centralized HyBNN for the same {cfg['rounds'] * cfg['local_epochs']} epochs on the "
        f"same seed. Encoder `{d['encoder']}` ({raw['encoder_fingerprint'][:12]}). Seeds "
        f"{', '.join(map(str, d['seeds']))} (partitions, initial head, training); "
        "centralized: " + ", ".join(f"{100 * c:.1f}" for c in central) + " %.", "",
        "Methods: `default` is what `--strategy auto` ran when this table was measured ("
        + ", ".join(f"`{a}` with {e}" for e, a in d["auto"].items())
        + "; it runs "
        + ", ".join(f"`{current_auto(e)}` with {e}" for e in d["auto"])
        + " now, the table's own rows of that name); `fedavg`, `fedprox` (mu = 0.1) and "
        "`scaffold` replace the server rule; `fedrs` "
        "(alpha = 0.5) and `fedlc` (tau = 1) are `--skew-loss` on the clients with the "
        "default server rule. Cells: final accuracy %, mean ± std over the seeds, and the "
        "gap to centralized in points (mean). Partitions: Dirichlet(alpha) class shares, or "
        "k classes per client (each class held by k of the 10 clients).", ""]
    methods = d["methods"]
    for enc in d["encodings"]:
        lines += [f"**{enc}**", "", "| method | " + " | ".join(SKEW_TABLE_ORDER) + " |",
                  "|---|" + "---:|" * len(SKEW_TABLE_ORDER)]
        for m in methods:
            cells = []
            for part in SKEW_TABLE_ORDER:
                st = stats.get((part, enc, m))
                if not st:
                    cells.append("–")
                    continue
                sd = statistics.stdev(st["acc"]) if len(st["acc"]) > 1 else 0.0
                cells.append(f"{100 * statistics.mean(st['acc']):.1f} ± {100 * sd:.1f} "
                             f"({100 * statistics.mean(st['gap']):+.1f})")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        for part in SKEW_TABLE_ORDER:
            best = skew10_best(stats, part, enc)
            if best:
                ratio = _ratio(stats, central, (part, enc, best[0]))
                lines.append(f"- {enc}, {part}: best `{best[0]}`, gap {100 * best[1]:+.1f} "
                             f"points, {ratio:.3f} of centralized"
                             + (f" (target >= {NIID_BENCH_RATIO:.3f}: "
                                f"{_ok(ratio >= NIID_BENCH_RATIO)})"
                                if part in FEW_CLASSES else ""))
        st = stats.get(("dirichlet 0.5", enc, "default"))
        if st:
            gap = statistics.mean(st["gap"])
            lines.append(f"- {enc}, dirichlet 0.5, default: gap {100 * gap:+.1f} points — "
                         f"target <= 1: {_ok(_within(gap, TARGET_ACC_GAP))}")
        lines.append("")
    lines += skew10_verdict(stats, d)
    return "\n".join(lines)


def skew10_bytes(d: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(encoding, method) -> mean bytes up + down per client and round."""
    out: dict[tuple[str, str], list[float]] = {}
    for r in d["rows"]:
        out.setdefault((r["encoding"], r["method"]), []).append(
            r["up_per_client_round"] + r["down_per_client_round"])
    return {k: statistics.mean(v) for k, v in out.items()}


def skew10_verdict(stats: dict[tuple[str, str, str], dict[str, list[float]]],
                   d: dict[str, Any]) -> list[str]:
    """Per encoding: the method with the smallest gap averaged over the partitions, whether
    it *clearly* beats the default (a smaller mean gap on every partition and by more than a
    point on average), and what it costs in bytes against the default."""
    lines, traffic, adopt = [], skew10_bytes(d), []
    for enc in d["encodings"]:
        mean_gap = {}
        for m in d["methods"]:
            gaps = [statistics.mean(stats[(p, enc, m)]["gap"]) for p in SKEW_TABLE_ORDER
                    if (p, enc, m) in stats]
            if len(gaps) == len(SKEW_TABLE_ORDER):
                mean_gap[m] = statistics.mean(gaps)
        if "default" not in mean_gap:
            continue
        best = min(mean_gap, key=mean_gap.__getitem__)
        everywhere = all(statistics.mean(stats[(p, enc, best)]["gap"])
                         < statistics.mean(stats[(p, enc, "default")]["gap"])
                         for p in SKEW_TABLE_ORDER)
        clear = best != "default" and everywhere and \
            mean_gap["default"] - mean_gap[best] > TARGET_ACC_GAP
        ratio = traffic[(enc, best)] / traffic[(enc, "default")]
        if clear and ratio <= MAX_BYTES_RATIO:
            adopt.append(f"`{best}` for {enc}")
        lines.append(f"- {enc}: smallest gap averaged over the four partitions: `{best}` "
                     f"({100 * mean_gap[best]:+.1f} points; default "
                     f"{100 * mean_gap['default']:+.1f}), at {ratio:.1f}x the default's "
                     f"bytes per client and round ({traffic[(enc, best)]:,.0f} B up + down): "
                     + ("clearly better than the default on every partition." if clear else
                        "not clearly better than the default (that needs a smaller gap on "
                        "every partition and by more than a point on average)."))
    lines += ["", "`--strategy auto` takes a method from this table only where it is clearly "
              f"better at no more than {MAX_BYTES_RATIO:g}x the default's bytes (an encoding "
              "is chosen for its bytes): here "
              + (", ".join(adopt) if adopt else "none, so the default is the pick of the "
                 "pair-task, IID and Dirichlet table (section federated-default)") + "."]
    return lines


def d_cfg(raw: dict[str, Any]) -> dict[str, Any]:
    """The skew table's base config."""
    return dict(raw["skew10"]["config"])
