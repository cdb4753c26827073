"""Reports of `hybnn continual`: results.json, results.md, accuracy-vs-tasks PNGs, a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybnn.artifacts import atomic_write, atomic_write_json
from hybnn.experiments.continual_config import SCENARIO_TITLES, STRATEGY_TITLES
from hybnn.plots import plot_curves


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def strategy_table(results: dict[str, Any], scenario: str) -> list[str]:
    """Markdown rows: final accuracy, forgetting, gap to joint, memory bytes per strategy."""
    rows = results["scenarios"][scenario]
    joint = rows.get("joint")
    lines = ["| strategy | final accuracy % | forgetting (points) | gap vs joint (points) "
             "| memory bytes |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        gap = (f"{100 * (joint['final_acc_mean'] - r['final_acc_mean']):.2f}"
               if joint is not None else "-")
        lines.append(f"| {STRATEGY_TITLES.get(name, name)} "
                     f"| {_pm(r['final_acc_mean'], r['final_acc_std'])} "
                     f"| {_pm(r['forgetting_mean'], r['forgetting_std'])} | {gap} "
                     f"| {r['memory_bytes']:,} |")
    return lines


def matrix_table(cell: dict[str, Any], tasks: list[str]) -> list[str]:
    """The mean accuracy matrix: a row per task trained, a column per task tested."""
    lines = ["| after \\ on | " + " | ".join(tasks) + " | mean |",
             "|---|" + "---|" * (len(tasks) + 1)]
    for t, row in enumerate(cell["matrix_mean"]):
        vals = [f"{100 * a:.1f}" if a is not None else "" for a in row]
        lines.append(f"| {tasks[t]} | " + " | ".join(vals)
                     + f" | {100 * cell['avg_acc_after_task'][t]:.1f} |")
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    seeds = ", ".join(map(str, results["seeds"]))
    lines = [f"# Continual learning on `{results['data']}`", "",
             f"Tasks {' → '.join(results['tasks'])} arrive in order; one BNN head learns them "
             f"on the codes of encoder `{results['encoder']['fingerprint'][:12]}` "
             f"({results['bytes_per_code']} B per code). Seeds {seeds}; mean ± std over seeds. "
             f"Memory budget of replay and generative replay: "
             f"{results['memory_budget_bytes']:,} B "
             f"({100 * results['config']['memory_fraction']:g} % of the "
             f"{results['train_codes']:,} training codes, +1 B label each). Forgetting: mean "
             "over tasks but the last of the best earlier accuracy minus the final one.", ""]
    for scenario in results["scenarios"]:
        lines += [f"## {SCENARIO_TITLES[scenario]}", "", *strategy_table(results, scenario), ""]
        for name, cell in results["scenarios"][scenario].items():
            lines += [f"### {STRATEGY_TITLES.get(name, name)}: accuracy % after each task "
                      "(mean over seeds)", "", *matrix_table(cell, results["tasks"]), ""]
    return "\n".join(lines)


def summary_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for scenario, rows in results["scenarios"].items():
        joint = rows.get("joint")
        for name, r in rows.items():
            gap = (f", {100 * (joint['final_acc_mean'] - r['final_acc_mean']):+.2f} vs joint"
                   if joint is not None and name != "joint" else "")
            lines.append(f"{SCENARIO_TITLES[scenario]:>19} {name:>10}: final "
                         f"{_pm(r['final_acc_mean'], r['final_acc_std'])} %{gap}, forgetting "
                         f"{100 * r['forgetting_mean']:.2f}, memory {r['memory_bytes']:,} B")
    return lines


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """results.json, results.md and one accuracy-vs-tasks PNG per scenario, atomically."""
    atomic_write_json(out / "results.json", results)
    atomic_write(out / "results.md", lambda p: p.write_text(render_markdown(results)))
    seeds = ", ".join(map(str, results["seeds"]))
    for scenario, rows in results["scenarios"].items():
        curves = {STRATEGY_TITLES.get(m, m): r["avg_acc_after_task"] for m, r in rows.items()}
        plot_curves(curves, out / f"accuracy_{scenario}.png",
                    f"{results['data']}, {SCENARIO_TITLES[scenario]}: mean accuracy over the "
                    f"tasks seen (seeds {seeds})", "mean test accuracy on seen tasks",
                    xlabel="tasks seen")
