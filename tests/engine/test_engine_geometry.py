"""Geometry limits: impossible or oversized layers are refused, in Python and again in C.

The subprocess tests are regressions: before overflow-checked sizes these calls wrapped a
size to a tiny buffer and crashed the interpreter (SIGSEGV), so they run in a child process
where a crash is a failed test, not a dead test runner.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybnn.engine import format as fmt
from hybnn.engine import geometry
from hybnn.engine.dispatch import _kernels
from hybnn.engine.ops import PackedLayer

SRC = Path(geometry.__file__).parents[2]
DOCS = Path(__file__).parents[2] / "docs" / "engine.md"
BIG_C, BIG_HW = (1 << 24) - 1, 1 << 23  # in range, but H * W * words(C) = 2^64 wraps to 0


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip


def test_limits_are_the_c_extensions():
    assert (geometry.MAX_DIM, geometry.MAX_ELEMENTS) == (_kernels.MAX_DIM, _kernels.MAX_ELEMENTS)


def test_wrapping_conv_geometry_raises_instead_of_crashing():
    """PackedLayer.conv2d with large in-range dimensions (whose sizes wrap) used to SIGSEGV."""
    proc = _child(f"""
        import numpy as np
        from hybnn.engine.ops import PackedLayer
        from hybnn.engine.dispatch import _kernels
        c, hw = {BIG_C}, {BIG_HW}
        w = np.zeros((1, 1, 1, (c + 63) // 64), np.uint64)
        thr, flips = np.zeros(1, np.int32), np.ones(1, np.int8)
        try:
            layer = PackedLayer.conv2d(w, c, hw, hw, stride=hw, thresholds=thr)
            layer.signs(np.zeros((1, 0), np.uint64))
        except ValueError as exc:
            print("python:", exc)
        # the same layer straight to C, past the Python checks: C refuses it too
        spec = ("conv", c, hw, hw, 1, 1, hw, 0, w, thr, flips)
        for inp, layers in [(("image", c, hw, hw), [spec]), (("image", 1, 1, 1), [spec])]:
            try:
                _kernels.Network(inp, layers)
            except ValueError as exc:
                print("c:", exc)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("more than the limit") == 1
    assert proc.stdout.count("c: ") == 2 and proc.stdout.count("limits:") == 2


def test_forged_file_with_wrapping_geometry_and_a_valid_checksum_is_refused(tmp_path):
    """An engine file with such a geometry used to load, then under-allocate at run time."""
    w = np.zeros((1, 1, 1, (BIG_C + 63) // 64), np.uint64)
    header = {
        "kind": fmt.KIND, "format_version": fmt.FORMAT_VERSION,
        "input": {"kind": "image", "channels": BIG_C, "height": BIG_HW, "width": BIG_HW},
        "layers": [
            {"op": "conv2d", "in_channels": BIG_C, "in_height": BIG_HW, "in_width": BIG_HW,
             "out_channels": 1, "kernel_size": 1, "stride": BIG_HW, "padding": 0,
             "weights": "w", "thresholds": "t", "flips": "f"},
            {"op": "output", "in_bits": 1, "in_words": 1, "out_features": 1, "weights": "ow",
             "alpha": "a", "bn_scale": "a", "bn_shift": "a"},
        ],
    }  # fmt: skip
    arrays = {"w": w, "t": np.zeros(1, np.int32), "f": np.ones(1, np.int8),
              "ow": np.zeros((1, 1), np.uint64), "a": np.ones(1, np.float32)}
    fmt.write(tmp_path / "forged", header, arrays)
    proc = _child(f"""
        import numpy as np
        from hybnn.engine import load
        from hybnn.errors import ArtifactError
        try:
            model = load({str(tmp_path / "forged")!r})
        except ArtifactError as exc:
            print(exc)
        else:  # packed words in (the runtime's own path for chained layers): reads past x
            model._net.run(np.zeros(0, np.uint64), 2, 1, np.zeros(1, np.int64), 1, 1)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "input values per sample" in proc.stdout and "more than the limit" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 8, 8, 4, 3, 1, 3), "padding must be an integer in \\[0, 2\\]"),
        ((3, 8, 8, 4, 3, 1, -1), "padding"),
        ((3, 2, 2, 4, 5, 1, 1), "does not fit"),
        ((0, 8, 8, 4, 3, 1, 1), "in_channels"),
        ((3, 8, 8, 0, 3, 1, 1), "out_channels"),
        ((3, 8, 8, 4, 3, 0, 1), "stride"),
        ((3, 8, 2**24, 4, 3, 1, 1), "width"),
        ((2**16, 2**10, 2**10, 1, 1, 1, 0), "input values per sample"),
        ((2**20, 1, 1, 1, 9, 1, 8), "values per dot product"),
        ((3, 8, 8, 4, True, 1, 0), "kernel_size"),
        ((3, 8.0, 8, 4, 3, 1, 0), "height"),
    ],
)
def test_impossible_conv_geometry_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        geometry.conv2d(*args)


def test_packed_layer_refuses_impossible_geometry_with_a_clear_error():
    w = np.zeros((4, 3, 3, 1), np.uint64)
    with pytest.raises(ValueError, match="padding"):
        PackedLayer.conv2d(w, 3, 8, 8, padding=3)
    with pytest.raises(ValueError, match="does not fit"):
        PackedLayer.conv2d(w, 3, 1, 1)
    with pytest.raises(ValueError, match="conv weights"):
        PackedLayer.conv2d(w[0], 3, 8, 8)
    with pytest.raises(ValueError, match="in_bits"):
        PackedLayer.dense(np.zeros((4, 1), np.uint64), 0)
    layer = PackedLayer.conv2d(w, np.int64(3), 8, 8, padding=np.int64(1))  # numpy ints are fine
    assert layer.out_shape == (8, 8, 4)


def test_a_network_is_initialised_once_and_huge_batches_are_refused():
    layer = PackedLayer.dense(np.zeros((4, 1), np.uint64), 10)
    with pytest.raises(ValueError, match="initialised twice"):
        layer._net.__init__(("rows", 10), [])
    with pytest.raises(ValueError, match="batch"):
        layer._net.run(np.zeros(1, np.float32), 0, 2**62, np.zeros(4, np.int32), 3, 1)
    assert (layer.accumulators(np.ones((2, 10), np.float32)) == 10).all()  # still works


_log_dims = st.one_of(st.integers(0, 70), st.integers(0, 2**26), st.sampled_from(
    [BIG_C, BIG_C + 1, BIG_HW, 2**26, 2**26 + 1, 2**32, 2**63 - 1]))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(c=_log_dims, h=_log_dims, w=_log_dims, o=_log_dims, k=st.integers(0, 40) | _log_dims,
       s=_log_dims, p=st.integers(-1, 40) | _log_dims)  # fmt: skip
def test_python_and_c_agree_on_every_conv_geometry(c, h, w, o, k, s, p):
    """Python refuses a geometry exactly when C does (C then only lacks the weights here)."""
    try:
        geometry.input_layer("image", (c, h, w))
        geometry.conv2d(c, h, w, o, k, s, p)
        python_ok = True
    except ValueError:
        python_ok = False
    empty = np.zeros(0, np.uint64)
    spec = ("conv", c, h, w, o, k, s, p, empty, np.zeros(0, np.int32), np.zeros(0, np.int8))
    try:
        _kernels.Network(("image", c, h, w), [spec])
        raise AssertionError("empty weights were accepted")
    except (ValueError, OverflowError) as exc:
        c_geometry_ok = not re.search("limits|Python int too large|signed integer", str(exc))
    assert python_ok == c_geometry_ok, (python_ok, c_geometry_ok)


@settings(max_examples=200, deadline=None)
@given(bits=_log_dims, words=_log_dims, out=_log_dims)
def test_python_and_c_agree_on_every_dense_geometry(bits, words, out):
    try:
        geometry.dense(bits, words, out)
        python_ok = True
    except ValueError:
        python_ok = False
    spec = ("dense", bits, words, out, np.zeros(0, np.uint64), None, np.zeros(0, np.int8))
    try:
        _kernels.Network(("rows", max(bits, 1)), [spec])
        raise AssertionError("empty weights were accepted")
    except (ValueError, OverflowError) as exc:
        msg = str(exc)
        c_geometry_ok = not re.search("limits|Python int too large|signed integer", msg)
        c_geometry_ok = c_geometry_ok or "does not match the previous layer" in msg
    assert python_ok == c_geometry_ok, (python_ok, c_geometry_ok, msg)


def test_docs_state_the_limits_the_code_enforces():
    text = DOCS.read_text()
    for value in (geometry.MAX_DIM, geometry.MAX_ELEMENTS, fmt.MAX_HEADER, fmt.MAX_FILE_BYTES):
        assert f"{value:,}" in text, value


@pytest.mark.parametrize("inp", [("image", 1, 4, 4, float("nan")), ("image", 1, 4, 4, float("inf")),
                                 ("rows", 8, 1, 1, 0.5)])
def test_input_shift_must_be_finite_and_only_on_images(inp):
    spec = ("dense", 8, 1, 2, np.zeros(2, np.uint64), None, np.ones(2, np.int8))
    with pytest.raises(ValueError, match="input shift"):
        _kernels.Network(inp, [spec])
