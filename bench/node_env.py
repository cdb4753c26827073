"""The size of a SuperNode's environment: ``pip install 'hybnn[node]'`` (training code and
Flower, no Ray) against ``hybnn[fed]`` (the Ray simulation engine and DP accounting too).

Builds the wheel, installs it into two fresh venvs (``--no-compile``, from this machine's
package index), checks that the node venv has Flower's SuperNode and no Ray, and measures
both on disk. Writes BENCHMARKS.md's ``node-env`` section.

    python -m bench.node_env [--json FILE] [--no-write] [--work DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import datetime as dt
import shutil
import subprocess
import tempfile

from bench.common import target, write_json, write_section

ROOT = Path(__file__).resolve().parents[1]
GOAL_MB = 2000  # the whole training environment before the extras were split


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not
               f.is_symlink()) / 2**20


def venv(root: Path, name: str, spec: str) -> Path:
    """A fresh venv ``root/name`` with ``spec`` installed; ``pip check`` must pass."""
    env = root / name
    _run(sys.executable, "-m", "venv", str(env))
    _run(str(env / "bin" / "pip"), "install", "-q", "--no-compile", spec)
    _run(str(env / "bin" / "pip"), "check")
    return env


def has_module(env: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(env / "bin" / "python"), "-c", code]).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the targets to FILE")
    ap.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    ap.add_argument("--work", help="working directory (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="hybnn-node-env-"))
    shutil.rmtree(work / "dist", ignore_errors=True)
    _run(sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(ROOT))
    wheel = next((work / "dist").glob("hybnn-*.whl"))
    sizes, checks = {}, {}
    for extra in ("node", "fed"):
        env = venv(work, extra, f"{wheel}[{extra}]")
        sizes[extra] = _size_mb(env)
        checks[extra] = {m: has_module(env, m) for m in ("flwr", "torch", "ray")}
        checks[extra]["flower-supernode"] = (env / "bin" / "flower-supernode").exists()
    node_ok = checks["node"] == {"flwr": True, "torch": True, "ray": False,
                                 "flower-supernode": True}
    targets = [
        target("SuperNode environment hybnn[node] (MB on disk, no bytecode)",
               round(sizes["node"]), f"< {GOAL_MB} MB, no Ray, flower-supernode present",
               sizes["node"] < GOAL_MB and node_ok),
        target("hybnn[fed] environment (MB, with Ray)", round(sizes["fed"]),
               "larger than hybnn[node] (Ray stays in fed)", sizes["fed"] > sizes["node"]),
    ]
    lines = [
        f"Command: `python -m bench.node_env` ({dt.date.today()}, Python "
        f"{sys.version.split()[0]}): the wheel installed into fresh venvs with "
        "`pip install --no-compile`, size on disk without bytecode.", "",
        "| install | MB on disk | flwr | torch | Ray | flower-supernode |",
        "|---|---:|---|---|---|---|"]
    for extra in ("node", "fed"):
        c = checks[extra]
        lines.append(f"| `hybnn[{extra}]` | {sizes[extra]:,.0f} | {c['flwr']} | {c['torch']} "
                     f"| {c['ray']} | {c['flower-supernode']} |")
    lines += ["", "Targets:", ""] + [
        f"- {t['name']}: {t['value']} — {t['goal']}: {'met' if t['met'] else 'MISSED'}"
        for t in targets]
    body = "## SuperNode environment\n\n" + "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("node-env", body, ROOT / "BENCHMARKS.md")
    if args.json:
        write_json(args.json, targets, sizes_mb=sizes, checks=checks)


if __name__ == "__main__":
    main()
