"""Packed engine vs PyTorch float32 on the same shapes; writes BENCHMARKS.md's `engine` section.

Every case times the packed path and its float32 PyTorch counterpart in one process,
interleaving repetitions (random order within each round) and taking medians, so that load
from other jobs on the machine hits both sides alike; the speed-up is the ratio of medians.
"Packed" timings start from float32 input and include the fused sign-and-pack; cases named
``*_packed_io`` start from packed words and end in packed words (a layer inside a chain, with
batch norm + sign fused into thresholds). PyTorch uses as many threads as the engine.

    python -m bench.engine [--quick] [--threads N] [--json FILE] [--no-write]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import datetime as dt
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import hybnn
from bench.common import target, write_json, write_section
from hybnn.engine import detect_isa, export_model, isa, load, pack_images, pack_signs
from hybnn.engine.ops import PackedLayer
from hybnn.engine.packing import pack_sign_words
from hybnn.machine import cpu_model
from hybnn.models import BinaryCNN, BinaryLatentVAE, BNNHead, FloatCNN


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, inner: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, repetitions interleaved in random order."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up
        f()
    order = list(fns)
    for _ in range(rounds):
        random.shuffle(order)
        for k in order:
            f = fns[k]
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def pm1(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def randomize_bn(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 4)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 10 + 0.1)
    return model.eval()


def case(packed: float, ref: float, threads: int, **extra: Any) -> dict[str, Any]:
    return {
        "ratio_vs_float32": ref / packed,
        "threads": threads,
        "packed_ms": packed * 1e3,
        "float32_ms": ref * 1e3,
        **extra,
    }


def layer_cases(name: str, t: dict[str, float], threads: int,
                what: tuple[str, str]) -> dict[str, dict[str, Any]]:
    """The three rows of one layer: float in/int out, float in/packed out, packed in/out.

    ``what`` describes the plain row and the packed input of the last row.
    """
    fused = "packed signs out (fused BN thresholds)"
    return {
        name: case(t["packed"], t["torch"], threads, pack_ms=t["pack_only"] * 1e3,
                   what=what[0]),
        f"{name}_float_to_packed": case(t["float_to_packed"], t["torch"], threads,
                                        what=f"float32 in, {fused}"),
        f"{name}_packed_io": case(t["packed_io"], t["torch"], threads,
                                  what=f"{what[1]}, {fused}"),
    }


def bench_head(rounds: int, threads: int, tmp: Path) -> dict[str, dict[str, Any]]:
    model = randomize_bn(BNNHead(200, 2), 0)
    export_model(model, tmp / "head.hybe")
    engine = load(tmp / "head.hybe", threads=threads)
    out = {}
    for batch, inner in ((1, 200), (4096, 1)):
        x = np.random.default_rng(batch).standard_normal((batch, 200)).astype(np.float32)
        xt = torch.from_numpy(x)
        codes = np.packbits(x >= 0, axis=1)
        with torch.inference_mode():
            t = interleaved(
                {
                    "packed": lambda x=x: engine.logits(x),
                    "packed_codes": lambda c=codes: engine.logits_packed(c),
                    "torch": lambda xt=xt: model(xt),
                },
                rounds * (4 if batch == 1 else 1),
                inner,
            )
        out[f"head_200-128-2_b{batch}"] = case(
            t["packed"],
            t["torch"],
            threads,
            batch=batch,
            packed_from_codes_ms=t["packed_codes"] * 1e3,
            what="whole BNNHead forward incl. Python call, float ±1 codes in, logits out",
        )
    return out


def bench_dense(k: int, n: int, batch: int, rounds: int, threads: int) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(k + n)
    w, x = pm1(rng, (n, k)), rng.standard_normal((batch, k)).astype(np.float32)
    layer = PackedLayer.dense(pack_sign_words(w < 0), k, rng.integers(0, k, n).astype(np.int32))
    xp = pack_signs(x)
    wt, xt = torch.from_numpy(w), torch.from_numpy(x)
    with torch.inference_mode():
        t = interleaved(
            {
                "packed": lambda: layer.accumulators(x, threads),
                "float_to_packed": lambda: layer.signs(x, threads),
                "packed_io": lambda: layer.signs(xp, threads),
                "pack_only": lambda: pack_signs(x),
                "torch": lambda: F.linear(xt, wt),
            },
            rounds,
        )
    return layer_cases(f"dense_{k}x{n}_b{batch}", t, threads,
                       ("float32 in (sign-packed inside), int32 dot products out",
                        "packed words in"))


def bench_conv(rounds: int, threads: int) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(3)
    c = o = 64
    w, x = pm1(rng, (o, c, 3, 3)), rng.standard_normal((1, c, 56, 56)).astype(np.float32)
    layer = PackedLayer.conv2d(
        pack_sign_words(w.transpose(0, 2, 3, 1) < 0),
        c,
        56,
        56,
        1,
        1,
        rng.integers(0, 9 * c, o).astype(np.int32),
    )
    xp = pack_images(x)
    wt, xt = torch.from_numpy(w), torch.from_numpy(x)
    with torch.inference_mode():
        t = interleaved(
            {
                "packed": lambda: layer.accumulators(x, threads),
                "float_to_packed": lambda: layer.signs(x, threads),
                "packed_io": lambda: layer.signs(xp, threads),
                "pack_only": lambda: pack_images(x),
                "torch": lambda: F.conv2d(xt, wt, padding=1),
            },
            rounds * 4,
        )
    return layer_cases("conv3x3_56x56x64-64_b1", t, threads,
                       ("float32 NCHW in (sign-packed inside), int32 NHWC out",
                        "packed NHWC in"))


def bench_end_to_end(rounds: int, threads: int, tmp: Path) -> dict[str, dict[str, Any]]:
    torch.manual_seed(0)
    vae = BinaryLatentVAE().eval()
    head = randomize_bn(BNNHead(200, 2), 1)
    cnn = randomize_bn(BinaryCNN(), 2)
    fcnn = randomize_bn(FloatCNN(), 3)
    export_model(head, tmp / "e2e_head.hybe")
    export_model(cnn, tmp / "e2e_cnn.hybe")
    head_e, cnn_e = load(tmp / "e2e_head.hybe", threads), load(tmp / "e2e_cnn.hybe", threads)
    out = {}
    for batch, inner in ((1, 20), (256, 1)):
        x = torch.rand(batch, 1, 28, 28) - 0.5
        xn = x.numpy()

        def hybnn_path(x=x) -> np.ndarray:
            # encoder logits >= 0 are the code bits; their signs are the ±1 codes
            return head_e.predict(vae.logits(x).numpy())

        with torch.inference_mode():
            t = interleaved(
                {
                    "hybnn": hybnn_path,
                    "encoder_only": lambda x=x: vae.logits(x),
                    "binary_cnn": lambda xn=xn: cnn_e.predict(xn),
                    "float_cnn": lambda x=x: fcnn(x).argmax(1),
                },
                rounds * 2,
                inner,
            )
        per = {k: v / batch for k, v in t.items()}
        common = {"batch": batch, "per_sample_us": None}
        for name, key in (
            ("hybnn_encoder+packed_head", "hybnn"),
            ("binary_cnn_packed", "binary_cnn"),
        ):
            out[f"e2e_{name}_b{batch}"] = case(
                per[key],
                per["float_cnn"],
                threads,
                **{**common, "per_sample_us": per[key] * 1e6},
                encoder_us=per["encoder_only"] * 1e6,
                float_cnn_us=per["float_cnn"] * 1e6,
                what="per-sample latency vs the float32 CNN (torch), images in, classes out",
            )
    return out


def weight_sizes(tmp: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for name, model in (("head_200-128-2", BNNHead(200, 2)), ("binary_cnn_28x28", BinaryCNN())):
        export_model(randomize_bn(model, 0), tmp / f"{name}.hybe")
        e = load(tmp / f"{name}.hybe")
        out[f"weights_{name}"] = {
            "ratio_vs_float32": e.float32_weight_bytes / e.weight_bytes,
            "threads": 1,
            "packed_bytes": e.weight_bytes,
            "float32_bytes": e.float32_weight_bytes,
            "file_bytes": (tmp / f"{name}.hybe").stat().st_size,
            "what": "binary weight bytes, packed vs float32 (file: + header, thresholds)",
        }
    for name, k, n in (("dense_1024x1024", 1024, 1024), ("conv3x3_64-64", 576, 64)):
        out[f"weights_{name}"] = {
            "ratio_vs_float32": 4 * k * n / (8 * n * ((k + 63) // 64)),
            "threads": 1,
            "packed_bytes": 8 * n * ((k + 63) // 64),
            "float32_bytes": 4 * k * n,
            "what": "binary weight bytes",
        }
    return out


def machine(threads: int) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "isa": isa(),
        "best_isa": detect_isa(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "hybnn": hybnn.__version__,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def markdown(results: dict[str, Any], command: str) -> str:
    m = results["machine"]
    lines = [
        "## Packed binary engine vs PyTorch float32",
        "",
        f"Command: `{command}`  ",
        f"Machine: {m['cpu']}, kernels `{m['isa']}` (best on this CPU: `{m['best_isa']}`), "
        f"{m['threads']} thread(s) for both sides; 1-min load average {m['load_average']} "
        "(the machine is shared)  ",
        f"Versions: hybnn {m['hybnn']}, torch {m['torch']}, numpy {m['numpy']}, "
        f"Python {m['python']}; {m['date']}  ",
        "Ratios are float32 time / packed time, medians of interleaved repetitions in one run. "
        "Plain rows take float32 input (sign-packed inside) and return int32 dot products, "
        "like the float layer's output; `float_to_packed` rows return packed signs (batch norm "
        "+ sign fused); `packed_io` rows start and end in packed words (a layer inside a chain).",
        "",
        "| case | packed | float32 | speed-up |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, c in results["cases"].items():
        if name.startswith("weights_"):
            lines.append(
                f"| {name} | {c['packed_bytes']} B | {c['float32_bytes']} B | "
                f"{c['ratio_vs_float32']:.1f}x smaller |"
            )
        elif name.startswith("e2e_"):
            lines.append(
                f"| {name} (per sample) | {c['per_sample_us']:.1f} us | "
                f"{c['float_cnn_us']:.1f} us | {c['ratio_vs_float32']:.2f}x |"
            )
        else:
            lines.append(
                f"| {name} | {_fmt(c['packed_ms'])} | {_fmt(c['float32_ms'])} | "
                f"{c['ratio_vs_float32']:.1f}x |"
            )
    return "\n".join(lines)


# The speed targets: (case name prefix, float32 time / packed time at least).
SPEED_GOALS = (("head_200-128-2_b4096", 20.0), ("dense_1024x1024_b256", 10.0),
               ("dense_16384x128_b", 10.0), ("conv3x3_56x56x64-64_b1", 10.0))


def targets(cases: dict[str, Any]) -> list[dict[str, Any]]:
    """Each speed target against its measured ratio (plain float-in rows: what a user calls)."""
    found = []
    for prefix, goal in SPEED_GOALS:
        plain = (n for n in cases if n.startswith(prefix)
                 and not n.endswith(("_float_to_packed", "_packed_io")))
        name = next(plain)
        ratio = cases[name]["ratio_vs_float32"]
        found.append(target(f"{name} speed-up vs torch float32", round(ratio, 2),
                            f">= {goal:g}x", ratio >= goal))
    return found


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _load(before: float | None) -> str:
    after = _loadavg()
    return "n/a" if before is None or after is None else f"{before:.1f} -> {after:.1f}"


def _fmt(ms: float) -> str:
    return f"{ms * 1e3:.1f} us" if ms < 1 else f"{ms:.2f} ms"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller batches")
    parser.add_argument("--threads", type=int, default=1, help="engine and torch threads")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    random.seed(0)
    rounds = 5 if args.quick else 41
    big_batch = 512 if args.quick else 4096
    cases: dict[str, Any] = {}
    load0 = _loadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cases |= bench_head(rounds, args.threads, tmp)
        cases |= bench_dense(1024, 1024, 256, rounds, args.threads)
        cases |= bench_dense(16384, 128, big_batch, max(3, rounds // 4), args.threads)
        cases |= bench_conv(rounds, args.threads)
        cases |= bench_end_to_end(rounds, args.threads, tmp)
        cases |= weight_sizes(tmp)
    results = {"machine": {**machine(args.threads), "load_average": _load(load0)}, "cases": cases}
    command = "python -m bench.engine " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(results, command.strip())
    print(text)
    if args.json:
        write_json(args.json, targets(cases), **results)
    if not args.no_write:
        write_section("engine", text, args.benchmarks)
    return results


if __name__ == "__main__":
    main()
