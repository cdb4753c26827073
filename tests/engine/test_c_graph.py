"""C99 export of engine graphs (binary ResNets): built with the host compiler (and for aarch64
under qemu where installed), run on images, checked against the engine: classes equal, logits
within float32 rounding of the float convolutions' sums, NaN refused."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_reference import randomize
from test_engine_graph import Blocks, _randomize

from hybnn.engine import format as fmt
from hybnn.engine import load
from hybnn.engine.c_export import HOST_FLAGS, write_c
from hybnn.engine.c_graph import plan
from hybnn.engine.graph import GraphModel
from hybnn.engine.graph_export import graph_header
from hybnn.models import BinaryCNN
from hybnn.models.binary_resnet import BinaryResNet

HERE = Path(__file__).parent
CC = shutil.which("cc") or shutil.which("gcc")
AARCH64 = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
needs_cc = pytest.mark.skipif(CC is None, reason="no host C compiler (cc/gcc) on PATH")


def _write(model: torch.nn.Module, shape: tuple[int, int, int], tmp: Path) -> Path:
    header, arrays = graph_header(model, shape)
    fmt.write(tmp / "m.engine", header, arrays)
    write_c(tmp / "m.engine", tmp / "c", "model")
    return tmp / "m.engine"


def _build(cc: str, tmp: Path, exe: str, *flags: str) -> Path:
    cmd = [cc, *HOST_FLAGS, *flags, f"-I{tmp / 'c'}", str(tmp / "c" / "model.c"),
           str(HERE / "c_graph_driver.c"), "-o", str(tmp / exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return tmp / exe


def _run(runner: list[str], x: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    blob = struct.pack("=I", n) + np.ascontiguousarray(x, dtype=np.float32).tobytes()
    proc = subprocess.run(runner, input=blob, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    got = np.frombuffer(proc.stdout[: 4 * n], dtype=np.int32)
    return got, np.frombuffer(proc.stdout[4 * n :], dtype=np.float32).reshape(n, classes)


def _agree(engine_path: Path, runner: list[str], x: np.ndarray) -> None:
    engine = load(engine_path)
    assert isinstance(engine, GraphModel)
    x[3, 0, 0, 0] = np.nan
    ok = np.ones(len(x), bool)
    ok[3] = False
    got, logits = _run(runner, x, engine.num_classes)
    assert got[3] == -1  # NaN refused
    want = engine.logits(x[ok])
    scale = np.abs(want).max()
    np.testing.assert_allclose(logits[ok], want, rtol=1e-4, atol=1e-4 * scale)
    assert (got[ok] == want.argmax(1)).all()


def _models() -> list[tuple[str, torch.nn.Module, tuple[int, int, int]]]:
    torch.manual_seed(0)
    return [
        ("reactnet-cifar", _randomize(Blocks(3, 9, [(9, 1), (18, 2), (70, 2)], "reactnet",
                                             "learned", "cifar"), 1), (3, 11, 11)),
        ("bireal-imagenet", _randomize(Blocks(1, 5, [(10, 1), (10, 2)], "bireal", "xnor",
                                              "imagenet"), 2), (1, 29, 23)),
        ("resnet", _randomize(BinaryResNet(4, 1, 8, (1, 1, 1), image_size=(14, 14)), 3),
         (1, 14, 14)),
        # thresholds (packed signs out), a binary dense layer, a float output: no float parts
        ("bcnn", randomize(BinaryCNN(image_size=(9, 7), in_channels=2, num_classes=3,
                                     fc=(70, 20), scaling="learned"), 4), (2, 9, 7)),
    ]


@needs_cc
@pytest.mark.parametrize("case", range(4), ids=[m[0] for m in _models()])
def test_generated_c_agrees_with_the_engine(tmp_path, case):
    _, model, shape = _models()[case]
    engine_path = _write(model, shape, tmp_path)
    assert CC is not None
    exe = _build(CC, tmp_path, "model")
    x = np.random.default_rng(case).standard_normal((12, *shape)).astype(np.float32)
    _agree(engine_path, [str(exe)], x)
    if _models()[case][0] == "bcnn":  # no float convolution: the C is the engine, bit for bit
        ok = np.arange(len(x)) != 3  # _agree made sample 3 NaN
        logits = _run([str(exe)], x, 3)[1][ok]
        np.testing.assert_array_equal(logits, load(engine_path).logits(x[ok]))


@pytest.mark.skipif(None in AARCH64, reason="no aarch64-linux-gnu-gcc / qemu-aarch64")
def test_generated_c_agrees_with_the_engine_on_aarch64_under_qemu(tmp_path):
    _, model, shape = _models()[0]
    engine_path = _write(model, shape, tmp_path)
    gcc, qemu = AARCH64
    assert gcc is not None and qemu is not None
    exe = _build(gcc, tmp_path, "model-aarch64", "-static")
    x = np.random.default_rng(5).standard_normal((8, *shape)).astype(np.float32)
    _agree(engine_path, [qemu, str(exe)], x)


def test_buffers_never_overlap_a_value_still_read(tmp_path):
    _, model, shape = _models()[0]
    engine = load(_write(model, shape, tmp_path))
    assert isinstance(engine, GraphModel)
    nodes = engine.nodes
    offsets, floats, words = plan(nodes)
    last = {j: i for i, n in enumerate(nodes) for j in n.inputs}
    sizes = [np.prod(n.out.shape) if n.out.kind == "float" else
             n.out.shape[1] * n.out.shape[2] * ((n.out.shape[0] + 63) // 64) for n in nodes]
    for i, n in enumerate(nodes):
        assert offsets[i] + sizes[i] <= (floats if n.out.kind == "float" else words)
        for j in range(i):  # a value written at i must not cover j while j is still read
            if nodes[j].out.kind == n.out.kind and last.get(j, len(nodes)) >= i:
                assert (offsets[i] + sizes[i] <= offsets[j]
                        or offsets[j] + sizes[j] <= offsets[i]), (i, j)
    assert floats < sum(s for s, n in zip(sizes, nodes, strict=True) if n.out.kind == "float")


@needs_cc
@pytest.mark.slow  # trains for half a minute
def test_a_trained_resnet_in_c_gives_the_engines_classes_on_real_images(tmp_path):
    from test_engine_graph import trained_resnet

    from hybnn.engine import export_model

    model, test = trained_resnet()
    export_model(model, tmp_path / "m.engine")
    write_c(tmp_path / "m.engine", tmp_path / "c", "model")
    assert CC is not None
    exe = _build(CC, tmp_path, "model")
    x = np.ascontiguousarray(test.x[:1000])
    got, logits = _run([str(exe)], x, 10)
    engine = load(tmp_path / "m.engine")
    want = engine.logits(x)
    assert (got == want.argmax(1)).mean() >= 0.999
    np.testing.assert_allclose(logits, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


@pytest.mark.skipif(None in (shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-size")),
                    reason="no arm-none-eabi-gcc")
def test_a_graph_builds_for_the_cortex_m4(tmp_path):
    """A small ResNet as Cortex-M4 code: it compiles with -Werror; flash (weights and code)
    and RAM (the static work buffers) are what the header says, roughly."""
    from hybnn.engine.c_export import CORTEX_M4_FLAGS

    _, model, shape = _models()[2]
    _write(model, shape, tmp_path)
    obj = tmp_path / "model.o"
    proc = subprocess.run(["arm-none-eabi-gcc", *CORTEX_M4_FLAGS, f"-I{tmp_path / 'c'}", "-c",
                           str(tmp_path / "c" / "model.c"), "-o", str(obj)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    size = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True,
                          check=True).stdout.splitlines()[1].split()
    text, data, bss = (int(v) for v in size[:3])
    header = (tmp_path / "c" / "model.h").read_text()
    floats = int(header.split("MODEL_WORK_FLOATS ")[1].split("u")[0])
    words = int(header.split("MODEL_BITS_WORDS ")[1].split("u")[0])
    assert bss == 4 * floats + 8 * words and data == 0
    weights = int(header.split("MODEL_WEIGHT_BYTES ")[1].split("u")[0])
    assert weights < text < weights + 64 * 1024


@needs_cc
def test_generated_c_is_clean_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    """Every kernel of a graph with all op kinds reads and writes inside its buffers: the build
    with AddressSanitizer and UBSan runs clean and still agrees with the engine."""
    _, model, shape = _models()[1]  # max pooling, odd sides, both shortcut kinds
    engine_path = _write(model, shape, tmp_path)
    assert CC is not None
    exe = _build(CC, tmp_path, "model-asan", "-fsanitize=address,undefined",
                 "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")
    probe = subprocess.run([str(exe)], input=struct.pack("=I", 0), capture_output=True)
    if probe.returncode != 0 and b"Sanitizer" in probe.stderr:
        pytest.skip("the sanitizer runtimes cannot run here")
    x = np.random.default_rng(7).standard_normal((6, *shape)).astype(np.float32)
    _agree(engine_path, [str(exe)], x)
