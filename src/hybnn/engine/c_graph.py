"""C99 source of an engine graph (a binary ResNet): ``hybnn export --format c`` of a
version-3 engine file.

Like the chain export (:mod:`hybnn.engine.c_export`) the code includes only ``<stdint.h>``
and ``<stddef.h>``, never allocates and is validated like the engine file first. Each node is
one kernel call of ``embedded/graph.c`` on one sample; its output lives in the caller's
float or packed work buffer at an offset planned here, so that no node overwrites a value a
later node still reads. Binary nodes, signs, PReLU, adds, pooling and batch norms compute
what the engine computes, bit for bit; the float convolutions, dense layers and global
averages sum in another order than numpy, within float32 rounding (docs/engine.md).
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import numpy as np

from hybnn.engine import c_export as cx
from hybnn.engine.graph import BITS, GraphModel, Node
from hybnn.engine.packing import words_for

_FMA = "#if defined(__GNUC__) && defined(__FP_FAST_FMAF)"
OPS = ("sign", "bconv2d", "bdense", "conv2d", "dense", "affine", "prelu", "add", "flatten",
       "pool", "global_avgpool")


def graph_kernels(ops: set[str]) -> str:
    """The C kernels a graph of ``ops`` needs: forward.c's popcount (the chain export's), then
    ``engine/embedded/graph.c`` with the switch of each op."""
    popcount = cx.kernels_source().split(_FMA)[0].rstrip()
    switches = [f"#define HYB_G_{op.upper()} {int(op in ops)}" for op in OPS]
    graph = (resources.files("hybnn.engine") / "embedded" / "graph.c").read_text()
    return "\n".join([*switches, "", popcount, "", graph.rstrip()])


def _size(node: Node) -> int:
    """Floats (float tensors) or words (packed ones) of one sample's output."""
    c, h, w = node.out.shape
    return h * w * words_for(c) if node.out.kind == BITS else c * h * w


def plan(nodes: list[Node]) -> tuple[list[int], int, int]:
    """(offset of each node's output in its buffer, floats, words): first fit, a value's space
    freed after its last reader ran, never while a node reads it."""
    last = {j: i for i, n in enumerate(nodes) for j in n.inputs}
    live: dict[str, list[tuple[int, int, int]]] = {"float": [], "bits": []}  # (start, end, node)
    offsets: list[int] = []
    top = {"float": 0, "bits": 0}
    for i, node in enumerate(nodes):
        kind = node.out.kind
        live = {k: [b for b in v if last.get(b[2], len(nodes)) >= i] for k, v in live.items()}
        size, start = _size(node), 0
        for a, b, _ in sorted(live[kind]):
            if a - start >= size:
                break
            start = max(start, b)
        live[kind].append((start, start + size, i))
        offsets.append(start)
        top[kind] = max(top[kind], start + size)
    return offsets, top["float"], top["bits"]


def _ref(nodes: list[Node], offsets: list[int], j: int) -> str:
    if j < 0:
        return "x"
    return f"{'b' if nodes[j].out.kind == BITS else 'f'} + {offsets[j]}u"


def _calls(model: GraphModel, offsets: list[int], lines: list[str]) -> list[str]:
    """The forward pass: one kernel call per node; the arrays into ``lines``."""
    nodes = model.nodes
    calls: list[str] = []
    for i, node in enumerate(nodes):
        a = node.arrays
        src = _ref(nodes, offsets, node.inputs[0])
        dst = _ref(nodes, offsets, i)
        c, h, w = (nodes[node.inputs[0]].out.shape if node.inputs[0] >= 0
                   else model.input_shape)
        oc, oh, ow = node.out.shape
        names: dict[str, str] = {}
        for key, arr in a.items():
            if (key == "scale" and (arr == 1).all()) or key == "flips":
                continue  # a learnable bias: x + shift; flips are in the weights already
            names[key] = f"hyb_n{i}_{key}"
            if arr.dtype == np.uint64:
                cx._array(lines, "uint64_t", names[key], cx._words(arr), 4)
            elif arr.dtype == np.float32:
                cx._array(lines, "float", names[key], cx._floats(arr), 6)
            else:
                cx._array(lines, "int32_t", names[key], (str(int(v)) for v in arr.reshape(-1)), 12)
        op, p = node.op, node.params
        if op == "sign":
            calls.append(f"    if (hyb_g_sign({src}, {names.get('shift', 'NULL')}, {c}u, "
                         f"{h * w}u, {dst})) return -1;")
        elif op in ("bconv2d", "bdense"):
            signs = p["mode"] == "signs"
            thr = names["thresholds"] if signs else "NULL"
            alpha = "NULL" if signs else names["alpha"]
            bits, out = (dst, "NULL") if signs else ("NULL", dst)
            kbits = (c * h * w if op == "bdense" else
                     int(node.arrays["weights"].shape[1]) ** 2 * c)
            if op == "bconv2d":
                k = int(a["weights"].shape[1])
                stride, pad = _geometry(model, i)
                calls.append(f"    hyb_g_bconv({src}, {names['weights']}, {words_for(c)}u, {h}u, "
                             f"{w}u, {oc}u, {k}u, {stride}u, {pad}u, {oh}u, {ow}u, {kbits}, "
                             f"{thr}, {alpha}, {bits}, {out});")
            else:
                calls.append(f"    hyb_g_bdense({src}, {names['weights']}, "
                             f"{h * w * words_for(c)}u, {oc}u, {kbits}, {thr}, {alpha}, "
                             f"{bits}, {out});")
        elif op == "conv2d":
            calls.append(f"    hyb_g_conv({src}, {names['weight']}, {names.get('bias', 'NULL')}, "
                         f"{c}u, {h}u, {w}u, {oc}u, {p['kernel_size']}u, {p['stride']}u, "
                         f"{p['padding']}u, {oh}u, {ow}u, {dst});")
        elif op == "dense":
            calls.append(f"    hyb_g_dense({src}, {names['weight']}, {names.get('bias', 'NULL')}, "
                         f"{c * h * w}u, {oc}u, {dst});")
        elif op == "affine":
            scale = names.get("scale", "NULL")
            calls.append(f"    hyb_g_affine({src}, {scale}, {names['shift']}, {c}u, {h * w}u, "
                         f"{dst});")
        elif op == "prelu":
            calls.append(f"    hyb_g_prelu({src}, {names['slope']}, {c}u, {h * w}u, {dst});")
        elif op == "add":
            other = _ref(nodes, offsets, node.inputs[1])
            calls.append(f"    hyb_g_add({src}, {other}, {c * h * w}u, {dst});")
        elif op in ("maxpool2d", "avgpool2d"):
            avg = int(op == "avgpool2d")
            calls.append(f"    hyb_g_pool({src}, {c}u, {h}u, {w}u, {p['kernel_size']}u, "
                         f"{p['stride']}u, {p['padding']}u, {oh}u, {ow}u, {avg}, "
                         f"{int(p.get('count_include_pad', False))}, {dst});")
        elif op == "global_avgpool":
            calls.append(f"    hyb_g_mean({src}, {c}u, {h * w}u, {dst});")
        else:  # flatten: NCHW floats are already in flatten order
            calls.append(f"    hyb_g_copy({src}, {c * h * w}u, {dst});")
    return calls


def _geometry(model: GraphModel, i: int) -> tuple[int, int]:
    spec = model.header["graph"]["nodes"][i]
    return int(spec["stride"]), int(spec["padding"])


def generate_graph(header: dict[str, Any], arrays: dict[str, np.ndarray], fingerprint: str,
                   name: str) -> tuple[str, str, dict[str, int]]:
    """(NAME.h text, NAME.c text, sizes) of an engine graph, validated first."""
    from hybnn import __version__

    name = cx.check_name(name)
    model = GraphModel(header, arrays, fingerprint)  # every check of the loader
    up = name.upper()
    offsets, floats, words = plan(model.nodes)
    out = model.nodes.index(next(n for n in model.nodes
                                 if n.name == header["graph"]["output"]))
    defs: list[str] = []
    calls = _calls(model, offsets, defs)
    weight_bytes = sum(a.nbytes for n in model.nodes for a in n.arrays.values())
    sizes = {"float_work": max(floats, 1), "bits_work": max(words, 1),
             "work_words": (4 * max(floats, 1) + 7) // 8 + max(words, 1),
             "weight_words": (weight_bytes + 7) // 8, "classes": model.num_classes}
    c, h, w = model.input_shape
    lines = [
        f"/* {name}: generated by hybnn {__version__} from the engine graph {fingerprint[:16]}; "
        f"see {name}.h. */",
        f'#include "{name}.h"',
        "",
        graph_kernels({"pool" if n.op.endswith("pool2d") else n.op for n in model.nodes}),
        "",
        "/* ---- the model's arrays ---- */",
        *defs,
        "",
        "/* ---- what each class means ---- */",
        *cx._label_space(model, up),  # type: ignore[arg-type]
        "",
        "/* ---- forward pass: -1 if an activation is NaN ---- */",
        "static int hyb_forward(const float *x, float *f, uint64_t *b) {",
        "    (void)f;",
        "    (void)b;",
        *calls,
        "    return 0;",
        "}",
        "",
        f"int {name}_predict_r(const float *input, float *logits, float *work, uint64_t *bits) {{",
        f"    for (size_t i = 0; i < {up}_INPUT_SIZE; i++)",
        f"        if (input[i] != input[i]) return {up}_ERR_NAN;",
        f"    if (hyb_forward(input, work, bits)) return {up}_ERR_NAN;",
        f"    const float *out = work + {offsets[out]}u;",
        "    if (logits)",
        f"        for (size_t i = 0; i < {up}_NUM_CLASSES; i++) logits[i] = out[i];",
        f"    return hyb_g_argmax(out, {up}_NUM_CLASSES);",
        "}",
        "",
        f"#ifndef {up}_NO_STATIC_WORK",
        f"static float hyb_work[{up}_WORK_FLOATS];",
        f"static uint64_t hyb_bits[{up}_BITS_WORDS];",
        "",
        f"int {name}_predict(const float *input, float *logits) {{",
        f"    return {name}_predict_r(input, logits, hyb_work, hyb_bits);",
        "}",
        "",
        f"size_t {name}_predict_batch(const float *inputs, size_t n, float *logits, "
        "int *classes) {",
        "    size_t refused = 0;",
        "    for (size_t i = 0; i < n; i++) {",
        f"        const int r = {name}_predict(inputs + i * {up}_INPUT_SIZE, "
        f"logits ? logits + i * {up}_NUM_CLASSES : NULL);",
        "        if (classes) classes[i] = r;",
        "        refused += r < 0;",
        "    }",
        "    return refused;",
        "}",
        "#endif",
    ]
    about = cx._comment(
        f"Input: NCHW images of {c} x {h} x {w} floats, as the torch model takes them. Output: "
        f"{up}_NUM_CLASSES float logits and the class (see {up}_LABELS): the engine graph's, "
        "binary parts bit for bit, float convolutions within float32 rounding. Portable C99: "
        "no malloc, no libc. Generated: regenerate rather than edit. See docs/engine.md.")
    header_text = f"""/* {name}: a binary network graph from `hybnn export --format c`
 * (hybnn {__version__}).
 * Engine model fingerprint (SHA-256): {fingerprint}
{about} */
#ifndef HYBNN_{up}_H
#define HYBNN_{up}_H

#include <stddef.h>
#include <stdint.h>

#define {up}_INPUT_CHANNELS {c}u
#define {up}_INPUT_HEIGHT {h}u
#define {up}_INPUT_WIDTH {w}u
#define {up}_INPUT_SIZE {math.prod(model.input_shape)}u /* floats per sample */
#define {up}_NUM_CLASSES {model.num_classes}u
#define {up}_WORK_FLOATS {sizes["float_work"]}u /* float scratch of one call */
#define {up}_BITS_WORDS {sizes["bits_work"]}u /* uint64_t scratch of one call */
#define {up}_WEIGHT_BYTES {weight_bytes}u /* the model's const arrays */

#define {up}_ERR_NAN (-1) /* the input, or an activation, contains NaN */

#ifdef __cplusplus
extern "C" {{
#endif

extern const int32_t {up}_LABELS[{up}_NUM_CLASSES];
extern const char *const {up}_CLASS_NAMES[{up}_NUM_CLASSES];

/* Class of one image ({up}_INPUT_SIZE floats): the argmax of its logits (the first maximum on
 * ties), or {up}_ERR_NAN. logits: {up}_NUM_CLASSES floats written, or NULL. work and bits:
 * {up}_WORK_FLOATS floats and {up}_BITS_WORDS words of the caller's (reentrant). */
int {name}_predict_r(const float *input, float *logits, float *work, uint64_t *bits);

#ifndef {up}_NO_STATIC_WORK
/* {name}_predict_r with static buffers (not reentrant). */
int {name}_predict(const float *input, float *logits);

/* n images one after another: logits (n * {up}_NUM_CLASSES, or NULL) and classes (n, or NULL;
 * {up}_ERR_NAN for a refused image). Returns how many images were refused. */
size_t {name}_predict_batch(const float *inputs, size_t n, float *logits, int *classes);
#endif

#ifdef __cplusplus
}}
#endif

#endif
"""
    return header_text, "\n".join(lines) + "\n", sizes
