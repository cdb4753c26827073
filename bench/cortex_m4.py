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
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import shutil
import subprocess
from dataclasses import dataclass

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


def main(argv: list[str] | None = None) -> int:
    """The emulated M4 run alone, on an engine file you already have:

        python -m bench.cortex_m4 --engine FILE [--data mnist-5k] [--images 200] [--json FILE]

    The same measurement and targets as ``bench/embedded.py``'s M4 rows (which also trains a
    model when given none and writes BENCHMARKS.md's ``embedded`` section); this one writes
    only its JSON."""
    import argparse
    import tempfile

    from bench.common import write_json

    parser = argparse.ArgumentParser(description="fully binary HyBNN firmware under QEMU")
    parser.add_argument("--engine", type=Path, required=True,
                        help="fully binary HyBNN engine file (`hybnn export HEAD --encoder B`)")
    parser.add_argument("--data", default="mnist-5k", help="data set of the test images")
    parser.add_argument("--images", type=int, default=200, help="test images in the firmware")
    parser.add_argument("--json", type=Path, help="write the targets as JSON here")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        parser.error(f"needs {', '.join(missing)} (make toolchains)")
    from bench.embedded import emulated_m4, m4_targets

    with tempfile.TemporaryDirectory() as tmp:
        m4 = emulated_m4(args.engine, args.data, args.images, Path(tmp))
    found = m4_targets(m4)
    for t in found:
        print(f"- {t['name']}: {t['value']} — {t['goal']}: {'met' if t['met'] else 'MISSED'}")
    if args.json:
        write_json(args.json, found, cortex_m4_run=m4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
