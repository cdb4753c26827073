"""What bounds the ten-class gap: float and binary conv heads on the frozen VAE's sign maps.

python -m bench.head_bound [RUN_DIR] [--layers conv1 conv2] [--epochs 8] [--threads 2]
[--json FILE]. RUN_DIR is a finished reproduce run with the `all` task (default: the
fashion-mnist one of `bench/hybnn_targets.py`); its encoder (phase 1, labels unused) is read
at the sign of a conv block's batch-normed map (conv1: 32 x 14 x 14 bits on 28 x 28 images,
conv2: 64 x 7 x 7, the `hybnn recode` layer), and two heads of one shape train on those
bits with labels: 3x3 conv (128 filters) -> BN -> 2x2 max-pool, once more on conv1's larger
map, then 512 -> BN -> classes -> BN; the float head with ReLUs and float weights, the
binary one with sign + STE on every input and weight (BinaryConv2d / BinaryLinear), as the
BNN head. One seed. A float head near the float CNN says the bits hold what it needs; the
binary head's distance below the float head is what binarizing the head costs. Rows are
cached in RUN_DIR/../head_bound.json with their settings; a rerun with the same settings
reuses them.
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
import torch.nn.functional as F
from torch import nn

from bench.common import target, write_json, write_section
from bench.wide_codes import all_run_results
from hybnn.artifacts import atomic_write
from hybnn.binary.layers import BinaryConv2d, BinaryLinear
from hybnn.machine import machine_description

DEFAULT_RUN = Path("runs/bench-hybnn/fashion-mnist/run1")
BLOCKS = {"conv1": 1, "conv2": 2}  # conv block whose batch-normed map is read (as CODE_LAYERS)
FILTERS, HIDDEN = 128, 512


class MapHead(nn.Module):
    """conv -> BN -> pool (twice on a 14 x 14 map), FC -> BN, FC -> BN; binary or float."""

    def __init__(self, channels: int, side: int, classes: int, binary: bool) -> None:
        super().__init__()
        self.binary = binary
        convs, c = [], channels
        while side > 4:  # 14 -> 7 -> 3, 7 -> 3
            conv = (BinaryConv2d(c, FILTERS, 3, stride=1, padding=1) if binary
                    else nn.Conv2d(c, FILTERS, 3, padding=1))
            convs += [conv, nn.BatchNorm2d(FILTERS)]
            c, side = FILTERS, side // 2
        self.convs = nn.ModuleList(convs)
        linear = BinaryLinear if binary else nn.Linear
        self.fc = nn.ModuleList([linear(c * side * side, HIDDEN), nn.BatchNorm1d(HIDDEN),
                                 linear(HIDDEN, classes), nn.BatchNorm1d(classes)])

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.binary else F.relu(h)  # binary layers take the sign of their input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(0, len(self.convs), 2):
            x = self._act(F.max_pool2d(self.convs[i + 1](self.convs[i](x)), 2))
        x = self._act(self.fc[1](self.fc[0](x.flatten(1))))
        return self.fc[3](self.fc[2](x))


def sign_maps(vae: nn.Module, images: Any, block: int) -> torch.Tensor:
    """+-1 float maps: the sign (>= 0 -> +1, as `Encoder.encode`) of block ``block``'s
    batch-normed conv output, the VAE in eval mode."""
    part = vae.encoder[:3 * block - 1]  # (conv, bn, LeakyReLU) x block, without the last act
    with torch.inference_mode():
        maps = [part(torch.from_numpy(images[i:i + 1000])) >= 0
                for i in range(0, len(images), 1000)]
    return torch.cat(maps).float() * 2 - 1


def head_rows(results: dict[str, Any], layers: list[str], epochs: int, seed: int
              ) -> list[dict[str, Any]]:
    """One row per code layer and head kind, for a reproduce run's ``results``."""
    from hybnn.data import load_source, select_task, train_test
    from hybnn.encoders.vae import load as load_encoder
    from hybnn.pipeline.config import TrainConfig
    from hybnn.pipeline.train import fit_classifier

    vae = load_encoder(results["encoder"]["path"]).vae.eval()
    train, test = (select_task(s, "all")
                   for s in train_test(load_source(results["config"]["data"])))
    y_train, y_test = torch.as_tensor(train.y).long(), torch.as_tensor(test.y).long()
    rows = []
    for layer in layers:
        x_train = sign_maps(vae, train.x, BLOCKS[layer])
        x_test = sign_maps(vae, test.x, BLOCKS[layer])
        for binary in (False, True):
            torch.manual_seed(seed)
            model = MapHead(x_train.shape[1], x_train.shape[2], train.num_classes, binary)
            config = TrainConfig(epochs, 128, 0.005 if binary else 0.001, seed=seed)
            t0 = time.perf_counter()
            history = fit_classifier(model, (x_train, y_train), (x_test, y_test), config,
                                     progress=False, desc=f"{layer} head")
            row = {"layer": layer, "head": "binary" if binary else "float",
                   "bits": int(x_train[0].numel()), "acc": history.last("test_acc"),
                   "best_acc": max(history.series("test_acc")),
                   "train_s": time.perf_counter() - t0, "epochs": epochs, "seed": seed,
                   "lr": config.lr, "batch_size": config.batch_size}
            print(f"{layer} {row['head']} head: {100 * row['acc']:.2f} % "
                  f"({row['train_s']:.0f} s)", flush=True)
            rows.append(row)
    return rows


def report(data: str, rows: list[dict[str, Any]], fpcnn_acc: float, mlp: dict[str, float]
           ) -> tuple[list[dict[str, Any]], str]:
    found, lines = [], []
    for r in rows:
        gap = 100 * (fpcnn_acc - r["acc"])
        if r["head"] == "binary":
            found.append(target(f"all {data} gap vs float CNN, binary conv head on {r['layer']} "
                                "maps (points)", round(gap, 2), "<= 1", gap <= 1))
        lines.append(f"| {r['layer']} | {r['bits']:,} | {r['bits'] // 8:,} | {r['head']} conv | "
                     f"{100 * r['acc']:.2f} | {gap:.2f} | {r['train_s']:.0f} |")
    for layer, acc in mlp.items():
        lines.append(f"| {layer} | | | binary MLP (the BNN head, 3 seeds, BENCHMARKS above) | "
                     f"{100 * acc:.2f} | {100 * (fpcnn_acc - acc):.2f} | |")
    table = ("| code layer | bits | bytes | head | test accuracy % | gap vs float CNN "
             "(points) | train s |\n|---|---|---|---|---|---|---|\n" + "\n".join(lines))
    return found, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?", default=DEFAULT_RUN,
                        help=f"reproduce run with `all` (default: {DEFAULT_RUN})")
    parser.add_argument("--layers", nargs="+", choices=list(BLOCKS), default=list(BLOCKS))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--benchmarks", default="BENCHMARKS.md")
    parser.add_argument("--json", metavar="FILE", help="write the targets here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = all_run_results(parser, args.run)
    data, fpcnn_acc = results["config"]["data"], results["tasks"]["all"]["fpcnn"]["acc_mean"]
    settings = {"encoder": results["encoder"]["fingerprint"], "layers": args.layers,
                "epochs": args.epochs, "seed": args.seed}
    cache = args.run.parent / "head_bound.json"  # rows reused when the settings match
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    if cached.get("settings") == settings:
        rows = cached["rows"]
    else:
        rows = head_rows(results, args.layers, args.epochs, args.seed)
        atomic_write(cache, lambda f: f.write_text(json.dumps(
            {"settings": settings, "rows": rows}, indent=2) + "\n"))
    bcnn = results["tasks"]["all"]["bcnn_centered"]
    wide = args.run.parent / "wide" / "conv2.json"  # the BNN head's row, where measured
    mlp = {"conv2": json.loads(wide.read_text())["acc_mean"]} if wide.is_file() else {}
    found, table = report(data, rows, fpcnn_acc, mlp)
    command = " ".join(["python -m bench.head_bound", *sys.argv[1:]])
    body = (f"### What bounds the ten-class gap on `{data}`: heads on the encoder's sign maps\n\n"
            f"Command: `{command}`  \nMachine: {machine_description()}, {args.threads} torch "
            f"thread(s)  \nDate: {time.strftime('%Y-%m-%d')}\n\n"
            f"The reproduce run's frozen encoder (`{results['encoder']['fingerprint'][:12]}`, "
            f"phase 1 without labels) read at the sign of a conv block's map; a float and a "
            f"binary head of one shape train on those bits ({args.epochs} epochs, batch 128, "
            f"Adam, cosine, seed {args.seed}; see the script's docstring). The float CNN on "
            f"pixels: {100 * fpcnn_acc:.2f} %, the fair binary CNN {100 * bcnn['acc_mean']:.2f} % "
            f"in {bcnn['epochs'] * bcnn['train_s_per_epoch']:.0f} s of training ({bcnn['epochs']} "
            f"epochs; the run's, 3 seeds).\n\n{table}\n\nTargets:\n\n"
            + "\n".join(f"- {t['name']}: {t['value']} (goal {t['goal']}): "
                        f"{'PASS' if t['met'] else 'MISS'}" for t in found) + "\n")
    write_section(f"head-bound-{data}", body, args.benchmarks)
    print(body)
    if args.json:
        write_json(args.json, found, threads=args.threads, rows=rows, command=command)


if __name__ == "__main__":
    main()
