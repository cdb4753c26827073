"""The int8 encoder's recipe against ONNX Runtime's plain default, on trained encoders.

For each encoder (a reproduce run's, or ``--encoder``): hybnn's recipe (percentile ranges,
float32 bit logits: :class:`hybnn.bundle.quantize.Recipe`) and the plain default (min/max
ranges, uint8 logits), both calibrated on the same seeded 512 images of the encoder's own
training data; on a seeded sample of its data set's test split, the share of code bits
equal to the float32 encoder's (torch), the graph's bytes, and the ONNX Runtime encoding
time per image, repetitions of the two interleaved on 1 thread (the ratio is of medians).

    python -m bench.int8_calibration RUN_DIR [RUN_DIR ...] [--images 2000] [--json FILE]
                                     [--no-write]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import shlex
import statistics
import time
from typing import Any

import numpy as np
import torch

from bench.common import target, write_json, write_section
from hybnn.artifacts import versions
from hybnn.bundle.encoder_graph import calibration_images, encoder_graph
from hybnn.bundle.onnx_export import INPUT_NAME, OUTPUT_NAME
from hybnn.bundle.quantize import Recipe
from hybnn.encoders import ENCODE_BATCH
from hybnn.encoders.vae import load as load_encoder
from hybnn.machine import machine_description
from hybnn.onnxgraph.session import OnnxEncoder

RECIPES = {"hybnn (percentile, float32 logits)": Recipe(),
           "plain (min/max, uint8 logits)": Recipe("MinMax", ())}
GOAL = 99.0  # % of the bits equal to float32's, asked of hybnn's recipe here
REPS = 7


def compare(encoder_dir: Path, images: int, seed: int = 0) -> dict[str, Any]:
    """Both recipes on one encoder: equal bits, bytes and µs per image."""
    encoder = load_encoder(encoder_dir)
    x, sample = calibration_images(encoder, images, seed, split="test")
    source = sample["source"]
    ref = encoder.encode(x)
    rows: dict[str, dict[str, Any]] = {}
    sessions = {}
    for name, recipe in RECIPES.items():
        graph = encoder_graph(encoder, int8=True, recipe=recipe)
        sessions[name] = OnnxEncoder(graph.onnx, INPUT_NAME, OUTPUT_NAME, x.shape[1:],
                                     encoder.latent_bits, 1, name)
        bits = sessions[name].codes(x, ENCODE_BATCH)
        rows[name] = {"equal_bits_pct": 100 * float(np.mean(bits == ref)),
                      "bytes": len(graph.onnx), "quantization": graph.quantization}
    times: dict[str, list[float]] = {name: [] for name in RECIPES}
    batch = x[:1024]
    for _ in range(REPS):  # interleaved: load from other jobs hits both alike
        for name, session in sessions.items():
            t0 = time.perf_counter()
            session.codes(batch, ENCODE_BATCH)
            times[name].append(1e6 * (time.perf_counter() - t0) / len(batch))
    for name in RECIPES:
        rows[name]["us_per_image"] = statistics.median(times[name])
    hybnn, plain = (rows[n] for n in RECIPES)
    return {"source": source, "encoder": encoder.fingerprint, "images": len(x),
            "recipes": rows, "speed_ratio": plain["us_per_image"] / hybnn["us_per_image"]}


def table(results: list[dict[str, Any]], command: str) -> str:
    lines = ["## int8 encoder calibration (`hybnn quantize`, `hybnn export --int8`)", "",
             f"Command: `{command}`  ", f"Machine: {machine_description()}, ONNX Runtime on 1 "
             "thread.", "",
             "Share of code bits equal to the float32 encoder's on a seeded sample of the test "
             "split; both recipes calibrated on the same 512 training images (seed 0). Speed: "
             f"median of {REPS} interleaved passes over 1,024 images at batch 256; the ratio "
             "is plain / hybnn (above 1: hybnn's faster).", "",
             "| data | recipe | equal bits % | graph bytes | µs / image | speed ratio |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        for name, row in r["recipes"].items():
            ratio = f"{r['speed_ratio']:.2f}" if name.startswith("hybnn") else ""
            lines.append(f"| {r['source']} ({r['images']} images) | {name} | "
                         f"{row['equal_bits_pct']:.2f} | {row['bytes']:,} | "
                         f"{row['us_per_image']:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="reproduce run directories")
    parser.add_argument("--encoder", type=Path, action="append", default=[],
                        help="an encoder directory (repeatable), instead of or beside runs")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoders = [*args.encoder, *(Path(json.loads((r / "results.json").read_text())
                                      ["encoder"]["path"]) for r in args.runs)]
    if not encoders:
        parser.error("give a reproduce run directory or --encoder")
    command = shlex.join(["python", "-m", "bench.int8_calibration", *sys.argv[1:]])
    results = [compare(e, args.images) for e in encoders]
    found = []
    for r in results:
        ours = r["recipes"][next(iter(RECIPES))]
        plain = r["recipes"][list(RECIPES)[1]]
        print(f"{r['source']}: equal bits {ours['equal_bits_pct']:.2f} % (plain "
              f"{plain['equal_bits_pct']:.2f} %), {ours['us_per_image']:.1f} vs "
              f"{plain['us_per_image']:.1f} us/image")
        found.append(target(f"int8 {r['source']} bits equal to float32 (%)",
                            round(ours["equal_bits_pct"], 3), f">= {GOAL}",
                            ours["equal_bits_pct"] >= GOAL))
    if not args.no_write:
        write_section("int8-calibration", table(results, command))
    if args.json:
        write_json(args.json, found, results=results, command=command, versions=versions())


if __name__ == "__main__":
    main()
