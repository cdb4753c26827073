"""The C export on a Cortex-M4 and on the host: writes BENCHMARKS.md's `embedded` section.

Exports the paper's BNN head (200 -> 128 -> 2) and the binary CNN (28x28, convs 32/64/128,
fc 200/128/2) through the real exporter and ``write_c``, then

* builds each for a Cortex-M4F (``arm-none-eabi-gcc``, ``CORTEX_M4_FLAGS``): the model's own
  object, and a minimal program linked with newlib's nosys specs; flash = text + data and
  RAM = data + bss from ``arm-none-eabi-size``, the stack from ``-fstack-usage``;
* builds each for the host (``HOST_FLAGS``) and checks it against the Python engine on random
  inputs (classes identical, logits equal as float32 bits);
* times batch-1 predictions, 1 thread: the C code in a loop vs ``PackedModel.logits`` on one
  sample (one C call through Python) and the engine's per-sample time at batch 256.

Weights are random (fresh modules with randomised batch norms) unless ``--head`` / ``--cnn``
name trained model directories: sizes do not depend on the values, agreement and speed hardly.

    python bench/embedded.py [--head DIR] [--cnn DIR] [--json FILE] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hybnn
from hybnn.benchmarks import cpu_model, target, write_json, write_section
from hybnn.engine import export_artifact, export_model, load
from hybnn.engine.c_export import CORTEX_M4_FLAGS, HOST_FLAGS, write_c
from hybnn.models import BinaryCNN, BNNHead

HERE = Path(__file__).parent
FLASH, RAM = 256 * 1024, 64 * 1024  # a mid-range Cortex-M4 (e.g. STM32F401: 256 KiB / 64 KiB)
GOAL = "fits a 256 KiB flash / 64 KiB RAM Cortex-M4"
M4_MAIN = """#include "model.h"
static float input[MODEL_INPUT_SIZE];
volatile int result;
int main(void) {
    float logits[MODEL_CLASSES];
    result = model_predict(input, logits);
    return 0;
}
"""


def random_model(kind: str) -> torch.nn.Module:
    """A fresh paper-sized model with random batch-norm statistics (no training)."""
    torch.manual_seed(0)
    model = BNNHead(200, 2, (128,)) if kind == "head" else BinaryCNN((28, 28), 1, 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.weight.normal_()
                m.bias.normal_()
                m.running_mean.normal_(0, 4)
                m.running_var.uniform_(0.5, 20)
    return model.eval()


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, **kw)
    if proc.returncode:
        err = proc.stderr.decode() if isinstance(proc.stderr, bytes) else proc.stderr
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed: {err}")
    return proc


def arm_size(path: Path) -> dict[str, int]:
    out = run(["arm-none-eabi-size", str(path)], text=True).stdout.splitlines()[1].split()
    return dict(zip(("text", "data", "bss"), map(int, out[:3]), strict=True))


def cortex_m4(out: Path) -> dict[str, Any]:
    """Flash and RAM of the model's object and of a minimal linked program."""
    cc = "arm-none-eabi-gcc"
    obj = out / "m4.o"
    run([cc, *CORTEX_M4_FLAGS, "-fstack-usage", "-c", str(out / "model.c"), "-o", str(obj)])
    stack = sum(int(line.split()[-2]) for line in (out / "m4.su").read_text().splitlines())
    (out / "main.c").write_text(M4_MAIN)
    elf = out / "m4.elf"
    run([cc, *CORTEX_M4_FLAGS, f"-I{out}", str(out / "main.c"), str(out / "model.c"),
         "--specs=nosys.specs", "-Wl,--gc-sections", "-o", str(elf)])
    o, e = arm_size(obj), arm_size(elf)
    return {"object": o, "linked": e, "stack_bytes_upper_bound": stack,
            "flash_bytes": e["text"] + e["data"], "ram_bytes": e["data"] + e["bss"] + stack,
            "model_flash_bytes": o["text"] + o["data"], "model_ram_bytes": o["data"] + o["bss"]}


def feed(x: np.ndarray) -> bytes:
    return struct.pack("=I", len(x)) + np.ascontiguousarray(x, np.float32).tobytes()


def host(out: Path, engine_path: Path, x: np.ndarray, reps: int) -> dict[str, Any]:
    """Agreement with the engine and batch-1 speed, C vs the engine through Python."""
    exe = out / "host"
    run([shutil.which("cc") or "gcc", *HOST_FLAGS, f"-I{out}", str(out / "model.c"),
         str(HERE / "embedded_driver.c"), "-o", str(exe)])
    engine = load(engine_path, threads=1)
    n = len(x)
    raw = run([str(exe), "run"], input=feed(x)).stdout
    cls = np.frombuffer(raw[: 4 * n], np.int32)
    logits = np.frombuffer(raw[4 * n :], np.float32).reshape(n, engine.num_classes)
    ref = engine.logits(x)
    same_bits = (logits.view(np.uint32) == ref.view(np.uint32)).all(axis=1)
    c_s = float(run([str(exe), "time", str(reps)], input=feed(x), text=False).stdout)
    one = [x[i : i + 1] for i in range(min(n, 256))]
    per = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for s in one:
            engine.logits(s)
        per.append((time.perf_counter() - t0) / len(one))
    batch = x[:256]
    t256 = []
    for _ in range(reps):
        t0 = time.perf_counter()
        engine.logits(batch)
        t256.append((time.perf_counter() - t0) / len(batch))
    return {"samples": n, "classes_equal": int((cls == engine.predict(x)).sum()),
            "logits_bit_equal": int(same_bits.sum()), "c_us_batch1": 1e6 * c_s,
            "engine_us_batch1": 1e6 * statistics.median(per),
            "engine_us_per_sample_batch256": 1e6 * statistics.median(t256)}


def bench(kind: str, source: str | None, tmp: Path, n: int, reps: int) -> dict[str, Any]:
    out = tmp / kind
    out.mkdir()
    engine_path = out / "model.engine"
    if source:
        export_artifact(source, engine_path)
    else:
        export_model(random_model(kind), engine_path)
    info = write_c(engine_path, out, "model")
    rng = np.random.default_rng(1)
    shape = (n, 200) if kind == "head" else (n, 1, 28, 28)
    x = rng.standard_normal(shape).astype(np.float32)
    row: dict[str, Any] = {"weights": source or "random (fresh module, random batch norms)",
                           "c_source_bytes": Path(info["source"]).stat().st_size,
                           "weight_bytes": 8 * info["weight_words"],
                           "work_bytes": 8 * info["work_words"],
                           "engine_file_bytes": engine_path.stat().st_size}
    row["host"] = host(out, engine_path, x, reps)
    row["cortex_m4"] = cortex_m4(out) if shutil.which("arm-none-eabi-gcc") else None
    return row


def targets(rows: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for kind, row in rows.items():
        m4 = row["cortex_m4"]
        h = row["host"]
        found += [
            target(f"c {kind} flash bytes", m4 and m4["flash_bytes"], GOAL,
                   bool(m4 and m4["flash_bytes"] <= FLASH)),
            target(f"c {kind} ram bytes", m4 and m4["ram_bytes"], GOAL,
                   bool(m4 and m4["ram_bytes"] <= RAM)),
            target(f"c {kind} agreement",
                   f"{h['classes_equal']}/{h['samples']} classes, {h['logits_bit_equal']}/"
                   f"{h['samples']} logits bit-equal", "bit-exact with the engine",
                   h["classes_equal"] == h["logits_bit_equal"] == h["samples"])]
    return found


def markdown(res: dict[str, Any]) -> str:
    lines = ["## Embedded (C export, `hybnn export --format c`)", "",
             f"Command: `{res['command']}` ({res['date']}, hybnn {res['hybnn']}). Host: "
             f"{res['cpu']}; {res['cc']}; Cortex-M4 compiler: {res['arm_gcc'] or 'not installed'}."
             f" Cortex-M4 flags: `{' '.join(CORTEX_M4_FLAGS)}`; linked with newlib's "
             "`--specs=nosys.specs -Wl,--gc-sections` and a `main` that predicts once. Flash = "
             "text + data, RAM = data + bss + stack (`-fstack-usage`, the sum of every frame: an "
             "upper bound).", "",
             "| model | weights | packed weights | work buffer | M4 model object flash / RAM | "
             "M4 linked flash / RAM | engine file | C source |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for kind, r in res["models"].items():
        m4 = r["cortex_m4"]
        obj = f"{m4['model_flash_bytes']:,} / {m4['model_ram_bytes']:,}" if m4 else "–"
        lnk = f"{m4['flash_bytes']:,} / {m4['ram_bytes']:,}" if m4 else "–"
        lines.append(f"| {kind} | {r['weights']} | {r['weight_bytes']:,} | {r['work_bytes']:,} | "
                     f"{obj} | {lnk} | {r['engine_file_bytes']:,} | {r['c_source_bytes']:,} |")
    lines += ["", "Host, 1 thread, batch 1 (median of passes over the samples): the generated C "
              "(portable scalar loops, `-O2`) vs the engine through Python (`PackedModel.logits` "
              "of one sample: one C call with its Python overhead) and the engine's time per "
              "sample at batch 256 (AVX2 kernels).", "",
              "| model | agreement with the engine | C batch 1 | engine batch 1 | "
              "engine batch 256, per sample |", "|---|---|---:|---:|---:|"]
    for kind, r in res["models"].items():
        h = r["host"]
        lines.append(f"| {kind} | {h['classes_equal']}/{h['samples']} classes, "
                     f"{h['logits_bit_equal']}/{h['samples']} logits bit-equal | "
                     f"{h['c_us_batch1']:.1f} µs | {h['engine_us_batch1']:.1f} µs | "
                     f"{h['engine_us_per_sample_batch256']:.2f} µs |")
    lines += ["", "Targets:", ""]
    for t in res["targets"]:
        lines.append(f"- {t['name']}: {t['value']} — {t['goal']}: "
                     f"{'met' if t['met'] else '**missed**'}")
    return "\n".join(lines)


def tool_version(cmd: str) -> str | None:
    path = shutil.which(cmd)
    if not path:
        return None
    return subprocess.run([path, "--version"], capture_output=True, text=True).stdout.split(
        "\n")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", help="trained BNN head directory (default: random weights)")
    parser.add_argument("--cnn", help="trained binary CNN directory (default: random weights)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        models = {kind: bench(kind, src, Path(tmp), args.samples, args.reps)
                  for kind, src in (("head", args.head), ("cnn", args.cnn))}
    res = {"models": models, "targets": targets(models), "hybnn": hybnn.__version__,
           "date": dt.date.today().isoformat(), "cpu": cpu_model(),
           "cc": tool_version("cc"), "arm_gcc": tool_version("arm-none-eabi-gcc"),
           "command": " ".join(["python bench/embedded.py",
                                *(sys.argv[1:] if argv is None else argv)])}
    text = markdown(res)
    print(text)
    if args.json:
        write_json(args.json, res["targets"], **{k: v for k, v in res.items() if k != "targets"})
    if not args.no_write:
        write_section("embedded", text, args.benchmarks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
