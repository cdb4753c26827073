"""Results of a federated run: the centralized reference, results.json, results.md and plots."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from hybnn.artifacts import atomic_write, atomic_write_json, versions
from hybnn.data.splits import SPLIT_SEED
from hybnn.federated import task
from hybnn.federated.config import FedConfig
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head, train_image_model


def centralized_baseline(cfg: FedConfig) -> dict[str, Any]:
    """The same model trained on all of the task's training data, for rounds x local epochs.

    HyBNN: ``train_head`` on the codes of the whole training split; the CNNs:
    ``train_image_model`` on its images. Test accuracy after every epoch.
    """
    train, test = task.task_splits(cfg.data, cfg.task)
    config = TrainConfig(epochs=cfg.rounds * cfg.local_epochs, batch_size=cfg.batch_size,
                         lr=cfg.learning_rate, seed=cfg.seed, device=cfg.device)
    if cfg.model == "head":
        encoder = task.encoder_at(cfg.encoder, cfg.device)
        _, history = train_head(encode_to_codes(encoder, train), encode_to_codes(encoder, test),
                                config, hidden=cfg.hidden_widths(), progress=False)
    else:
        _, history = train_image_model(cfg.model, train, test, cfg.prep, config,
                                       progress=False)
    curve = history.series("test_acc")
    return {"acc": curve[-1], "epochs": config.epochs, "lr": config.lr, "curve": curve,
            "seconds": sum(history.series("seconds"))}


def environment() -> dict[str, str]:
    import flwr

    from hybnn.machine import machine_description

    env = {**versions(), "flwr": flwr.__version__, "machine": machine_description(),
           "platform": platform.platform()}
    try:
        import ray

        env["ray"] = ray.__version__
    except ImportError:
        env["ray"] = "not installed"
    return env


def build_results(log: dict[str, Any], central: dict[str, Any] | None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json: the federation log plus the reference and the headline numbers."""
    cfg = log["config"]
    rounds = log.get("rounds", [])
    accs = [r["global_acc"] for r in rounds if r.get("global_acc") is not None]
    ok_up = [c["train_bytes_up"] for r in rounds for c in r["clients"] if c["status"] == "ok"]
    down = [c["train_bytes_down"] for r in rounds for c in r["clients"]
            if "train_bytes_down" in c]
    return {
        "encoding": cfg["encoding"],
        "clients": cfg["clients"],
        "model": cfg["model"],
        "strategy": cfg["strategy"],
        "partition": cfg["partition"],
        "status": log.get("status"),
        "error": log.get("error"),
        "centralized_acc": central["acc"] if central else None,
        "initial_acc": log.get("initial_acc"),
        "final_acc": accs[-1] if accs else None,
        "best_acc": max(accs) if accs else None,
        "bytes_up_per_client_round": float(np.mean(ok_up)) if ok_up else None,
        "bytes_down_per_client_round": float(np.mean(down)) if down else None,
        "bytes_total": sum(r["bytes_up"] + r["bytes_down"] + r["eval_bytes_up"]
                           + r["eval_bytes_down"] for r in rounds),
        "model_payload_bytes": log.get("model_payload_bytes"),
        "secagg": log.get("secagg"),
        "dp": cfg["dp"]["mode"],
        "epsilon": rounds[-1].get("epsilon") if rounds else None,
        "delta": rounds[-1].get("delta") if rounds else None,
        "rounds": rounds,
        "handshake": log.get("handshake"),
        "centralized": central,
        "partitions": log.get("partitions"),
        "config": cfg,
        "seeds": {"run": cfg["seed"], "partition": cfg["seed"], "init": cfg["seed"],
                  "sampling": cfg["seed"], "split": SPLIT_SEED},
        "encoder_fingerprint": log.get("encoder_fingerprint"),
        "versions": environment(),
        **(extra or {}),
    }


def write_report(out: str | Path, results: dict[str, Any]) -> list[Path]:
    """results.json, results.md, accuracy.png and bytes.png in ``out``."""
    out = Path(out)
    paths = [atomic_write_json(out / "results.json", results)]
    text = results_markdown(results)
    paths.append(atomic_write(out / "results.md", lambda p: p.write_text(text)))
    if results["rounds"]:
        paths += [plot_accuracy(results, out / "accuracy.png"),
                  plot_bytes(results, out / "bytes.png")]
    return paths


def _fmt(x: Any, spec: str = ".4f") -> str:
    return "–" if x is None else format(x, spec)


def results_markdown(res: dict[str, Any]) -> str:
    cfg = res["config"]
    lines = [
        f"# Federated {cfg['model']} on {cfg['data']} {cfg['task']}",
        "",
        f"{res['clients']} clients, {cfg['partition']} partition"
        + (f" (alpha {cfg['alpha']})" if cfg["partition"] == "dirichlet" else "")
        + (f" ({cfg['classes_per_client']} class(es) per client)"
           if cfg["partition"] == "classes" else "")
        + f", {cfg['rounds']} rounds x {cfg['local_epochs']} local epochs, {cfg['strategy']}, "
        f"encoding {res['encoding']}, fraction {cfg['fraction']}, seed {cfg['seed']}. "
        f"Status: {res['status']}.",
        "",
        f"- global accuracy: final {_fmt(res['final_acc'])}, best {_fmt(res['best_acc'])} "
        f"(initial {_fmt(res['initial_acc'])})",
        f"- centralized, same epochs: {_fmt(res['centralized_acc'])}",
        f"- bytes per client per round: up {_fmt(res['bytes_up_per_client_round'], ',.0f')}, "
        f"down {_fmt(res['bytes_down_per_client_round'], ',.0f')} (serialized messages)",
        f"- encoder: {(res.get('encoder_fingerprint') or '–')[:16]}",
        *([f"- secure aggregation: SecAgg+, {sa['shares']} shares, threshold "
           f"{sa['threshold']}, clip {sa['clip']:g}: the server saw only the masked sum of "
           "the updates, so none was validated on its own"] if (sa := res.get("secagg"))
          else []),
        *([privacy_line(res)] if res.get("dp", "none") != "none" else []),
        "",
        "| round | global acc | clients' local acc | up B | down B | valid | s |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    faults = []
    for r in res["rounds"]:
        local = " ".join(_fmt(c.get("local_acc"), ".3f") for c in r["clients"]
                         if c["status"] == "ok")
        lines.append(f"| {r['round']} | {_fmt(r['global_acc'])} | {local} | "
                     f"{r['bytes_up']:,} | {r['bytes_down']:,} | {r['valid_updates']}/"
                     f"{r['sampled']} | {_fmt(r['round_seconds'], '.1f')} |")
        faults += [f"- round {r['round']}: not applied — {r['reason']}"] if r.get("reason") \
            else []
        faults += [f"- round {r['round']}, partition {c['partition']} (node {c['node_id']}): "
                   f"{c['status']} — {c.get('reason', 'no reply within the round timeout')}"
                   for c in r["clients"] if c["status"] not in ("ok", "not sampled")]
        faults += [f"- round {r['round']} evaluation, partition {c['partition']} (node "
                   f"{c['node_id']}): {c['status_eval']} — {c['reason_eval']}"
                   for c in r["clients"] if c.get("status_eval") in ("error", "rejected")]
    faults = [f"- handshake, node {h['node_id']}: {h['status']} — {h.get('reason', '')}"
              for h in res.get("handshake") or [] if h["status"] != "ok"] + faults
    if faults:
        lines += ["", "Clients that refused, failed, were rejected or went missing:", "",
                  *faults]
    lines += ["", f"Versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}", ""]
    return "\n".join(lines)


def privacy_line(res: dict[str, Any]) -> str:
    """results.md's line on differential privacy: the mode, its settings, epsilon spent."""
    cfg, dp = res["config"]["dp"], res["dp"]
    noise = (f"local epsilon {cfg['local_epsilon']:g} per round" if dp == "local"
             else f"noise multiplier {cfg['noise_multiplier']:g}")
    spent = (f"spent epsilon {res['epsilon']:.3g} at delta {res['delta']:g} (RDP accountant)"
             if res.get("epsilon") is not None else
             "epsilon not reported (Flower has no accountant for adaptive clipping)")
    return (f"- differential privacy: {dp}, {noise}, clipping norm {cfg['clipping_norm']:g}"
            f"{' (initial)' if 'adaptive' in dp else ''}: {spent}")


def plot_accuracy(res: dict[str, Any], path: Path) -> Path:
    from hybnn.plots import integer_axis, outside_legend, plt, save_figure

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    rounds = res["rounds"]
    xs = [r["round"] for r in rounds]
    ax.plot(xs, [r["global_acc"] for r in rounds], "k-o", ms=3, lw=2, label="global model")
    parts = sorted({c["partition"] for r in rounds for c in r["clients"]
                    if c["partition"] is not None})
    for p in parts:
        pts = [(r["round"], c.get("local_acc")) for r in rounds for c in r["clients"]
               if c["partition"] == p and c["status"] == "ok" and c.get("local_acc", -1) >= 0]
        if pts:
            ax.plot(*zip(*pts, strict=True), "--", lw=1, alpha=0.8,
                    label=f"client {p} (local model, own test data)")
    central = res.get("centralized")
    if central:
        e = res["config"]["local_epochs"]
        cx = [x for x in xs if x * e <= len(central["curve"])]
        ax.plot(cx, [central["curve"][x * e - 1] for x in cx], color="tab:red", lw=1.5,
                label="centralized (same epochs)")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    integer_axis(ax.xaxis)
    cfg = res["config"]
    ax.set_title(f"{cfg['data']} {cfg['task']}, {cfg['model']}: {res['clients']} clients, "
                 f"{cfg['partition']}, {res['encoding']}, {cfg['strategy']}, seed {cfg['seed']}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    outside_legend(ax)
    return save_figure(fig, path)


def plot_bytes(res: dict[str, Any], path: Path) -> Path:
    from hybnn.plots import integer_axis, outside_legend, plt, save_figure

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    rounds = res["rounds"]
    xs = [r["round"] for r in rounds]
    ax.plot(xs, [r["bytes_up"] for r in rounds], "-o", ms=3,
            label=f"up, {res['encoding']} (measured)")
    ax.plot(xs, [r["bytes_down"] for r in rounds], "-s", ms=3,
            label=f"down, {res['encoding']} (measured)")
    for name, size in (res.get("model_payload_bytes") or {}).items():
        sampled = [r["sampled"] for r in rounds]
        ax.plot(xs, [size * s for s in sampled], ":", lw=1,
                label=f"{name} payload x sampled clients (one way)")
    ax.set_yscale("log")
    ax.set_xlabel("round")
    integer_axis(ax.xaxis)
    ax.set_ylabel("bytes per round (all clients)")
    cfg = res["config"]
    ax.set_title(f"communication per round: {cfg['data']} {cfg['task']}, {cfg['model']}, "
                 f"{res['clients']} clients", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    outside_legend(ax)
    return save_figure(fig, path)
