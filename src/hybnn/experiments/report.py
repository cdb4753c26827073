"""Human-readable reports of `hybnn reproduce` results: Markdown table and terminal summary."""

from __future__ import annotations

from typing import Any

MODEL_COLUMNS = (("hybnn", "HyBNN"), ("bcnn_unit", "BCNN paper (unit)"),
                 ("bcnn_centered", "BCNN fair (centered)"), ("fpcnn", "FP CNN"))


def _acc(cell: dict[str, Any]) -> str:
    return f"{100 * cell['acc_mean']:.2f} ± {100 * cell['acc_std']:.2f}"


def render_markdown(results: dict[str, Any]) -> str:
    enc = results["encoder"]
    lines = [
        f"# HyBNN reproduction on `{results['data']}`",
        "",
        f"Seeds {results['seeds']}; encoder `{enc['fingerprint'][:12]}` "
        f"({enc['latent_bits']} bits, {enc['dead_bits']} dead, {enc['unique_codes']} unique "
        f"codes over {enc['samples']} training images). Test accuracy after the last epoch, "
        "mean ± std over seeds, in %.",
        "",
        "| task | " + " | ".join(label for _, label in MODEL_COLUMNS) + " |",
        "|---|" + "---|" * len(MODEL_COLUMNS),
    ]
    for task, row in results["tasks"].items():
        lines.append(f"| {task} | " + " | ".join(_acc(row[m]) for m, _ in MODEL_COLUMNS) + " |")
    run = results.get("run")
    if run:
        lines += ["", f"The run took {results['seconds_total'] / 60:.1f} min on {run['cpus']} "
                  f"CPUs, torch on {run['torch_threads']} threads; the machine's load average "
                  f"(1 min) was {run['load_average_at_start'][0]} at the start and "
                  f"{run['load_average_at_end'][0]} at the end."]
    lines += ["", "## Cost", "",
              "| task | model | epochs | train s/epoch | binary params | float params "
              "| deployed bytes |", "|---|---|---|---|---|---|---|"]
    for task, row in results["tasks"].items():
        for m, label in MODEL_COLUMNS:
            c = row[m]
            lines.append(f"| {task} | {label} | {c['epochs']} | {c['train_s_per_epoch']:.4f} "
                         f"| {c['binary_params']} | {c['float_params']} | {c['model_bytes']} |")
    lines += _time_to_train_lines(results)
    for task, row in results["tasks"].items():
        if "confusion" not in row:
            continue
        names = row["confusion"]["names"]
        lines += ["", f"## Per class on `{task}` (test accuracy %, predictions summed over "
                  "seeds)", "", "| class | " + " | ".join(
                      label for m, label in MODEL_COLUMNS if m in ("hybnn", "fpcnn")) + " |",
                  "|---|---|---|"]
        per = row["confusion"]["per_class"]
        for i, name in enumerate(names):
            cells = [per[m][i]["accuracy"] for m in ("hybnn", "fpcnn")]
            lines.append(f"| {name} | " + " | ".join(
                "-" if c is None else f"{100 * c:.2f}" for c in cells) + " |")
    if "continual" in results:
        lines += _continual_lines(results["continual"])
    lines += ["", "BNN-head training speed-up per epoch over the binary CNN (same samples, "
              "same batch size): " + ", ".join(
                  f"{t} {r['head_speedup_vs_bcnn']:.1f}x" for t, r in results["tasks"].items()),
              "", "Config:", "", "```", *_config_lines(results["config"]),
              "```", "", "Versions: " + ", ".join(f"{k} {v}" for k, v in
                                                   results["versions"].items()), ""]
    return "\n".join(lines)


def _time_to_train_lines(results: dict[str, Any]) -> list[str]:
    rows = [(t, r["time_to_train"]) for t, r in results["tasks"].items() if "time_to_train" in r]
    if not rows:
        return []
    lines = ["", "## Time to a trained model", "",
             "Wall seconds from the task's raw training images (HyBNN: code extraction "
             "included) to the first epoch that reaches the lower of the two models' final "
             "test accuracies; evaluation not counted; mean over seeds.", "",
             "| task | vs | equal accuracy % | HyBNN s (extraction) | baseline s | "
             "speed-up |", "|---|---|---:|---:|---:|---:|"]
    for task, ttt in rows:
        for name, c in ttt.items():
            label = dict(MODEL_COLUMNS)[name]
            lines.append(f"| {task} | {label} | {100 * c['accuracy']:.2f} | {c['fast_s']:.2f} "
                         f"({c['fast_extract_s']:.2f}) | {c['slow_s']:.2f} | "
                         f"{c['speedup']:.1f}x |")
    return lines


def _continual_lines(cont: dict[str, Any]) -> list[str]:
    from hybnn.experiments.continual_report import strategy_table

    return ["", f"## Continual learning: {' → '.join(cont['tasks'])} in order, one head, "
            "class-incremental", "", f"Memory budget {cont['memory_budget_bytes']:,} B; "
            f"{cont['epochs_per_task']} epochs per task; matrices in `{cont['path']}`.", "",
            *strategy_table(cont, "class")]


def summary_lines(results: dict[str, Any]) -> list[str]:
    head = f"{'task':<6}" + "".join(f"{label:>22}" for _, label in MODEL_COLUMNS)
    out = [f"HyBNN reproduction on {results['data']} "
           f"(seeds {results['seeds']}, {results['seconds_total']:.0f} s)", head]
    for task, row in results["tasks"].items():
        out.append(f"{task:<6}" + "".join(f"{_acc(row[m]):>22}" for m, _ in MODEL_COLUMNS))
    return out


def _config_lines(config: dict[str, Any], prefix: str = "") -> list[str]:
    """``name: value`` per setting, a group's settings as ``group.name``."""
    lines = []
    for k, v in config.items():
        lines += (_config_lines(v, f"{prefix}{k}.") if isinstance(v, dict)
                  else [f"{prefix}{k}: {v}"])
    return lines
