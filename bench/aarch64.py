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

Engine graphs (:func:`write_graph`): the driver's ``graph`` mode runs the fused plan of
``hybnn.engine.graph`` step by step with the engine's kernels (binary layers, the fused float
epilogues, float convolutions and pooling of ``csrc/float_ops.c``), end to end or replayed on
the x86 engine's inputs of each step. ``--resnet cifar imagenet`` counts the binary ResNet-18
at 32x32 and 224x224 (batch 1), per part (binary layers, epilogues, float convolutions, other
float ops: each part's steps run three times instead of once), with each kernel table, next to
its C export (``hybnn export --format c`` built for aarch64), and writes the ``aarch64-resnet``
section instead of ``aarch64``:

    python -m bench.aarch64 --resnet cifar imagenet [--json FILE] [--no-write]

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybnn.engine import format as fmt
from hybnn.engine import load, packed
from hybnn.engine.graph import GraphModel
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
SOURCES = ("network", "dispatch", "threads", "float_ops", "kernels_scalar", "kernels_avx2",
           "kernels_avx512", "kernels_neon")
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
        parts += _layer_record(spec)
    path.write_bytes(b"".join(parts))
    model = load(engine_path)
    assert isinstance(model, PackedModel)
    return model


def _layer_record(spec: tuple) -> list[bytes]:
    """One layer tuple of the C extension as the driver reads it (``read_layer``)."""
    dims, blobs = (spec[1:8], spec[8:]) if spec[0] == "conv" else (
        (*spec[1:4], 0, 0, 0, 0), spec[4:])
    return [struct.pack("=8q", _KIND[spec[0]], *dims), *map(_blob, blobs)]


def _blob(arr: np.ndarray | None) -> bytes:
    data = b"" if arr is None else np.ascontiguousarray(arr).tobytes()
    return struct.pack("=q", len(data)) + data


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


# ---- graphs: the fused plan of hybnn.engine.graph as a program for the driver -------------

# parts of a graph run, bit p of the driver's MASK: each step belongs to one
GRAPH_PARTS = ("binary layers", "fused epilogues", "float convolutions", "other float ops")
_STEP = {"bin": 0, "ew": 1, "conv": 2, "pool": 3, "dense": 4, "affine": 5, "prelu": 6, "add": 7,
         "mean": 8, "copy": 9}
_VALUE = {"float": 0, "bits": 1, "acc": 2}
_PART = {"bin": 0, "ew": 1, "conv": 2}  # every other step: part 3


@dataclass
class GraphStep:
    """One compiled call (or numpy op) of the plan; value ids: 0 the input, node j's j + 1."""

    kind: str
    feed: list[int]  # values it reads that the x86 engine's run keeps (replay feeds them)
    out: list[int]  # values it writes
    ints: list[int]
    blobs: list[np.ndarray | None] = field(default_factory=list)
    layer: tuple | None = None  # a binary layer's tuple (graph.binary_spec)

    @property
    def part(self) -> int:
        return _PART.get(self.kind, 3)


def _id(j: int | None) -> int:
    return -1 if j is None else j + 1


def graph_steps(model: GraphModel, arrays: dict[str, np.ndarray]
                ) -> tuple[list[GraphStep], list[tuple[str, tuple]]]:
    """(steps, values (kind, (C, H, W))) of the model's fused plan, in its order; ``arrays``:
    the engine file's."""
    from hybnn.engine.graph import binary_spec, check_graph

    _, nodes, layers = check_graph(model.header, arrays)
    values = [("float", model.input_shape)] + [(n.out.kind, n.out.shape) for n in nodes]
    assert model._plan is not None
    steps: list[GraphStep] = []
    for st in model._plan:
        members, ew, keep, sign = st.chain or (st.members, None, None, None)
        i = members[0]
        node = nodes[i]
        src, a, p = _id(node.inputs[0]), node.arrays, node.params
        if node.op == "conv2d":  # with the batch norm it stores through, if fused
            bn = nodes[keep].arrays if st.chain else {}
            out = _id(keep if st.chain else i)
            steps.append(GraphStep("conv", [src], [out], [src, out, p["kernel_size"], p["stride"],
                                   p["padding"]], [a["weight"], a.get("bias"), bn.get("scale"),
                                                   bn.get("shift")]))
        elif st.chain is not None:  # [binary conv ->] per-channel float steps [-> sign]
            source, feed = src, [src]
            if node.op == "bconv2d":
                source, feed = len(values), []
                values.append(("acc", node.out.shape))
                steps.append(GraphStep("bin", [src], [], [src, source, 1], [None],
                                       binary_spec(node, layers[i])))
            ints = [source, _id(keep), _id(sign), len(ew)]
            blobs = [a.get("alpha") if node.op == "bconv2d" else None,
                     nodes[sign].arrays.get("shift") if sign is not None else None]
            for op, sa, sb, other in ew:
                ints += [op, _id(other)]
                blobs += [sa, sb]
                feed += [_id(other)] if other is not None else []
            steps.append(GraphStep("ew", feed, [_id(k) for k in st.outputs], ints, blobs))
        elif node.op in ("bconv2d", "bdense"):
            mode = 0 if p["mode"] == "signs" else 2
            steps.append(GraphStep("bin", [src], [_id(i)], [src, _id(i), mode],
                                   [a.get("alpha")], binary_spec(node, layers[i])))
        elif node.op in ("maxpool2d", "avgpool2d"):
            steps.append(GraphStep("pool", [src], [_id(i)], [
                src, _id(i), p["kernel_size"], p["stride"], p["padding"],
                int(node.op == "avgpool2d"), int(bool(p.get("count_include_pad")))]))
        elif node.op in ("dense", "affine", "prelu", "global_avgpool", "flatten", "add"):
            kind = {"global_avgpool": "mean", "flatten": "copy"}.get(node.op, node.op)
            ins = [_id(j) for j in node.inputs]
            extra: list[np.ndarray | None] = []
            if node.op == "dense":
                extra = [a["weight"], a.get("bias")]
            elif node.op == "affine":  # scale 1: x + shift, as numpy runs it
                extra = [None if (a["scale"] == 1).all() else a["scale"], a["shift"]]
            elif node.op == "prelu":
                extra = [a["slope"]]
            steps.append(GraphStep(kind, ins, [_id(i)], [*ins, _id(i)], extra))
        else:
            raise ValueError(f"no driver step for {node.op}")
    return steps, values


def write_graph(engine_path: str | Path, path: Path) -> tuple[GraphModel, list[GraphStep]]:
    """Write the engine graph's fused plan for the driver (``neon_driver graph``); returns the
    model loaded on this host and the steps."""
    model = load(engine_path)
    if not isinstance(model, GraphModel):
        raise ValueError(f"{engine_path} is not an engine graph")
    steps, values = graph_steps(model, fmt.read(engine_path)[1])
    parts = [b"HYBGRF01", struct.pack("=2q", len(values), model._output + 1)]
    parts += [struct.pack("=4q", _VALUE[kind], *shape) for kind, shape in values]
    parts.append(struct.pack("=q", len(steps)))
    for st in steps:
        parts.append(struct.pack("=2q", _STEP[st.kind], st.part))
        for ids in (st.feed, st.out, st.ints):
            parts.append(struct.pack(f"={1 + len(ids)}q", len(ids), *ids))
        if st.layer is not None:
            parts += _layer_record(st.layer)
        parts.append(struct.pack("=q", len(st.blobs)))
        parts += [_blob(None if b is None else np.asarray(b)) for b in st.blobs]
    path.write_bytes(b"".join(parts))
    return model, steps


def _value_dtype(model: GraphModel, j: int) -> np.dtype:
    return np.dtype(np.uint64) if j > 0 and model.nodes[j - 1].out.kind == "bits" else np.dtype(
        np.float32)


def _value_shape(model: GraphModel, j: int, n: int) -> tuple[int, ...]:
    if j == 0:
        return (n, *model.input_shape)
    out = model.nodes[j - 1].out
    c, h, w = out.shape
    return (n, h, w, -(-c // 64)) if out.kind == "bits" else (n, c, h, w)


def _read_values(model: GraphModel, raw: bytes, ids: list[int], n: int, at: int
                 ) -> tuple[list[np.ndarray], int]:
    got = []
    for j in ids:
        shape, dtype = _value_shape(model, j, n), _value_dtype(model, j)
        size = int(np.prod(shape)) * dtype.itemsize
        got.append(np.frombuffer(raw[at : at + size], dtype).reshape(shape))
        at += size
    return got, at


def run_graph(exe: Path, prog: Path, model: GraphModel, steps: list[GraphStep], x: np.ndarray,
              isa: str, mode: str = "run", values: dict[int, np.ndarray] | None = None
              ) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """The aarch64 build on images ``x``: (the output value, each step's outputs). ``mode``
    "run": the outputs stay empty; "trace": every step's, of the run; "replay": each step on
    ``values`` (``GraphModel.run(x, keep=True)`` of this host: node index -> value) for its
    inputs."""
    n = len(x)
    feed = [_feed(x)]
    if mode == "replay":
        assert values is not None
        feed = [struct.pack("=I", n)] + [np.ascontiguousarray(values[j - 1]).tobytes()
                                        for st in steps for j in st.feed]
    proc = _run([QEMU, str(exe), "graph", str(prog), isa, mode, "1", "0"],
                input=b"".join(feed), timeout=600)
    raw, at, outs = proc.stdout, 0, []
    if mode == "replay":
        for st in steps:
            got, at = _read_values(model, raw, st.out, n, at)
            outs.append(got)
    (logits,), at = _read_values(model, raw, [model._output + 1], n, at)
    if mode == "trace":
        for st in steps:
            got, at = _read_values(model, raw, st.out, n, at)
            outs.append(got)
    if at != len(raw):
        raise RuntimeError(f"driver wrote {len(raw)} bytes, expected {at}")
    return logits.reshape(n, -1), outs


def graph_instructions(exe: Path, plugin: Path, prog: Path, x: np.ndarray, isa: str,
                       mask: int) -> int:
    """Guest instructions of the driver running the graph with the parts in ``mask`` three
    times."""
    proc = _run([QEMU, "-plugin", str(plugin), str(exe), "graph", str(prog), isa, "run", "3",
                 str(mask)], input=_feed(x), timeout=900)
    return _plugin_count(proc)


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
    return _plugin_count(proc)


def _plugin_count(proc: subprocess.CompletedProcess) -> int:
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


# ---- the binary ResNet-18 graphs (--resnet) ----------------------------------------------

GEOMETRIES = {"cifar": (32, 10), "imagenet": (224, 1000)}  # stem -> (side, classes): bench.resnet
C_DRIVER = ROOT / "tests" / "engine" / "c_graph_driver.c"
CHECK_IMAGES = {"cifar": 4, "imagenet": 2}  # random images compared with the x86 engine


def _agreement(logits: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    """Classes equal and the largest logit difference relative to the largest logit (the C
    export test's bound: 1e-4)."""
    return {"classes_equal": int((logits.argmax(1) == want.argmax(1)).sum()),
            "max_rel_diff": float(np.abs(logits - want).max() / np.abs(want).max()),
            "images_checked": len(want)}


def _c_export_row(engine_path: Path, x: np.ndarray, want: np.ndarray, plugin: Path,
                  tmp: Path) -> dict[str, Any]:
    """``hybnn export --format c`` built for aarch64 (the host flags, -static) with the C
    export test's driver: agreement, and (3 images - 1 image) / 2 instructions."""
    from hybnn.engine.c_export import HOST_FLAGS, write_c

    write_c(engine_path, tmp / "c", "model")
    exe = tmp / "c" / "model-aarch64"
    _run([CC, *HOST_FLAGS, "-static", f"-I{tmp / 'c'}", str(tmp / "c" / "model.c"),
          str(C_DRIVER), "-o", str(exe)], text=True)
    proc = _run([QEMU, str(exe)], input=_feed(x), timeout=900)
    n, k = want.shape
    logits = np.frombuffer(proc.stdout[4 * n :], np.float32).reshape(n, k)
    counts = [_plugin_count(_run([QEMU, "-plugin", str(plugin), str(exe)],
                                 input=_feed(np.repeat(x[:1], reps, axis=0)), timeout=900))
              for reps in (1, 3)]
    return {"build": "C export (portable C99, -O2)", "insns_per_image": (counts[1] - counts[0]) / 2,
            "flags": " ".join((*HOST_FLAGS, "-static")), **_agreement(logits, want)}


def measure_resnet(stems: list[str], tmp: Path) -> dict[str, Any]:
    """Per geometry: the engine's fused plan under the driver with each kernel table
    (instructions per image at batch 1, split by part), and the C export."""
    import torch

    from hybnn.engine import export_model
    from hybnn.machine import cpu_model
    from hybnn.models.binary_resnet import BinaryResNet

    exe, plugin = build_driver(tmp / "build"), build_plugin(tmp / "build")
    rows: list[dict[str, Any]] = []
    for stem in stems:
        side, classes = GEOMETRIES[stem]
        torch.manual_seed(0)
        engine_path = tmp / f"resnet18-{stem}.engine"
        export_model(BinaryResNet(classes, 3, 64, stem=stem, image_size=(side, side)).eval(),
                     engine_path)
        prog = tmp / f"resnet18-{stem}.graph"
        model, steps = write_graph(engine_path, prog)
        x = np.random.default_rng(0).standard_normal((CHECK_IMAGES[stem], 3, side, side),
                                                     dtype=np.float32)
        want = model.logits(x)
        geometry = f"{side}x{side} ({stem} stem, {classes} classes)"
        for isa in ISAS:
            logits = run_graph(exe, prog, model, steps, x, isa)[0]
            once = graph_instructions(exe, plugin, prog, x[:1], isa, 0)
            per_part = {name: (graph_instructions(exe, plugin, prog, x[:1], isa, 1 << p) - once)
                        / 2 for p, name in enumerate(GRAPH_PARTS)}
            total = (graph_instructions(exe, plugin, prog, x[:1], isa, 2**len(GRAPH_PARTS) - 1)
                     - once) / 2
            rows.append({"geometry": geometry, "stem": stem, "build": f"engine, {isa} kernels",
                         "isa": isa, "insns_per_image": total, "parts": per_part,
                         "real_share": 1 - per_part[GRAPH_PARTS[0]] / total,
                         **_agreement(logits, want)})
            print(f"ResNet-18 {geometry}, engine {isa}: {total:,.0f} instructions per image",
                  file=sys.stderr)
        rows.append({"geometry": geometry, "stem": stem, "isa": None,
                     **_c_export_row(engine_path, x, want, plugin, tmp / stem)})
        print(f"ResNet-18 {geometry}, C export: {rows[-1]['insns_per_image']:,.0f}",
              file=sys.stderr)
    return {"rows": rows, "date": dt.date.today().isoformat(), "host": cpu_model(),
            "compiler": _version(CC), "qemu": _version(QEMU), "flags": " ".join(CFLAGS)}


def resnet_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    from bench.common import target

    found = []
    for r in res["rows"]:
        n, name = r["images_checked"], f"aarch64 ResNet-18 {r['geometry']}, {r['build']}"
        ok = r["classes_equal"] == n and r["max_rel_diff"] <= 1e-4
        found += [
            target(f"{name}: logits vs the x86 engine",
                   f"{r['classes_equal']}/{n} classes, largest difference "
                   f"{r['max_rel_diff']:.1e} of the largest logit",
                   "classes equal, within float32 rounding (1e-4)", ok),
            target(f"{name}: instructions per image", round(r["insns_per_image"]),
                   "measured (qemu TCG plugin, exact count)", ok),
        ]
    for stem in dict.fromkeys(r["stem"] for r in res["rows"]):
        by = {r["isa"]: r for r in res["rows"] if r["stem"] == stem}
        found.append(target(f"aarch64 ResNet-18 {by['neon']['geometry']}: scalar / NEON "
                            "instructions per image (x)",
                            round(by["scalar"]["insns_per_image"] / by["neon"]["insns_per_image"],
                                  2), "recorded (the float parts run the same C on both)", True))
    return found


def resnet_markdown(res: dict[str, Any], command: str) -> str:
    lines = ["## aarch64: binary ResNet-18 graphs (qemu-aarch64, instructions per image)", "",
             f"Command: `{command}` ({res['date']}), emulated on {res['host']}. "
             f"{res['compiler']}; {res['qemu']}. ReActNet's binary ResNet-18 "
             "(`hybnn.models.binary_resnet`, width 64, random weights: the counts do not depend "
             "on them) exported to an engine graph. **Engine**: the engine's C core (flags "
             f"`{res['flags']}`) run by `tests/engine/neon_driver.c` as "
             "`hybnn.engine.graph` runs its fused plan: binary layers, fused float epilogues "
             "(batch norm, shortcut add, RPReLU, the next sign packed), float convolutions (stem "
             "and 1x1 shortcuts, with their batch norm) and pooling in the engine's kernels "
             "(`csrc/float_ops.c`: its portable loops on aarch64, no NEON intrinsics); the global "
             "mean, flatten and the classifier as plain C loops where the engine uses numpy. "
             "Instructions of one image (batch 1, 1 thread), counted exactly by a TCG plugin: "
             "each part's steps run three times instead of once, difference / 2. **C export**: "
             "`hybnn export --format c` built with its host flags for aarch64 (portable C99, "
             "no intrinsics) and `tests/engine/c_graph_driver.c`; (3 images - 1 image) / 2, "
             "reading an image included. Real-valued share: every part but the binary layers. "
             "**Instructions, not cycles**: qemu-user does not model a core's timing. "
             "Agreement: random normal images, logits against the x86 engine's (its AVX2 float "
             "convolutions use FMA, so within float32 rounding, not bit-exact; bit-exactness of "
             "each kernel is tests/engine/test_neon.py).", "",
             "| geometry | build | instructions per image | binary layers | fused epilogues "
             "| float convolutions | other float ops | real-valued share | vs the x86 engine |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        parts = ([f"{r['parts'][p]:,.0f}" for p in GRAPH_PARTS] + [f"{100 * r['real_share']:.1f} %"]
                 if "parts" in r else ["–"] * (len(GRAPH_PARTS) + 1))
        lines.append(f"| {r['geometry']} | {r['build']} | {r['insns_per_image']:,.0f} | "
                     f"{' | '.join(parts)} | {r['classes_equal']}/{r['images_checked']} classes, "
                     f"{r['max_rel_diff']:.1e} |")
    lines.append("")
    for stem in dict.fromkeys(r["stem"] for r in res["rows"]):
        by = {r["isa"]: r for r in res["rows"] if r["stem"] == stem}
        s, n, c = by["scalar"], by["neon"], by[None]
        b = GRAPH_PARTS[0]
        lines.append(f"- {n['geometry']}: scalar / NEON "
                     f"{s['insns_per_image'] / n['insns_per_image']:.2f}x in all, "
                     f"{s['parts'][b] / n['parts'][b]:.2f}x in the binary layers; the C export "
                     f"takes {c['insns_per_image'] / n['insns_per_image']:.2f}x the engine's "
                     "NEON instructions.")
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
    parser.add_argument("--resnet", nargs="+", choices=sorted(GEOMETRIES), metavar="STEM",
                        help="measure the binary ResNet-18 graphs of these geometries (cifar: "
                        "32x32, imagenet: 224x224) instead of the chain networks; writes the "
                        "aarch64-resnet section")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        parser.error(f"needs {', '.join(missing)} (make toolchains)")
    from bench.common import write_json, write_section

    with tempfile.TemporaryDirectory() as tmp:
        res = measure_resnet(args.resnet, Path(tmp)) if args.resnet else measure(args, Path(tmp))
    found = resnet_targets(res) if args.resnet else targets(res)
    for t in found:
        print(f"- {t['name']}: {t['value']} — {t['goal']}: {'met' if t['met'] else 'MISSED'}")
    command = "python -m bench.aarch64 " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (resnet_markdown if args.resnet else markdown)(res, command.strip())
    print(text)
    if not args.no_write:
        write_section("aarch64-resnet" if args.resnet else "aarch64", text)
    if args.json:
        write_json(args.json, found, **{"aarch64_resnet" if args.resnet else "aarch64": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
