"""An exported model as test firmware for a Cortex-M4, run under QEMU (``mps2-an386``).

:func:`build_firmware` writes the model's C (``write_c``), the test images as a ``const``
array and links them with ``m4_firmware.c`` (vector table, reset handler, semihosting; no
libc) by ``mps2_an386.ld`` for ``CORTEX_M4_FLAGS``. :func:`run_firmware` boots it in
``qemu-system-arm -M mps2-an386`` with ``-icount shift=0`` and reads back each image's class and
logits (float bits), the instructions of the timed pass and the stack high-water mark.
``tests/engine/test_cortex_m4.py`` and ``bench/embedded.py`` both use it.

Instructions, not cycles: with ``-icount shift=0`` QEMU's virtual clock advances 1 ns per
guest instruction, and the board's APB timer counts that clock at 25 MHz, so one tick is 40
instructions (the firmware times all images in one window: the error is below one tick for the
whole pass; checked against a TCG plugin that counts every instruction). A real M4 takes more
cycles than instructions (loads, taken branches, flash wait states).

``--resnet`` does the same for a small binary ResNet graph (:data:`RESNET`, trained briefly
here, or ``--engine`` naming a graph): its C export (``hybnn.engine.c_graph``) as firmware,
checked against the engine (classes equal, logits within float32 rounding: the float stem and
shortcut convolutions sum in another order), and writes BENCHMARKS.md's ``cortex-m4-resnet``
section.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import math
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybnn.engine.c_export import CORTEX_M4_FLAGS, write_c

HERE = Path(__file__).resolve().parent
CC, SIZE, QEMU = "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"
QEMU_ARGS = ("-M", "mps2-an386", "-nographic", "-semihosting-config", "enable=on,target=native",
             "-icount", "shift=0")
TIMER_HZ = 25_000_000  # the AN386's peripheral clock, which drives APB timer 0
INSNS_PER_TICK = 10**9 // TIMER_HZ  # -icount shift=0: 1 ns of virtual time per instruction
# The firmware's own code: no pedantic (its vector table casts the stack top to a handler), and
# no libc: its copy loops must not become calls to memcpy or memset.
HARNESS_FLAGS = (*(f for f in CORTEX_M4_FLAGS if f != "-pedantic"), "-ffreestanding",
                 "-fno-tree-loop-distribute-patterns")

# Other popcounts for the Cortex-M4 (no popcount instruction), to compare with forward.c's (two
# 32-bit halves whose 2-bit counts are summed before one byte fold, inlined): a header passed
# with -include defines hyb_popcount before the kernels, which then keep it.
_INLINE = "__attribute__((always_inline)) static inline"
_SWAR32 = """
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0f0f0f0fu;
    return (unsigned)((x * 0x01010101u) >> 24);
}
#define hyb_popcount(x) (hyb_pc32((uint32_t)(x)) + hyb_pc32((uint32_t)((x) >> 32)))
"""
POPCOUNT_VARIANTS = {
    "SWAR per 32-bit half, called": "static unsigned hyb_pc32(uint32_t x) {" + _SWAR32,
    "SWAR per 32-bit half, inlined": f"{_INLINE} unsigned hyb_pc32(uint32_t x) {{" + _SWAR32,
    "256-entry byte table": f"""
#define B2(n) n, n + 1, n + 1, n + 2
#define B4(n) B2(n), B2(n + 1), B2(n + 1), B2(n + 2)
#define B6(n) B4(n), B4(n + 1), B4(n + 1), B4(n + 2)
static const uint8_t hyb_pc_table[256] = {{B6(0), B6(1), B6(1), B6(2)}};
{_INLINE} unsigned hyb_pc_bytes(uint32_t x) {{
    return (unsigned)hyb_pc_table[x & 255u] + hyb_pc_table[(x >> 8) & 255u] +
           hyb_pc_table[(x >> 16) & 255u] + hyb_pc_table[x >> 24];
}}
#define hyb_popcount(x) (hyb_pc_bytes((uint32_t)(x)) + hyb_pc_bytes((uint32_t)((x) >> 32)))
""",
    "16-entry nibble table": f"""
{_INLINE} unsigned hyb_pc_nibbles(uint64_t x) {{
    static const uint8_t t[16] = {{0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4}};
    unsigned n = 0;
    for (int i = 0; i < 16; i++, x >>= 4) n += t[x & 15u];
    return n;
}}
#define hyb_popcount(x) hyb_pc_nibbles(x)
""",
    "libgcc __popcountdi2 (__builtin_popcountll)":
        "#define hyb_popcount(x) ((unsigned)__builtin_popcountll(x))\n",
}


def missing_tools() -> list[str]:
    """The programs a firmware run needs that are not on PATH (Debian: gcc-arm-none-eabi,
    qemu-system-arm); no newlib: the firmware brings its own start-up code."""
    return [t for t in (CC, SIZE, QEMU) if shutil.which(t) is None]


def _c_float(v: float) -> str:
    """A float32 value as an exact C literal: short hex, or GCC's NaN and infinity."""
    if not np.isfinite(v):
        return "__builtin_nanf(\"\")" if np.isnan(v) else ("-" * (v < 0)) + "__builtin_inff()"
    mantissa, exponent = float.hex(v).split("p")
    return f"{mantissa.rstrip('0').rstrip('.')}p{exponent}f"


def images_source(x: np.ndarray) -> str:
    """C definitions of ``fw_count`` and ``fw_images`` (exact hex floats, in .images)."""
    flat = np.ascontiguousarray(x, np.float32).reshape(len(x), int(np.prod(x.shape[1:])))
    rows = (", ".join(_c_float(float(v)) for v in row) for row in flat)
    body = ",\n".join(rows) if len(flat) else "0"
    return ("#include <stdint.h>\n"
            f"const uint32_t fw_count = {len(flat)}u;\n"
            "__attribute__((section(\".images\")))\n"
            f"const float fw_images[{max(flat.size, 1)}] = {{\n{body}\n}};\n")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} ... failed ({proc.returncode}): "
                           f"{proc.stderr or proc.stdout}")
    return proc


def build_firmware(engine_path: str | Path, x: np.ndarray, out: Path,
                   popcount: str | None = None) -> Path:
    """``out/fw.elf``: the engine model (as ``write_c`` exports it) on the images ``x`` (float32,
    the model's input shape). ``popcount``: a key of POPCOUNT_VARIANTS, or None for
    forward.c's own."""
    out.mkdir(parents=True, exist_ok=True)
    write_c(engine_path, out, "model")
    (out / "fw_images.c").write_text(images_source(x))
    extra: list[str] = []
    if popcount is not None:
        (out / "popcount.h").write_text("#include <stdint.h>\n" + POPCOUNT_VARIANTS[popcount])
        extra = ["-include", str(out / "popcount.h")]
    objs = []
    for src, flags in ((out / "model.c", [*CORTEX_M4_FLAGS, *extra]),
                       (out / "fw_images.c", list(HARNESS_FLAGS)),
                       (HERE / "m4_firmware.c", list(HARNESS_FLAGS))):
        obj = out / (src.stem + ".o")
        _run([CC, *flags, f"-I{out}", "-c", str(src), "-o", str(obj)])
        objs.append(str(obj))
    elf = out / "fw.elf"
    _run([CC, *HARNESS_FLAGS, "-nostdlib", "-T", str(HERE / "mps2_an386.ld"), "-Wl,--gc-sections",
          *objs, "-lgcc", "-o", str(elf)])
    return elf


def sizes(elf: Path) -> dict[str, int]:
    """Flash (code, constants, .data's initial values) and RAM (.data, .bss) bytes of the
    firmware without its test images, and the bytes of the images (``arm-none-eabi-size -A``)."""
    sections: dict[str, int] = {}
    for line in _run([SIZE, "-A", str(elf)]).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    data = sections.get(".data", 0)
    return {"flash_bytes": sections.get(".text", 0) + sections.get(".ARM.exidx", 0) + data,
            "data_bss_bytes": data + sections.get(".bss", 0),
            "images_bytes": sections.get(".images", 0)}


@dataclass
class FirmwareRun:
    """What the firmware reported: per image its class and logits, and for the timed pass."""

    classes: np.ndarray  # int32 (n,)
    logits: np.ndarray  # float32 (n, classes), from their bit patterns
    instructions: int  # of the timed pass over all n images (from timer ticks)
    stack_bytes: int  # high-water mark of the whole run

    @property
    def instructions_per_image(self) -> float:
        return self.instructions / max(len(self.classes), 1)


def run_firmware(elf: Path, timeout: float = 600) -> FirmwareRun:
    """Boot ``elf`` in ``qemu-system-arm -M mps2-an386`` and parse its report."""
    # QEMU writes the semihosting console to stderr, its own messages too: parse lines by tag
    proc = subprocess.run([QEMU, *QEMU_ARGS, "-kernel", str(elf)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    lines = proc.stdout.replace("\r", "").splitlines()
    if proc.returncode or "done" not in lines:
        raise RuntimeError(f"firmware failed (exit {proc.returncode}): "
                           f"{' | '.join(lines[-4:])}")
    words = {line.split()[0]: int(line.split()[1], 16) for line in lines
             if line.startswith(("ticks ", "stack "))}
    found = [[int(v, 16) for v in line.split()[1:]] for line in lines
             if line.startswith("image ")]
    rows = np.array(found or np.zeros((0, 1)), np.uint32)
    return FirmwareRun(classes=rows[:, 0].view(np.int32).copy(),
                       logits=rows[:, 1:].view(np.float32).copy(),
                       instructions=words["ticks"] * INSNS_PER_TICK,
                       stack_bytes=words["stack"])


# ---- a binary ResNet graph (--resnet) ------------------------------------------------------

# ReActNet's blocks at a width and geometry that fit a 64 KiB-RAM M4: the 7x7 stride-2 stem and
# max pool take a 28x28 image to 7x7 before the first binary block
RESNET = {"num_classes": 10, "in_channels": 1, "width": 16, "blocks": (1, 1, 1, 1),
          "scaling": "learned", "stem": "imagenet", "image_size": (28, 28)}
EPOCHS, BATCH = 2, 50  # Adam 2e-3, shuffled: under a minute, and a network that learned
TOLERANCE = 1e-4  # logits: largest difference / largest logit (the C export test's bound)


def train_resnet(data: str, out: Path) -> Path:
    """:data:`RESNET` trained for EPOCHS passes over the training split of ``data``, exported
    to ``out`` (an engine graph)."""
    import torch
    import torch.nn.functional as F

    from hybnn.data import load_source, train_test
    from hybnn.engine import export_model
    from hybnn.models.binary_resnet import BinaryResNet

    train, _ = train_test(load_source(data))
    torch.manual_seed(0)
    model = BinaryResNet(**RESNET)  # type: ignore[arg-type]
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y).long()
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(x))  # the splits are ordered by class
        for i in range(0, len(x), BATCH):
            batch = order[i : i + BATCH]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    export_model(model.eval(), out)
    return out


def emulated_resnet(engine_path: Path, data: str, n: int, tmp: Path) -> dict[str, Any]:
    """The graph's C export as mps2-an386 firmware on ``n`` test images of ``data`` spread
    evenly over its test split (ordered by class): agreement with the engine, instructions per
    image, flash, RAM, accuracy."""
    from hybnn.data import load_source, train_test
    from hybnn.engine import load
    from hybnn.engine.graph import GraphModel

    _, test = train_test(load_source(data))
    pick = np.linspace(0, len(test) - 1, min(n, len(test))).astype(int)
    x, y = np.ascontiguousarray(test.x[pick]), test.y[pick]
    engine = load(engine_path, threads=1)
    if not isinstance(engine, GraphModel):
        raise ValueError(f"{engine_path} is not an engine graph")
    want = engine.logits(x)
    elf = build_firmware(engine_path, x, tmp / "fw")
    run = run_firmware(elf)
    size = sizes(elf)
    floats = sum(math.prod(nd.out.shape) for nd in engine.nodes if nd.out.kind == "float")
    header = (tmp / "fw" / "model.h").read_text()
    work = {key: int(header.split(f"MODEL_{key} ")[1].split("u")[0])
            for key in ("WORK_FLOATS", "BITS_WORDS", "WEIGHT_BYTES")}
    return {"images": len(x), "data": data, "engine": str(engine_path),
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in RESNET.items()},
            "input_shape": list(engine.input_shape),
            "float_convs": sum(nd.op == "conv2d" for nd in engine.nodes),
            "binary_convs": sum(nd.op == "bconv2d" for nd in engine.nodes),
            "instructions_per_image": run.instructions_per_image,
            "classes_equal": int((run.classes == want.argmax(1)).sum()),
            "logits_bit_equal": int((run.logits.view(np.uint32)
                                     == want.view(np.uint32)).all(1).sum()),
            "max_rel_diff": float(np.abs(run.logits - want).max() / np.abs(want).max()),
            "accuracy": 100 * float((run.classes == y).mean()),
            "engine_accuracy_test_split": 100 * float((engine.predict(test.x) == test.y).mean()),
            "test_split": len(test), "flash_bytes": size["flash_bytes"],
            "data_bss_bytes": size["data_bss_bytes"], "stack_bytes": run.stack_bytes,
            "ram_bytes": size["data_bss_bytes"] + run.stack_bytes,
            "weight_bytes": work["WEIGHT_BYTES"],
            "work_bytes": 4 * work["WORK_FLOATS"] + 8 * work["BITS_WORDS"],
            "float_values_bytes": 4 * floats}


def resnet_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    from bench.common import target
    from bench.embedded import FLASH, GOAL, RAM

    n = r["images"]
    return [
        target("M4 (QEMU) binary ResNet agreement",
               f"{r['classes_equal']}/{n} classes, largest logit difference "
               f"{r['max_rel_diff']:.1e} of the largest ({r['logits_bit_equal']}/{n} bit-equal)",
               f"classes equal, logits within float32 rounding ({TOLERANCE:g})",
               r["classes_equal"] == n and r["max_rel_diff"] <= TOLERANCE),
        target("M4 binary ResNet flash bytes (firmware without its test images)",
               r["flash_bytes"], GOAL, r["flash_bytes"] <= FLASH),
        target("M4 binary ResNet RAM bytes (data + bss + stack high-water mark)",
               r["ram_bytes"], GOAL, r["ram_bytes"] <= RAM),
    ]


def resnet_markdown(r: dict[str, Any], command: str) -> str:
    m = r["model"]
    c, h, w = r["input_shape"]
    return "\n".join([
        "## Cortex-M4, emulated: a binary ResNet graph (C export, QEMU `mps2-an386`)", "",
        f"Command: `{command}` ({r['date']}). {r['compiler']}, flags `{r['flags']}`; "
        f"{r['qemu']}. ReActNet's binary ResNet (`BinaryResNet`: width {m['width']}, blocks "
        f"{m['blocks']}, {m['stem']} stem: a float 7x7 stride-2 convolution and 3x3 max pool, "
        f"RSign, binary 3x3 convolutions, RPReLU, float 1x1 shortcuts and classifier; "
        f"{r['float_convs']} float and {r['binary_convs']} binary convolutions) on {c}x{h}x{w} "
        f"images, trained here for {EPOCHS} epochs on {r['data']}'s training split unless the "
        "command names an engine file, exported with `hybnn export --format c` "
        "(`hybnn.engine.c_graph`) and built into the bare-metal firmware of the `embedded` "
        f"section's fully binary HyBNN (`bench/m4_firmware.c`), holding {r['images']} test "
        "images spread evenly over the test split. Instructions per image from the board's "
        "timer under `-icount shift=0` (**instructions, not cycles**). Flash = code + "
        "constants without the test images; RAM = data + bss (the static work buffers) + the "
        "stack's high-water mark. The float convolutions sum in another order than the "
        "engine's: logits within float32 rounding, not bit-exact.", "",
        "| agreement with the engine | instructions per image | flash | RAM | packed and float "
        "weights | work buffers | accuracy on the firmware's images | engine accuracy, test "
        "split |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['classes_equal']}/{r['images']} classes, logits within {r['max_rel_diff']:.1e} "
        f"of the largest ({r['logits_bit_equal']}/{r['images']} bit-equal) | "
        f"{r['instructions_per_image']:,.0f} | {r['flash_bytes']:,} B | {r['ram_bytes']:,} B "
        f"(stack {r['stack_bytes']:,}) | {r['weight_bytes']:,} B | {r['work_bytes']:,} B (float "
        f"values without reuse: {r['float_values_bytes']:,} B) | {r['accuracy']:.1f} % | "
        f"{r['engine_accuracy_test_split']:.1f} % of {r['test_split']:,} |",
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The emulated M4 run alone, on an engine file you already have:

        python -m bench.cortex_m4 --engine FILE [--data mnist-5k] [--images 200] [--json FILE]

    The same measurement and targets as ``bench/embedded.py``'s M4 rows (which also trains a
    model when given none and writes BENCHMARKS.md's ``embedded`` section); this one writes
    only its JSON. With ``--resnet`` (``--engine`` optional: an engine graph), a binary ResNet
    graph instead, and BENCHMARKS.md's ``cortex-m4-resnet`` section unless ``--no-write``."""
    import argparse
    import datetime as dt
    import tempfile

    from bench.common import write_json, write_section

    parser = argparse.ArgumentParser(description="an exported model as firmware under QEMU")
    parser.add_argument("--engine", type=Path,
                        help="fully binary HyBNN engine file (`hybnn export HEAD --encoder B`), "
                        "or with --resnet an engine graph (default: RESNET trained here)")
    parser.add_argument("--resnet", action="store_true", help="a binary ResNet graph")
    parser.add_argument("--data", default="mnist-5k", help="data set of the test images")
    parser.add_argument("--images", type=int, default=200, help="test images in the firmware")
    parser.add_argument("--json", type=Path, help="write the targets as JSON here")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        parser.error(f"needs {', '.join(missing)} (make toolchains)")
    if args.engine is None and not args.resnet:
        parser.error("--engine is required without --resnet")
    from bench.embedded import emulated_m4, m4_targets, tool_version

    with tempfile.TemporaryDirectory() as tmp:
        if args.resnet:
            engine = args.engine or train_resnet(args.data, Path(tmp) / "resnet.engine")
            m4 = emulated_resnet(engine, args.data, args.images, Path(tmp))
            found = resnet_targets(m4)
        else:
            m4 = emulated_m4(args.engine, args.data, args.images, Path(tmp))
            found = m4_targets(m4)
    for t in found:
        print(f"- {t['name']}: {t['value']} — {t['goal']}: {'met' if t['met'] else 'MISSED'}")
    if args.resnet:
        m4.update(date=dt.date.today().isoformat(), compiler=tool_version(CC) or CC,
                  qemu=tool_version(QEMU) or QEMU, flags=" ".join(CORTEX_M4_FLAGS))
        command = "python -m bench.cortex_m4 " + " ".join(argv if argv is not None
                                                          else sys.argv[1:])
        text = resnet_markdown(m4, command.strip())
        print(text)
        if not args.no_write:
            write_section("cortex-m4-resnet", text)
    if args.json:
        write_json(args.json, found, cortex_m4_run=m4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
