"""The engine's NEON kernels on aarch64 under qemu-aarch64: instructions per image, NEON vs scalar.

The engine's C core (``src/hybnn/engine/csrc`` without the CPython module) and the driver
``tests/engine/neon_driver.c`` are cross-built with ``aarch64-linux-gnu-gcc`` (setup.py's
flags, ``-static``) and run under ``qemu-aarch64``. Each network is an engine file, handed to
the driver as the same layer tuples ``hybnn.engine.packed`` gives the C extension
(:func:`write_net`). For each network and each kernel table (``scalar``, ``neon``):

* its logits on real test images must equal the x86 engine's, as float32 bits;
* instructions per image: a TCG plugin (``bench/qemu_insn_plugin.c``, built here) counts every
  executed guest instruction; the driver runs the batch once and three times, and the
  difference over 2 x images is the cost of ``hyb_net_run`` per image (float input: packing
  included; process start, file reading and output excluded).

Instructions, not cycles: qemu-user emulates the instruction set, not a core's timing; a NEON
instruction and a scalar one count the same. The networks are paper-sized, with random
weights unless ``--head`` / ``--cnn`` / ``--fb`` name engine files: the kernels have no
data-dependent branches, so the counts do not depend on the weights or the pixels. The head
takes random ±1 codes; the image networks take real test images (``--data``).

    python -m bench.aarch64 [--fb FILE] [--head FILE] [--cnn FILE] [--data mnist-5k]
                            [--images 32] [--json FILE] [--no-write]

``tests/engine/test_neon.py`` uses the build and run helpers here for its exactness checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/NAME.py`: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import datetime as dt
import shutil
import struct
import subprocess
import tempfile
from typing import Any

import numpy as np

from hybnn.engine import format as fmt
from hybnn.engine import load, packed
from hybnn.engine.packed import IN_FLOAT, IN_WORDS, OUT_LOGITS, PackedModel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CSRC = ROOT / "src" / "hybnn" / "engine" / "csrc"
DRIVER = ROOT / "tests" / "engine" / "neon_driver.c"
PLUGIN = HERE / "qemu_insn_plugin.c"
CC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
# setup.py's flags for the extension (-O3, no contraction of a * b + c), -Werror, and -static so
# that qemu-user needs no aarch64 libc
CFLAGS = ("-O3", "-std=gnu11", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall", "-Wextra",
          "-Werror", "-Wno-unknown-pragmas", "-static")
# every C source of the extension except the CPython module
SOURCES = ("network", "dispatch", "threads", "kernels_scalar", "kernels_avx2", "kernels_avx512",
           "kernels_neon")
ISAS = ("scalar", "neon")
GOAL_RATIO = 2.0  # NEON: at least 2x fewer instructions per image than scalar on conv networks
_KIND = {"conv": 0, "dense": 1, "out": 2}


def missing_tools() -> list[str]:
    """Programs a run needs that are not on PATH (Debian: gcc-aarch64-linux-gnu, qemu-user)."""
    return [t for t in (CC, QEMU) if shutil.which(t) is None]


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, **kw)
    if proc.returncode:
        err = proc.stderr
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} ... failed ({proc.returncode}): {err}")
    return proc


def build_driver(out: Path) -> Path:
    """``out/neon_driver``: the engine's C core and the driver, static for aarch64."""
    out.mkdir(parents=True, exist_ok=True)
    exe = out / "neon_driver"
    _run([CC, *CFLAGS, f"-I{CSRC}", str(DRIVER), *(str(CSRC / f"{s}.c") for s in SOURCES),
          "-o", str(exe), "-lpthread", "-lm"], text=True)
    return exe


def write_net(engine_path: str | Path, path: Path) -> PackedModel:
    """Write the engine file's network for the driver; returns the file loaded on this host.

    The layers are the tuples the C extension is built from (``packed._network``, after every
    check of the loader), each field as int64 and each array as int64 byte count + raw bytes."""
    header, arrays, _ = fmt.read(engine_path)
    in_spec, _, native = packed._network(header, arrays)
    image = in_spec[0] == "image"
    c, h, w = in_spec[1:4] if image else (in_spec[1], 1, 1)
    shift = in_spec[4] if image else 0.0
    shift_bits = struct.unpack("=I", struct.pack("=f", shift))[0]
    parts = [b"HYBNET01", struct.pack("=6q", image, c, h, w, shift_bits, len(native))]
    for spec in native:
        dims, blobs = (spec[1:8], spec[8:]) if spec[0] == "conv" else (
            (*spec[1:4], 0, 0, 0, 0), spec[4:])
        parts.append(struct.pack("=8q", _KIND[spec[0]], *dims))
        for arr in blobs:
            data = b"" if arr is None else np.ascontiguousarray(arr).tobytes()
            parts += [struct.pack("=q", len(data)), data]
    path.write_bytes(b"".join(parts))
    return load(engine_path)


def _feed(x: np.ndarray) -> bytes:
    return struct.pack("=I", len(x)) + np.ascontiguousarray(x).tobytes()


def _counts(model: PackedModel, n: int) -> list[int]:
    """int32 items per layer of a trace of n samples (NHWC for convolutions)."""
    return [n * g.out_height * g.out_width * g.out_channels for g in model.geometry]


def run_driver(exe: Path, net: Path, model: PackedModel, x: np.ndarray, words: bool, isa: str,
               trace: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """(logits, per-layer accumulators if ``trace``) of the aarch64 build on ``x``: float32
    inputs, or packed uint64 words when ``words``."""
    mode = ["floats", "words"][words]
    proc = _run([QEMU, str(exe), "net", str(net), mode, isa, ["run", "trace"][trace], "1"],
                input=_feed(x), timeout=600)
    n, k = len(x), model.num_classes
    raw = proc.stdout
    logits = np.frombuffer(raw[: 4 * n * k], np.float32).reshape(n, k)
    accs, at = [], 4 * n * k
    for count in _counts(model, n) if trace else []:
        accs.append(np.frombuffer(raw[at : at + 4 * count], np.int32))
        at += 4 * count
    if at != len(raw):
        raise RuntimeError(f"driver wrote {len(raw)} bytes, expected {at}")
    return logits, accs


def x86_reference(model: PackedModel, x: np.ndarray, words: bool,
                  trace: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """The same outputs from the engine on this host (its C extension, ``Network.run/trace``)."""
    n, kind = len(x), [IN_FLOAT, IN_WORDS][words]
    logits = np.empty((n, model.num_classes), np.float32)
    if model._net.run(x, kind, n, logits, OUT_LOGITS, 1):
        raise RuntimeError("the engine refused the input")
    accs = [np.empty(c, np.int32) for c in _counts(model, n)] if trace else []
    if trace and model._net.trace(x, kind, n, accs, 1):
        raise RuntimeError("the engine refused the input")
    return logits, accs


def build_plugin(out: Path) -> Path:
    """The instruction-counting TCG plugin, built with the host's C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("needs a host C compiler for the qemu plugin")
    lib = out / "libinsn_count.so"
    _run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", str(PLUGIN), "-o",
          str(lib)], text=True)
    return lib


def instructions(exe: Path, plugin: Path, net: Path, x: np.ndarray, isa: str, reps: int) -> int:
    """Guest instructions of the whole driver process running the batch ``reps`` times."""
    proc = _run([QEMU, "-plugin", str(plugin), str(exe), "net", str(net), "floats", isa, "run",
                 str(reps)], input=_feed(x), timeout=600)
    lines = [ln for ln in proc.stderr.decode().splitlines() if ln.startswith("insns ")]
    if len(lines) != 1:
        raise RuntimeError(f"the plugin reported no count: {proc.stderr[-300:]!r}")
    return int(lines[0].split()[1])


def per_image(exe: Path, plugin: Path, net: Path, x: np.ndarray, isa: str) -> float:
    """Instructions of ``hyb_net_run`` per image: (3 passes - 1 pass) / (2 * images)."""
    once, thrice = (instructions(exe, plugin, net, x, isa, r) for r in (1, 3))
    return (thrice - once) / (2 * len(x))


# ---- the bench --------------------------------------------------------------------------------


def _models(args: argparse.Namespace, tmp: Path) -> dict[str, Path]:
    """Engine files: those given, else paper-sized models with random weights."""
    import torch

    from bench.embedded import random_model
    from hybnn.engine import export_model
    from hybnn.models import BinaryEncoder, BNNHead, FullyBinaryHyBNN

    paths = {}
    for name, given in (("fully binary HyBNN", args.fb), ("BNN head", args.head),
                        ("binary CNN", args.cnn)):
        if given is not None:
            paths[name] = Path(given)
            continue
        if name == "fully binary HyBNN":  # encoder convs 32/64/128, 200 bits, head 512 -> 10
            torch.manual_seed(0)
            model = FullyBinaryHyBNN(BinaryEncoder((28, 28), latent_bits=200),
                                     BNNHead(200, 10, (512,)))
            with torch.no_grad():  # random batch norms, as random_model draws them
                for m in model.modules():
                    if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                        assert m.running_mean is not None and m.running_var is not None
                        m.weight.normal_()
                        m.bias.normal_()
                        m.running_mean.normal_(0, 4)
                        m.running_var.uniform_(0.5, 20)
            model.eval()
        else:
            model = random_model("head" if name == "BNN head" else "cnn")
        paths[name] = tmp / f"{name.replace(' ', '-')}.engine"
        export_model(model, paths[name])
    return paths


def _inputs(model: PackedModel, images: np.ndarray, n: int) -> np.ndarray:
    if model.in_bits is not None:  # codes: random ±1 (the counts do not depend on them)
        rng = np.random.default_rng(0)
        return np.where(rng.random((n, model.in_bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    if model.input_prep == "centered":  # the engine centres [0, 1] pixels itself
        return images[:n]
    return images[:n] - np.float32(0.5)


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from hybnn.data import load_source, train_test
    from hybnn.machine import cpu_model

    exe, plugin = build_driver(tmp / "build"), build_plugin(tmp / "build")
    _, test = train_test(load_source(args.data))
    images = np.ascontiguousarray(test.x[: args.images], np.float32)
    rows: list[dict[str, Any]] = []
    for name, engine_path in _models(args, tmp).items():
        net = tmp / f"{len(rows)}.net"
        model = write_net(engine_path, net)
        x = _inputs(model, images, args.images)
        ref = x86_reference(model, x, words=False)[0].view(np.uint32)
        row: dict[str, Any] = {"model": name, "layers": [g.op for g in model.geometry],
                               "images": len(x), "engine": str(engine_path)}
        for isa in ISAS:
            got = run_driver(exe, net, model, x, False, isa)[0].view(np.uint32)
            row[f"{isa}_equal"] = int((got == ref).all(axis=1).sum())
            row[f"{isa}_insns_per_image"] = round(per_image(exe, plugin, net, x, isa))
        row["ratio"] = row["scalar_insns_per_image"] / row["neon_insns_per_image"]
        rows.append(row)
        print(f"{name}: scalar {row['scalar_insns_per_image']:,} / NEON "
              f"{row['neon_insns_per_image']:,} instructions per image = {row['ratio']:.2f}x",
              file=sys.stderr)
    return {"rows": rows, "data": args.data, "date": dt.date.today().isoformat(),
            "host": cpu_model(), "compiler": _version(CC), "qemu": _version(QEMU),
            "flags": " ".join(CFLAGS)}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    from bench.common import target

    found = []
    for r in res["rows"]:
        conv = "conv2d" in r["layers"]
        n = r["images"]
        found += [
            target(f"aarch64 {r['model']}: scalar and NEON logits vs the x86 engine",
                   f"{min(r['scalar_equal'], r['neon_equal'])} of {n} images bit-equal",
                   "bit-exact", r["scalar_equal"] == r["neon_equal"] == n),
            target(f"aarch64 {r['model']}: instructions per image, scalar kernels",
                   r["scalar_insns_per_image"], "measured (qemu TCG plugin, exact count)",
                   r["scalar_equal"] == n),
            target(f"aarch64 {r['model']}: instructions per image, NEON kernels",
                   r["neon_insns_per_image"], "measured (qemu TCG plugin, exact count)",
                   r["neon_equal"] == n),
            target(f"aarch64 {r['model']}: scalar / NEON instructions per image (x)",
                   round(r["ratio"], 2),
                   f">= {GOAL_RATIO:g}x fewer with NEON" if conv else "none (dense only): recorded",
                   r["ratio"] >= GOAL_RATIO if conv else True),
        ]
    return found


def markdown(res: dict[str, Any], command: str) -> str:
    lines = ["## aarch64: NEON vs scalar kernels (qemu-aarch64, instructions per image)", "",
             f"Command: `{command}` ({res['date']}), emulated on {res['host']}. "
             f"{res['compiler']}, flags `{res['flags']}`; {res['qemu']}. Instructions of "
             "`hyb_net_run` per image (float input, packing included, 1 thread, batches of "
             f"{res['rows'][0]['images']}), counted exactly by a TCG plugin "
             "(`bench/qemu_insn_plugin.c`): one pass and three passes over the batch, "
             "difference / (2 x images). **Instructions, not "
             "cycles**: qemu-user does not model a core's timing. Random paper-sized weights "
             "unless the command names engine files (the kernels have no data-dependent "
             f"branches); images: the first {res['rows'][0]['images']} {res['data']} test images "
             "(the head: random ±1 codes).", "",
             "| model | layers | scalar | NEON | scalar / NEON | logits = x86 engine |",
             "|---|---|---:|---:|---:|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['model']} | {', '.join(r['layers'])} | "
                     f"{r['scalar_insns_per_image']:,} | {r['neon_insns_per_image']:,} | "
                     f"{r['ratio']:.2f}x | scalar {r['scalar_equal']}/{r['images']}, "
                     f"NEON {r['neon_equal']}/{r['images']} |")
    return "\n".join(lines) + "\n"


def _version(cmd: str) -> str:
    proc = subprocess.run([cmd, "--version"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="NEON vs scalar kernels under qemu-aarch64")
    parser.add_argument("--fb", help="fully binary HyBNN engine file (default: random weights)")
    parser.add_argument("--head", help="BNN head engine file (default: random 200 -> 128 -> 2)")
    parser.add_argument("--cnn", help="binary CNN engine file (default: random, 28x28)")
    parser.add_argument("--data", default="mnist-5k", help="data set of the test images")
    parser.add_argument("--images", type=int, default=32, help="images per pass")
    parser.add_argument("--json", type=Path, help="write the targets as JSON here")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        parser.error(f"needs {', '.join(missing)} (make toolchains)")
    from bench.common import write_json, write_section

    with tempfile.TemporaryDirectory() as tmp:
        res = measure(args, Path(tmp))
    found = targets(res)
    for t in found:
        print(f"- {t['name']}: {t['value']} — {t['goal']}: {'met' if t['met'] else 'MISSED'}")
    command = "python -m bench.aarch64 " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(res, command.strip())
    print(text)
    if not args.no_write:
        write_section("aarch64", text)
    if args.json:
        write_json(args.json, found, aarch64=res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
