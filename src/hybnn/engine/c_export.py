"""C99 source of an engine model for microcontrollers: ``hybnn export --format c``.

:func:`write_c` writes ``NAME.h`` and ``NAME.c``: the packed weights as ``const uint64_t``
arrays, the integer thresholds, the float output layer (alpha, batch-norm scale and shift) and
the forward pass (sign-pack, XNOR-popcount, threshold compare, ..., float logits). The code
includes only ``<stdint.h>`` and ``<stddef.h>``, never allocates, and follows the engine's input
preparation, bit order, padding and float operation order, so its logits equal the engine's bit
for bit (docs/embedded.md). The model is validated like any engine file, and refused if it
records an input preparation the C code cannot apply, before a line is written.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import textwrap
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from hybnn.artifacts import atomic_write_bytes
from hybnn.engine import format as fmt
from hybnn.engine.packed import PackedModel, words_per_sample

# How the tests and bench/embedded.py build the generated code (any C99 compiler works).
HOST_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-ffp-contract=off")
CORTEX_M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os",
                   "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-ffp-contract=off",
                   "-ffunction-sections", "-fdata-sections")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}\Z")
# NAME.h must not shadow a standard header: `#include <stdint.h>` searches the -I directories
# first (case-insensitively on some file systems). C99's headers, then C11's and C23's.
_STD_HEADERS = frozenset((
    "assert", "complex", "ctype", "errno", "fenv", "float", "inttypes", "iso646", "limits",
    "locale", "math", "setjmp", "signal", "stdarg", "stdbool", "stddef", "stdint", "stdio",
    "stdlib", "string", "tgmath", "time", "wchar", "wctype",
    "stdalign", "stdatomic", "stdnoreturn", "threads", "uchar", "stdbit", "stdckdint",
))
_RESERVED = frozenset((
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while", "main",
))
# The input preparations the C code applies, as the engine does (runtime.INPUT_PREPS): the
# value a pixel is compared with before its sign, and what NAME.h tells the caller to pass.
_INPUT_PREPS: dict[str | None, tuple[float, str]] = {
    None: (0.0, "each value's sign is taken as given: its bit is 1 (-1) iff x < 0, "
                "sign(0) = +1"),
    "centered": (0.5, "pixels in [0, 1] (preparation \"centered\"): a pixel's sign is that "
                      "of x - 0.5 (centred), its bit is 1 (-1) iff x < 0.5"),
}
# What the caller does to images for a model trained on prepared ones (its artifact's "prep",
# hybnn.data.prep); an unknown value is not repeated: NAME.h never quotes the file's strings.
_TRAINED_PREPS = {
    "unit": "pixels in [0, 1] as stored",
    "centered": "pixels in [0, 1] minus 0.5, computed by the caller",
}
# Bytes written as themselves in a C string literal; all others are octal escapes (quotes,
# backslashes, newlines, '?' of trigraphs, '*' so that no comment can open or close, UTF-8).
_C_PLAIN = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 _-.,:;+=()!&'%#~^|<>[]{}/"
)


def kernels_source() -> str:
    """The fixed C kernels every generated file includes (``engine/embedded/forward.c``)."""
    return (resources.files("hybnn.engine") / "embedded" / "forward.c").read_text()


def check_name(name: str) -> str:
    """``name`` if it is a usable C identifier prefix (at most 32 characters), else ValueError."""
    if not isinstance(name, str) or not _NAME.match(name) or name in _RESERVED:
        raise ValueError(f"C name must be an identifier of at most 32 characters, got {name!r}")
    if name.startswith("_"):
        raise ValueError(f"C name {name!r} starts with an underscore: C reserves such names "
                         "for the compiler and its library")
    if name.lower() in _STD_HEADERS:
        raise ValueError(f"C name {name!r} would make {name}.h shadow the standard header "
                         f"<{name.lower()}.h>")
    if name.lower() == "hyb" or name.lower().startswith("hyb_"):
        raise ValueError(f"C name {name!r} would clash with the kernels' hyb_ prefix")
    return name


def c_string(text: str) -> str:
    """``text`` as a C string literal of its UTF-8 bytes, every byte but plain letters, digits
    and punctuation octal-escaped (three digits, so no escape runs into the next character)."""
    data = text.encode("utf-8", "backslashreplace")  # lone surrogate: a \u escape
    return '"' + "".join(chr(b) if b in _C_PLAIN else f"\\{b:03o}" for b in data) + '"'


def input_prep(model: PackedModel) -> tuple[float, str]:
    """(shift, description) of the input preparation ``model`` records; ValueError if the C
    code cannot apply it (it must never run a model on inputs prepared otherwise)."""
    prep = model.input_prep
    if not (isinstance(prep, str | None) and prep in _INPUT_PREPS
            and (prep is None or model.in_bits is None)):  # rows are codes: never prepared
        known = ", ".join(repr(p) if p else "none" for p in _INPUT_PREPS)
        raise ValueError(f"the C export cannot apply the input preparation {prep!r} that the "
                         f"engine model records (it applies {known})")
    return _INPUT_PREPS[prep]


def load_engine(source: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """(header, arrays, fingerprint) of an engine file, a model directory or a torch model."""
    if isinstance(source, str | os.PathLike) and not Path(source).is_dir():
        return fmt.read(source)
    from hybnn.engine.export import export_artifact, export_model

    with tempfile.TemporaryDirectory() as tmp:  # through the real exporter and reader
        path = Path(tmp) / "model.engine"
        if isinstance(source, str | os.PathLike):
            export_artifact(source, path)
        else:
            export_model(source, path)
        return fmt.read(path)


def _array(lines: list[str], ctype: str, name: str, values: Iterable[str], per_line: int,
           storage: str = "static ") -> None:
    vals = list(values)
    lines.append(f"{storage}const {ctype} {name}[{len(vals)}] = {{")
    for i in range(0, len(vals), per_line):
        lines.append("    " + ", ".join(vals[i : i + per_line]) + ",")
    lines.append("};")


def _words(a: np.ndarray) -> Iterable[str]:
    return (f"UINT64_C(0x{int(v):016x})" for v in a.reshape(-1))


def _floats(a: np.ndarray) -> Iterable[str]:
    return (float.hex(float(v)) + "f" for v in a.reshape(-1))  # exact: hex float literals


def _layout(model: PackedModel) -> dict[str, int]:
    """Buffer sizes in words. The input and each hidden layer's output alternate between two
    regions of the work buffer (A: even, B: odd), so no layer overwrites what it reads."""
    in_words = words_per_sample(model)
    acts = [in_words] + [g.out_words for g in model.geometry[:-1]]
    a, b = max(acts[0::2]), max(acts[1::2], default=0)
    return {"input_words": in_words, "region_a": a, "work_words": a + b,
            "weight_words": sum(math.prod(g.weight_shape) for g in model.geometry),
            "classes": model.num_classes}


def _comment(text: str) -> str:
    """Body lines of a C block comment (the text never holds ``*/``: it is ours, not a user's)."""
    return textwrap.fill(text, 96, initial_indent=" * ", subsequent_indent=" * ",
                         break_on_hyphens=False, break_long_words=False)


def _label_space(model: PackedModel, up: str) -> list[str]:
    """Definitions of NAME_LABELS and NAME_CLASS_NAMES: what each output index means, from
    the engine file (declared in NAME.h; defined once here, so no unused copies anywhere)."""
    space = model.label_space
    for label in space.labels:
        if not -(2**31) <= label < 2**31:
            raise ValueError(f"label {label} of the model's label space does not fit an int32_t")
    lines: list[str] = []
    labels = [str(v) if v > -(2**31) else "(-2147483647 - 1)" for v in space.labels]
    _array(lines, "int32_t", f"{up}_LABELS", labels, 12, storage="")  # declared in NAME.h
    lines.append(f"const char *const {up}_CLASS_NAMES[{len(space)}] = {{")
    lines += [f"    {c_string(n)}," for n in space.names]
    lines.append("};")
    return lines


def _header_text(model: PackedModel, name: str, fingerprint: str, sizes: dict[str, int]) -> str:
    from hybnn import __version__

    up = name.upper()
    _, prep = input_prep(model)
    if model.in_bits is not None:
        shape = [f"#define {up}_INPUT_BITS {model.in_bits}u"]
        what = (f"rows of {model.in_bits} floats, a code's +1/-1 values ({prep}); or the "
                f"code's {model.in_bits} bits through {name}_pack_codes")
        codes = f"""
/* Pack one code, {up}_INPUT_BITS bytes in the order of Python's codes() (bits[i] != 0 means
 * +1, as there), into the {up}_INPUT_WORDS words {name}_predict_words takes (bit 1 = -1). */
void {name}_pack_codes(const uint8_t *bits, uint64_t *words);
"""
    else:
        c, h, w = model.input_shape
        shape = [f"#define {up}_INPUT_CHANNELS {c}u", f"#define {up}_INPUT_HEIGHT {h}u",
                 f"#define {up}_INPUT_WIDTH {w}u"]
        what = f"NCHW images of {c} x {h} x {w} floats (C planes of H rows of W); {prep}"
        source = model.metadata.get("source")
        trained = source.get("prep") if isinstance(source, dict) else None
        if model.input_prep is None and isinstance(trained, str) and trained in _TRAINED_PREPS:
            what += (f". The model was trained on images prepared {trained!r}: pass "
                     f"{_TRAINED_PREPS[trained]}")
        codes = ""
    about = _comment(
        f"Input: {what}. Output: {up}_NUM_CLASSES float logits, bit-exact with the hybnn "
        f"engine, and the class (see {up}_LABELS). Portable C99: no malloc, no libc. "
        "Generated: regenerate rather than edit. See docs/embedded.md of hybnn.")
    guard = f"HYBNN_{up}_H"  # no standard header's guard (_STDINT_H, ...) starts so
    return f"""/* {name}: a binary network from `hybnn export --format c` (hybnn {__version__}).
 * Engine model fingerprint (SHA-256): {fingerprint}
{about} */
#ifndef {guard}
#define {guard}

#include <stddef.h>
#include <stdint.h>

{chr(10).join(shape)}
#define {up}_INPUT_SIZE {math.prod(model.input_shape)}u /* floats per sample */
#define {up}_INPUT_WORDS {sizes["input_words"]}u /* packed uint64_t words per sample */
#define {up}_NUM_CLASSES {model.num_classes}u
#define {up}_CLASSES {up}_NUM_CLASSES /* the older name */
#define {up}_WORK_WORDS {sizes["work_words"]}u /* uint64_t scratch of one call */
#define {up}_WEIGHT_WORDS {sizes["weight_words"]}u /* packed weights (const) */

#define {up}_ERR_NAN (-1)     /* the input contains NaN: its sign is undefined */
#define {up}_ERR_PADBITS (-2) /* packed input has bits set past the input width */

#ifdef __cplusplus
extern "C" {{
#endif

/* What each class means (the model's label space): class i had the label {up}_LABELS[i] in
 * the training data and is named {up}_CLASS_NAMES[i] (a UTF-8 string). */
extern const int32_t {up}_LABELS[{up}_NUM_CLASSES];
extern const char *const {up}_CLASS_NAMES[{up}_NUM_CLASSES];

/* Class of one sample ({up}_INPUT_SIZE floats): the argmax of its logits (the first maximum
 * on ties), or {up}_ERR_NAN. logits: {up}_NUM_CLASSES floats written, or NULL.
 * work: {up}_WORK_WORDS words of the caller's; calls with distinct work buffers are
 * independent (reentrant). */
int {name}_predict_r(const float *input, float *logits, uint64_t *work);

/* The same for an input already packed ({up}_INPUT_WORDS words, the engine's bit order:
 * bit 1 = -1); returns {up}_ERR_PADBITS if a bit past the input width is set. */
int {name}_predict_words(const uint64_t *words, float *logits, uint64_t *work);
{codes}
#ifndef {up}_NO_STATIC_WORK
/* {name}_predict_r with a static work buffer (not reentrant). */
int {name}_predict(const float *input, float *logits);

/* n samples one after another: logits (n * {up}_NUM_CLASSES, or NULL) and classes (n, or
 * NULL; a negative {up}_ERR_* for a refused sample). Returns how many samples were refused. */
size_t {name}_predict_batch(const float *inputs, size_t n, float *logits, int *classes);
#endif

#ifdef __cplusplus
}}
#endif

#endif
"""


def _layers(model: PackedModel, arrays: dict[str, np.ndarray], region_a: int) -> tuple[list, list]:
    """(array definitions, forward-pass calls): one kernel call per layer."""
    lines: list[str] = []
    calls: list[str] = []
    b = f"work + {region_a}u"
    for i, (g, spec) in enumerate(zip(model.geometry, model.layers, strict=True)):
        _array(lines, "uint64_t", f"hyb_w{i}", _words(arrays[spec["weights"]]), 4)
        src = "x" if i == 0 else ("work" if i % 2 == 0 else b)
        dst = "work" if i % 2 else b
        if g.op == "output":
            for key, short in (("alpha", "a"), ("bn_scale", "s"), ("bn_shift", "b")):
                _array(lines, "float", f"hyb_{short}{i}", _floats(arrays[spec[key]]), 6)
            calls.append(f"    hyb_output({src}, out, hyb_w{i}, hyb_a{i}, hyb_s{i}, hyb_b{i}, "
                         f"{g.in_words}u, {g.kbits}, {g.out_channels}u);")
            continue
        thr = arrays[spec["thresholds"]]
        _array(lines, "int32_t", f"hyb_t{i}", (str(int(t)) for t in thr), 12)
        if g.op == "conv2d":
            cw = g.in_words // (g.in_height * g.in_width)
            calls.append(f"    hyb_conv({src}, {dst}, hyb_w{i}, hyb_t{i}, {cw}u, {g.in_height}u, "
                         f"{g.in_width}u, {g.out_channels}u, {g.kernel_size}u, {g.stride}u, "
                         f"{g.padding}u, {g.out_height}u, {g.out_width}u);")
        else:
            calls.append(f"    hyb_dense({src}, {dst}, hyb_w{i}, hyb_t{i}, {g.in_words}u, "
                         f"{g.out_channels}u);")
    if len(model.geometry) == 1:
        calls.insert(0, "    (void)work; /* one layer: no hidden activations */")
    return lines, calls


def _entry_points(model: PackedModel, name: str, shift: float) -> list[str]:
    up = name.upper()
    codes = ""
    if model.in_bits is not None:
        pack = f"hyb_pack_rows(input, {up}_INPUT_BITS, work)"
        units, width = "1u", f"{up}_INPUT_BITS"
        codes = f"""
void {name}_pack_codes(const uint8_t *bits, uint64_t *words) {{
    hyb_pack_bits(bits, {up}_INPUT_BITS, words);
}}
"""
    else:
        pixels = f"{up}_INPUT_HEIGHT * {up}_INPUT_WIDTH"
        # the engine file's input preparation: signs of x - shift (input_prep)
        pack = (f"hyb_pack_image(input, {up}_INPUT_CHANNELS, {pixels}, "
                f"{float.hex(float(np.float32(shift)))}f, work)")
        units, width = pixels, f"{up}_INPUT_CHANNELS"
    return f"""{codes}
int {name}_predict_words(const uint64_t *words, float *logits, uint64_t *work) {{
    if (hyb_pad_bits(words, {units}, {width})) return {up}_ERR_PADBITS;
    return hyb_forward(words, logits, work);
}}

int {name}_predict_r(const float *input, float *logits, uint64_t *work) {{
    if ({pack}) return {up}_ERR_NAN;
    return hyb_forward(work, logits, work);
}}

#ifndef {up}_NO_STATIC_WORK
static uint64_t hyb_work[{up}_WORK_WORDS];

int {name}_predict(const float *input, float *logits) {{
    return {name}_predict_r(input, logits, hyb_work);
}}

size_t {name}_predict_batch(const float *inputs, size_t n, float *logits, int *classes) {{
    size_t refused = 0;
    for (size_t i = 0; i < n; i++) {{
        const float *x = inputs + i * {up}_INPUT_SIZE;
        const int r = {name}_predict(x, logits ? logits + i * {up}_NUM_CLASSES : NULL);
        if (classes) classes[i] = r;
        refused += r < 0;
    }}
    return refused;
}}
#endif
""".splitlines()


def generate(
    header: dict[str, Any], arrays: dict[str, np.ndarray], fingerprint: str, name: str
) -> tuple[str, str, dict[str, int]]:
    """(NAME.h text, NAME.c text, sizes in words) of an engine model, validated first."""
    from hybnn import __version__

    name = check_name(name)
    if "graph" in header:  # a graph of binary and float nodes (a binary ResNet)
        from hybnn.engine.c_graph import generate_graph

        return generate_graph(header, arrays, fingerprint, name)
    model = PackedModel(header, arrays, fingerprint)  # every check of the loader, C included
    shift, _ = input_prep(model)
    sizes = _layout(model)
    ops = {g.op for g in model.geometry}
    defs, calls = _layers(model, arrays, sizes.pop("region_a"))
    lines = [
        f"/* {name}: generated by hybnn {__version__} from the engine model {fingerprint[:16]}; "
        f"see {name}.h. */",
        f'#include "{name}.h"',
        "",
        f"#define HYB_C_ROWS {int(model.in_bits is not None)}",
        f"#define HYB_C_CONV {int('conv2d' in ops)}",
        f"#define HYB_C_DENSE {int('dense' in ops)}",
        "",
        kernels_source().rstrip(),
        "",
        "/* ---- the model's arrays ---- */",
        *defs,
        "",
        "/* ---- what each class means ---- */",
        *_label_space(model, name.upper()),
        "",
        "/* ---- forward pass ---- */",
        "static int hyb_forward(const uint64_t *x, float *logits, uint64_t *work) {",
        f"    float scratch[{name.upper()}_NUM_CLASSES];",
        "    float *out = logits ? logits : scratch;",
        *calls,
        f"    return hyb_argmax(out, {name.upper()}_NUM_CLASSES);",
        "}",
        *_entry_points(model, name, shift),
    ]
    return _header_text(model, name, fingerprint, sizes), "\n".join(lines), sizes


def write_c(
    source: Any, out_dir: str | os.PathLike[str], name: str = "hybnn_model"
) -> dict[str, Any]:
    """Write ``NAME.h`` and ``NAME.c`` for ``source`` into ``out_dir``; returns a summary.

    ``source``: an engine file, a model directory from ``save_model`` or a ``BNNHead`` /
    ``BinaryCNN``. The summary holds the two paths, the fingerprint and the buffer sizes.
    """
    check_name(name)
    header, arrays, fingerprint = load_engine(source)
    h_text, c_text, sizes = generate(header, arrays, fingerprint, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"header": out / f"{name}.h", "source": out / f"{name}.c"}
    for key, text in (("header", h_text), ("source", c_text)):
        atomic_write_bytes(paths[key], text.encode())
    return {
        "header": str(paths["header"]),
        "source": str(paths["source"]),
        "name": name,
        "fingerprint": fingerprint,
        "arch": header.get("arch"),
        "layers": len(header["layers"] if "layers" in header else header["graph"]["nodes"]),
        **sizes,
    }
