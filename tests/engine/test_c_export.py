"""The C export: generated C99 compiles warning-free and its logits equal the engine's, bit for bit.

Each model is exported to C, compiled with the host compiler (with the GCC builtins and with
the portable popcount and fma), run by ``c_driver.c`` on a few hundred inputs, and compared
with ``hybnn.engine.load(...)``: identical classes, logits equal as float32 bit patterns.
Where the cross toolchains are installed the same runs under qemu-aarch64, and a Cortex-M4
build is sized with ``arm-none-eabi-size``.
"""

from __future__ import annotations

import platform
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from engine_reference import randomize

from hybnn.engine import export_model, load, pack_images, pack_signs
from hybnn.engine.c_export import CORTEX_M4_FLAGS, HOST_FLAGS, check_name, write_c
from hybnn.models import BinaryCNN, BNNHead

HERE = Path(__file__).parent
EMBEDDED = HERE.parents[1] / "src" / "hybnn" / "engine" / "embedded"
CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no host C compiler (cc/gcc) on PATH")
def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split()}


# "builtins": single-instruction popcount and fma where this x86 CPU has them; "portable": the
# plain C fallbacks (64-bit bit tricks, fma without libm); "portable32": the 32-bit popcount
# that Cortex-M builds use
VARIANTS = {
    "builtins": [f"-m{f}" for f in ("popcnt", "fma") if platform.machine() == "x86_64"
                 and f in _cpu_flags()],
    "portable": ["-DHYB_C_PORTABLE"],
    "portable32": ["-DHYB_C_PORTABLE", "-DHYB_C_POPCOUNT32"],
}
AARCH64 = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
ARM_EABI = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-size")

HEADS = [
    dict(in_bits=200, num_classes=2),  # the paper's head: 200 -> 128 -> 2
    dict(in_bits=37, num_classes=5, hidden=(100, 65), scaling="xnor"),
    dict(in_bits=130, num_classes=3, hidden=(), scaling="learned"),
    dict(in_bits=64, num_classes=10, hidden=(129, 64, 33)),
]
CNNS = [
    dict(image_size=(28, 28)),
    dict(image_size=(9, 9), in_channels=3, num_classes=4, fc=(37, 70), scaling="xnor"),
    dict(image_size=(13, 11), in_channels=2, num_classes=3, fc=(65, 31), scaling="learned"),
]


def _model(config: dict, seed: int):
    return randomize(BNNHead(**config) if "in_bits" in config else BinaryCNN(**config), seed)


def _inputs(config: dict, n: int, seed: int) -> np.ndarray:
    """Random inputs with exact zeros and -0.0 (sign +1), and one NaN sample (refused)."""
    rng = np.random.default_rng(seed)
    if "in_bits" in config:
        x = np.where(rng.random((n, config["in_bits"])) < 0.5, -1.0, 1.0).astype(np.float32)
    else:
        h, w = config["image_size"]
        x = rng.standard_normal((n, config.get("in_channels", 1), h, w)).astype(np.float32)
    flat = x.reshape(n, -1)
    flat[1, ::3] = 0.0
    flat[2, ::2] = -0.0
    flat[3, -1] = np.nan
    return x


def _export(model, tmp_path: Path, name: str = "model") -> tuple[Path, Path, dict]:
    engine_path = tmp_path / "model.engine"
    export_model(model, engine_path)
    out = tmp_path / "c"
    return engine_path, out, write_c(engine_path, out, name)


def _build(cc: str, out: Path, exe: Path, *flags: str) -> Path:
    cmd = [cc, *HOST_FLAGS, *flags, f"-I{out}", str(out / "model.c"), str(HERE / "c_driver.c"),
           "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def _run(runner: list[str], data: np.ndarray, mode: str, classes: int) -> tuple[np.ndarray, ...]:
    n = data.shape[0]
    blob = struct.pack("=I", n) + np.ascontiguousarray(data).tobytes()
    proc = subprocess.run([*runner, mode], input=blob, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    got = np.frombuffer(proc.stdout[: 4 * n], dtype=np.int32)
    logits = np.frombuffer(proc.stdout[4 * n :], dtype=np.float32).reshape(n, classes)
    return got, logits


def _assert_agree(engine_path: Path, x: np.ndarray, runner: list[str]) -> int:
    """Run the C build on float and packed inputs; check both against the engine."""
    engine = load(engine_path)
    ok = ~np.isnan(x.reshape(len(x), -1)).any(axis=1)
    ref_cls, ref_logits = engine.predict(x[ok]), engine.logits(x[ok])
    packed = pack_signs(x[ok]) if x.ndim == 2 else pack_images(x[ok])
    for mode, data in (("floats", x), ("words", packed)):
        cls, logits = _run(runner, data, mode, engine.num_classes)
        if mode == "floats":
            assert (cls[~ok] == -1).all()  # MODEL_ERR_NAN
            cls, logits = cls[ok], logits[ok]
        np.testing.assert_array_equal(cls, ref_cls)
        np.testing.assert_array_equal(logits.view(np.uint32), ref_logits.view(np.uint32))
    return int(ok.sum())


@needs_cc
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("config", HEADS + CNNS, ids=lambda c: "-".join(map(str, c.values())))
def test_c_build_equals_engine(config, variant, tmp_path):
    seed = len(str(config))
    engine_path, out, _ = _export(_model(config, seed), tmp_path)
    exe = _build(CC, out, tmp_path / "run", *VARIANTS[variant])
    n = 300 if "in_bits" in config else 120
    assert _assert_agree(engine_path, _inputs(config, n, seed), [str(exe)]) == n - 1


@needs_cc
def test_padding_bits_are_refused(tmp_path):
    config = HEADS[1]  # 37 bits: 27 padding bits in the one word
    _, out, _ = _export(_model(config, 1), tmp_path)
    exe = _build(CC, out, tmp_path / "run")
    words = pack_signs(_inputs(config, 4, 0)[:3])
    words[1, 0] |= np.uint64(1 << 40)
    cls, _ = _run([str(exe)], words, "words", 5)
    assert cls[1] == -2 and cls[0] >= 0 and cls[2] >= 0  # MODEL_ERR_PADBITS


def test_write_c_from_a_model_directory_and_names(tmp_path):
    from hybnn.models.io import save_model

    head = _model(HEADS[0], 3)
    save_model(tmp_path / "head", head)
    info = write_c(tmp_path / "head", tmp_path / "c", "tiny_head")
    h = Path(info["header"]).read_text()
    assert "#define TINY_HEAD_INPUT_BITS 200u" in h and "int tiny_head_predict(" in h
    assert info["weight_words"] == 128 * 4 + 2 * 2 and info["work_words"] == 4 + 2
    c = Path(info["source"]).read_text()
    assert "#include <" not in c and "malloc" not in c  # only the header's stdint/stddef
    for bad in ("2x", "int", "a-b", "x" * 33, "hyb_model", ""):
        with pytest.raises(ValueError):
            check_name(bad)


@needs_cc
def test_two_models_link_into_one_program(tmp_path):
    objs = []
    for i, config in enumerate((HEADS[0], CNNS[1])):
        _, out, _ = _export(_model(config, i), tmp_path / str(i), name=f"net{i}")
        obj = tmp_path / f"net{i}.o"
        subprocess.run([CC, *HOST_FLAGS, "-c", str(out / f"net{i}.c"), "-o", str(obj)],
                       check=True)
        objs.append(obj)
        undefined = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True)
        # no libc: at most the compiler runtime's popcount
        assert set(undefined.stdout.split()) <= {"U", "__popcountdi2"}, undefined.stdout
    main = tmp_path / "main.c"
    main.write_text('#include "net0.h"\n#include "net1.h"\nint main(void) {\n'
                    "    static float a[NET0_INPUT_SIZE], b[NET1_INPUT_SIZE];\n"
                    "    return net0_predict(a, 0) < 0 || net1_predict(b, 0) < 0;\n}\n")
    exe = tmp_path / "both"
    subprocess.run([CC, *HOST_FLAGS, f"-I{tmp_path / '0' / 'c'}", f"-I{tmp_path / '1' / 'c'}",
                    str(main), *map(str, objs), "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)]).returncode == 0


@needs_cc
def test_portable_fma_is_correctly_rounded(tmp_path):
    """hyb_fmaf (no libm) equals glibc's fmaf on random and double-rounding-prone cases."""
    exe = tmp_path / "fma"
    proc = subprocess.run([CC, "-std=c99", "-O2", "-ffp-contract=off", f"-I{EMBEDDED}",
                           str(HERE / "c_fma_check.c"), "-o", str(exe), "-lm"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    checked, wrong = map(int, run.stdout.split())
    assert checked > 1_000_000 and wrong == 0


@pytest.mark.skipif(None in AARCH64, reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 "
                    "(Debian: gcc-aarch64-linux-gnu, qemu-user)")
@pytest.mark.parametrize("config", [HEADS[1], CNNS[1]], ids=["head", "cnn"])
def test_aarch64_build_under_qemu_equals_engine(config, tmp_path):
    engine_path, out, _ = _export(_model(config, 7), tmp_path)
    exe = _build(AARCH64[0], out, tmp_path / "run-aarch64", "-static")
    n = 200 if "in_bits" in config else 80
    assert _assert_agree(engine_path, _inputs(config, n, 7), [AARCH64[1], str(exe)]) == n - 1


def arm_size(path: Path) -> dict[str, int]:
    """text, data and bss bytes of an object or ELF file (``arm-none-eabi-size``, Berkeley)."""
    assert ARM_EABI[1] is not None
    proc = subprocess.run([ARM_EABI[1], str(path)], capture_output=True, text=True, check=True)
    text, data, bss = map(int, proc.stdout.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


@pytest.mark.skipif(None in ARM_EABI, reason="needs arm-none-eabi-gcc (Debian: "
                    "gcc-arm-none-eabi, libnewlib-arm-none-eabi)")
@pytest.mark.parametrize("config", [HEADS[0], CNNS[0]], ids=["head", "cnn"])
def test_cortex_m4_build_sizes(config, tmp_path):
    _, out, info = _export(_model(config, 2), tmp_path)
    obj = tmp_path / "model.o"
    subprocess.run([ARM_EABI[0], *CORTEX_M4_FLAGS, "-c", str(out / "model.c"), "-o", str(obj)],
                   check=True)
    size = arm_size(obj)
    assert size["text"] >= 8 * info["weight_words"]  # const weights live in flash
    assert size["bss"] >= 8 * info["work_words"]  # the static work buffer
    assert size["data"] == 0
    specs = subprocess.run([ARM_EABI[0], "-print-file-name=nosys.specs"], capture_output=True,
                           text=True).stdout.strip()
    if not Path(specs).is_absolute():
        pytest.skip("newlib's nosys.specs not found (Debian: libnewlib-arm-none-eabi)")
    main = tmp_path / "main.c"
    main.write_text('#include "model.h"\nstatic float input[MODEL_INPUT_SIZE];\n'
                    "volatile int result;\nint main(void) {\n"
                    "    float logits[MODEL_CLASSES];\n"
                    "    result = model_predict(input, logits);\n    return 0;\n}\n")
    elf = tmp_path / "model.elf"
    proc = subprocess.run([ARM_EABI[0], *CORTEX_M4_FLAGS, f"-I{out}", str(main),
                           str(out / "model.c"), "--specs=nosys.specs", "-Wl,--gc-sections",
                           "-o", str(elf)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    linked = arm_size(elf)
    assert linked["text"] + linked["data"] < 256 * 1024 and linked["data"] + linked["bss"] < 65536


@needs_cc
def test_cli_export_format_c(tmp_path, capsys):
    from hybnn.cli import main
    from hybnn.models.io import save_model

    config = CNNS[1]
    save_model(tmp_path / "bcnn", _model(config, 4))
    out = tmp_path / "c"
    assert main(["export", str(tmp_path / "bcnn"), "--out", str(out), "--format", "c",
                 "--name", "model"]) == 0
    assert "as C99" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "bcnn"), "--out", str(tmp_path / "m.engine")]) == 0
    exe = _build(CC, out, tmp_path / "run")
    assert _assert_agree(tmp_path / "m.engine", _inputs(config, 50, 4), [str(exe)]) == 49
    assert main(["export", str(tmp_path / "bcnn"), "--out", str(out), "--format", "c",
                 "--name", "2bad"]) == 2
    assert "C name must be an identifier" in capsys.readouterr().err
