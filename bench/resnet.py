"""Binary ResNet-18 in the engine vs its float twin: writes BENCHMARKS.md's `resnet` section.

ReActNet's binary ResNet-18 (``hybnn.models.binary_resnet``: float stem, 16 binary 3x3
convolutions with RSign and RPReLU, float 1x1 shortcuts and classifier) is exported to an
engine graph and timed per image against its float twin (``FloatResNet``: the same network with
nothing binarized) in torch eager, ONNX Runtime fp32 and ONNX Runtime int8 (static QDQ,
per-channel weights, calibrated on 16 random images), at CIFAR geometry (32x32, small stem,
10 classes) and ImageNet geometry (224x224, 7x7 stem and max pool, 1000 classes), batch 1 and
16, 1 thread and every core. Weights are random: speed does not depend on them (exactness is
tests/engine/test_engine_graph.py). Repetitions of all variants are interleaved in random order
and the medians reported, so load from other jobs hits all alike. The engine's time per node
(batch 1, 1 thread) shows the real-valued parts' share.

    python -m bench.resnet [--quick] [--json FILE] [--no-write] [--render JSON]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import platform
import shlex
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime
import torch

from bench.common import interleaved, target, write_json, write_section
from hybnn.artifacts import versions
from hybnn.bundle.onnx_export import INPUT_NAME, export_onnx
from hybnn.bundle.quantize import quantize_int8
from hybnn.engine import isa
from hybnn.engine import load as load_engine
from hybnn.engine.export import export_model
from hybnn.engine.graph import GraphModel
from hybnn.machine import machine_description
from hybnn.models.binary_resnet import BinaryResNet, FloatResNet
from hybnn.onnxgraph.session import make_session

GEOMETRIES = {"cifar": (32, 10), "imagenet": (224, 1000)}  # stem -> (side, classes)
BINARY = "binary ResNet-18, engine"
VARIANTS = (BINARY, "float twin, torch eager fp32", "float twin, ONNX Runtime fp32",
            "float twin, ONNX Runtime int8 (static QDQ)")
FLOAT_OPS = ("conv2d", "dense", "affine", "prelu", "add", "maxpool2d", "avgpool2d",
             "global_avgpool", "flatten", "epilogue")


def variants(stem: str, work: Path, thread_counts: list[int]
             ) -> tuple[dict[int, dict[str, Callable[[np.ndarray], Any]]], GraphModel]:
    """Each thread count's variants (predict functions) for one geometry, and the engine."""
    side, classes = GEOMETRIES[stem]
    torch.manual_seed(0)
    binary = BinaryResNet(classes, 3, 64, stem=stem, image_size=(side, side)).eval()
    export_model(binary, work / f"{stem}.engine")
    engine = load_engine(work / f"{stem}.engine")
    assert isinstance(engine, GraphModel)
    twin = FloatResNet(classes, 3, 64, stem=stem, image_size=(side, side)).eval()
    fp32 = export_onnx(twin, (3, side, side), "logits")
    calib = np.random.default_rng(1).random((16, 3, side, side), dtype=np.float32)
    int8 = quantize_int8(fp32, INPUT_NAME, calib)
    out: dict[int, dict[str, Callable[[np.ndarray], Any]]] = {}
    for threads in thread_counts:
        sessions = [make_session(fp32, threads), make_session(int8, threads)]

        def eager(x: np.ndarray, threads: int = threads) -> Any:
            torch.set_num_threads(threads)
            with torch.no_grad():
                return twin(torch.from_numpy(x)).argmax(1)

        def ort(session: Any) -> Callable[[np.ndarray], Any]:
            return lambda x: session.run(None, {INPUT_NAME: x})[0].argmax(1)

        fns = [lambda x, t=threads: engine.predict(x, threads=t), eager, *map(ort, sessions)]
        out[threads] = dict(zip(VARIANTS, fns, strict=True))
    return out, engine


def node_times(engine: GraphModel, x: np.ndarray, rounds: int) -> dict[str, float]:
    """Seconds per node of one image, 1 thread: the fastest of ``rounds`` runs (other jobs
    only ever add time)."""
    runs: dict[str, list[float]] = {}
    for _ in range(rounds):
        times: dict[str, float] = {}
        engine.run(x, threads=1, times=times)
        for name, s in times.items():
            runs.setdefault(name, []).append(s)
    return {name: min(v) for name, v in runs.items()}


def shares(engine: GraphModel, per_node: dict[str, float]) -> dict[str, float]:
    """Seconds per op kind, binary parts (sign, bconv2d) separate from float ones (a fused
    step's epilogue counts as float)."""
    kinds = engine.time_kinds()
    out: dict[str, float] = {}
    for name, sec in per_node.items():
        out[kinds[name]] = out.get(kinds[name], 0.0) + sec
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "## Binary ResNet-18 in the engine vs its float twin",
        "",
        f"`{result['command']}` on {result['machine']}; engine kernels: {result['isa']}; "
        f"ONNX Runtime {result['versions']['onnxruntime']}, torch "
        f"{result['versions'].get('torch', torch.__version__)}. Random weights; "
        f"{result['rounds']} interleaved rounds; microseconds per image, median (fastest). "
        f"Load average (1 min) {result['load'][0]:.1f} at the start, {result['load'][1]:.1f} at "
        "the end: other jobs shared the cores.",
        "",
        "| geometry | batch | threads | " + " | ".join(VARIANTS) + " | int8 / engine |",
        "|---|---:|---:|" + "---:|" * (len(VARIANTS) + 1),
    ]
    for row in result["speed"]:
        us = [row["us_per_image"][v] for v in VARIANTS]
        fast = [row["us_per_image_fastest"][v] for v in VARIANTS]
        lines.append(f"| {row['geometry']} | {row['batch']} | {row['threads']} | "
                     + " | ".join(f"{u:,.0f} ({f:,.0f})" for u, f in zip(us, fast, strict=True))
                     + f" | {us[3] / us[0]:.2f}x ({fast[3] / fast[0]:.2f}x) |")
    lines += ["", "Other jobs only add time: on a shared machine the fastest round is the "
              "better estimate of each variant alone, and rows of more than 1 thread mean "
              "something only when the machine is otherwise idle. The engine runs its binary "
              "convolutions, float convolutions, pooling and fused epilogues on the given "
              "threads (the classifier and the global average in numpy, on one).", "",
              "Engine time per op kind, batch 1, 1 thread (ms per image, fastest of the "
              "rounds; `sign` and `bconv2d` are the binary parts, `epilogue` the fused "
              "per-channel float passes of each block, which end in the next sign and pack):",
              ""]
    for geometry, ops in result["op_ms"].items():
        total = sum(ops.values())
        binary = ops.get("sign", 0.0) + ops.get("bconv2d", 0.0)
        lines.append(f"* {geometry}: {total:.1f} ms, binary parts {100 * binary / total:.0f} %: "
                     + ", ".join(f"{op} {ms:.2f}" for op, ms in ops.items()))
    lines += ["", _bound(result)]
    lines += ["", "| target | value | goal | met |", "|---|---|---|---|"]
    lines += [f"| {t['name']} | {t['value']} | {t['goal']} | {'yes' if t['met'] else 'no'} |"
              for t in result["targets"]]
    return "\n".join(lines) + "\n"


def _bound(result: dict[str, Any]) -> str:
    """What bounds the 224x224 batch-1 ratio, from the op times: the engine time the 3x target
    needs against the time its parts take now."""
    ops = result["op_ms"]["224x224"]
    key = next(r for r in result["speed"] if r["geometry"] == "224x224" and r["batch"] == 1
               and r["threads"] == 1)["us_per_image_fastest"]
    need = key[VARIANTS[3]] / 3e3
    binary = ops.get("bconv2d", 0.0) + ops.get("sign", 0.0)
    return (f"What bounds it (224x224, batch 1, 1 thread): 3x ONNX Runtime int8's fastest round "
            f"needs the engine at {need:.1f} ms per image; its fastest round took "
            f"{key[BINARY] / 1e3:.1f} ms, its parts (each at its fastest) "
            f"{sum(ops.values()):.1f} ms: the 16 binary convolutions "
            f"{binary:.1f} ms, the float convolutions (7x7 stem, 1x1 shortcuts) "
            f"{ops.get('conv2d', 0.0):.1f} ms, the fused per-channel epilogues "
            f"{ops.get('epilogue', 0.0):.1f} ms (each moves about 12 bytes per value: it reads "
            f"its dot products and shortcut and writes its float output), pooling "
            f"{ops.get('maxpool2d', 0.0) + ops.get('avgpool2d', 0.0):.1f} ms.")


def render(path: str, benchmarks: str) -> int:
    """Rewrite the section from a ``--json FILE`` of an earlier run (no timing)."""
    result = json.loads(Path(path).read_text())
    result["machine"] = result.get("machine_full", result["machine"])
    md = markdown(result)
    print(md)
    write_section("resnet", md, benchmarks)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 thread, 3 rounds (a few minutes)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--benchmarks", default="BENCHMARKS.md")
    ap.add_argument("--render", metavar="JSON", help="rewrite the section from the --json FILE "
                    "of an earlier run, timing nothing")
    args = ap.parse_args(argv)
    if args.render:
        return render(args.render, args.benchmarks)
    rounds = args.rounds or (3 if args.quick else 7)
    cores = os.cpu_count() or 1
    thread_counts = [1] if args.quick or cores == 1 else [1, cores]
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    speed, op_ms, layer_ms = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="hybnn-bench-resnet-") as tmp:
        for stem, (side, _) in GEOMETRIES.items():
            geometry = f"{side}x{side}"
            by_threads, engine = variants(stem, Path(tmp), thread_counts)
            for threads, fns in by_threads.items():
                for batch in (1, 16):
                    x = np.random.default_rng(2).random((batch, 3, side, side),
                                                        dtype=np.float32)
                    sec = interleaved({k: (lambda f=f, x=x: f(x)) for k, f in fns.items()},
                                      rounds)
                    row = {"geometry": geometry, "batch": batch, "threads": threads,
                           "us_per_image": {k: 1e6 * s[0] / batch for k, s in sec.items()},
                           "us_per_image_fastest": {k: 1e6 * s[1] / batch
                                                    for k, s in sec.items()}}
                    speed.append(row)
                    print(row, flush=True)
                if threads == 1:
                    per_node = node_times(engine, x[:1], rounds)
                    layer_ms[geometry] = {k: 1e3 * s for k, s in per_node.items()}
                    op_ms[geometry] = {k: 1e3 * s for k, s in shares(engine, per_node).items()}
    key = next(r for r in speed if r["geometry"] == "224x224" and r["batch"] == 1
               and r["threads"] == 1)["us_per_image_fastest"]
    ratio = key[VARIANTS[3]] / key[BINARY]
    ops = op_ms["224x224"]
    float_share = sum(v for k, v in ops.items() if k in FLOAT_OPS) / sum(ops.values())
    targets = [
        target("binary ResNet-18 224x224, batch 1, 1 thread: ONNX Runtime int8 time / engine "
               "time (fastest rounds)", round(ratio, 2), ">= 3", ratio >= 3),
        target("share of the engine's time in real-valued parts (224x224, batch 1)",
               round(float_share, 3), "reported (what bounds the engine)", True),
    ]
    result = {
        "machine": f"{machine_description()}, {platform.machine()}",
        "isa": isa(),
        "command": shlex.join(["python", "-m", "bench.resnet", *(argv or sys.argv[1:])]),
        "versions": {**versions(), "onnxruntime": onnxruntime.__version__},
        "rounds": rounds,
        "load": [load_start, os.getloadavg()[0]],
        "targets": targets,
        "speed": speed,
        "op_ms": op_ms,
        "layer_ms": layer_ms,
        "seconds_total": time.perf_counter() - t_start,
    }
    md = markdown(result)
    print(md)
    if args.json:
        write_json(args.json, targets, machine_full=result["machine"],
                   **{k: v for k, v in result.items() if k not in ("machine", "targets")})
    if not args.no_write:
        write_section("resnet", md, args.benchmarks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
