"""Hostile engine files: every header field and every byte varied, the checksum re-stamped.

Each case builds a random network (conv geometry, dense widths, both input kinds, both
containers), forges it, and loads it. The only allowed outcomes: a clear ``ArtifactError``, or
a model whose accumulators and logits are exactly what the file's own arrays say
(:mod:`numpy_reference`). Anything else (another exception, a crash, a wrong number) fails.
``HYBNN_FUZZ_EXAMPLES`` sets the number of cases per test (default 400).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from forge import contents, encode, restamp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from numpy_reference import run

from hybnn.engine import format as fmt
from hybnn.engine import load
from hybnn.engine.packing import pack_sign_words, words_for
from hybnn.errors import ArtifactError

EXAMPLES = int(os.environ.get("HYBNN_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


@st.composite
def networks(draw) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A valid engine file's (header, arrays): 0-2 convolutions, 0-2 dense layers, an output."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layers: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}

    def add(spec: dict[str, Any], **arrs: np.ndarray) -> None:
        for key, arr in arrs.items():
            arrays[f"layers.{len(layers)}.{key}"] = arr
            spec[key] = f"layers.{len(layers)}.{key}"
        layers.append(spec)

    def hidden(out: int, kbits: int) -> dict[str, np.ndarray]:
        return {"thresholds": rng.integers(-1, kbits + 1, out).astype(np.int32),
                "flips": rng.choice(np.array([-1, 1], np.int8), out)}

    if draw(st.booleans()):
        c, h, w = draw(st.integers(1, 70)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
        inp = {"kind": "image", "channels": c, "height": h, "width": w}
        for _ in range(draw(st.integers(0, 2))):
            k = draw(st.integers(1, 4))
            p = draw(st.integers(max(0, (k - min(h, w) + 1) // 2), k - 1))
            s, o = draw(st.integers(1, 3)), draw(st.integers(1, 70))
            ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            spec = {"op": "conv2d", "in_channels": c, "in_height": h, "in_width": w,
                    "out_channels": o, "kernel_size": k, "stride": s, "padding": p,
                    "out_height": ho, "out_width": wo, "kbits": k * k * c}
            add(spec, weights=pack_sign_words(rng.random((o, k, k, c)) < 0.5),
                **hidden(o, k * k * c))
            c, h, w = o, ho, wo
        bits, words = c * h * w, h * w * words_for(c)
        neg = lambda o: pack_sign_words(rng.random((o, h, w, c)) < 0.5).reshape(o, words)  # noqa: E731
    else:
        bits = draw(st.integers(1, 150))
        words = words_for(bits)
        inp = {"kind": "rows", "bits": bits}
        neg = lambda o: pack_sign_words(rng.random((o, bits)) < 0.5)  # noqa: E731
    widths = [*draw(st.lists(st.integers(1, 70), max_size=2)), draw(st.integers(1, 5))]
    for i, o in enumerate(widths):
        spec = {"op": "output" if i == len(widths) - 1 else "dense", "in_bits": bits,
                "in_words": words, "out_features": o}
        if spec["op"] == "output":
            f = [rng.standard_normal(o).astype(np.float32) for _ in range(3)]
            add(spec, weights=neg(o), alpha=f[0], bn_scale=f[1], bn_shift=f[2])
        else:
            add(spec, weights=neg(o), **hidden(o, bits))
        bits, words = o, words_for(o)
        neg = lambda o, b=bits: pack_sign_words(rng.random((o, b)) < 0.5)  # noqa: E731
    header = {"kind": fmt.KIND, "format_version": fmt.FORMAT_VERSION, "arch": "fuzz",
              "num_classes": widths[-1], "input": inp, "layers": layers,
              "metadata": {"note": "fuzz"}}
    return header, arrays


HOSTILE = st.one_of(
    st.sampled_from([0, -1, 1, 2, 63, 64, 65, 2**24 - 1, 2**24, 2**26, 2**26 + 1, 2**31 - 1,
                     2**31, 2**32, 2**32 + 1, 2**46, 2**63 - 1, 2**63, 2**64, 2**64 + 1, -(2**63)]),
    st.integers(-(2**70), 2**70),
    st.booleans(), st.none(), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers()),
)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every field of a header (dict keys and list indices), depth first."""
    out = []
    items = list(obj.items()) if isinstance(obj, dict) else []
    items += list(enumerate(obj)) if isinstance(obj, list) else []
    for key, value in items:
        out.append((*prefix, key))
        out += _paths(value, (*prefix, key))
    return out


def _edit_header(draw, header: dict[str, Any]) -> str:
    path = draw(st.sampled_from(_paths(header)))
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    how = draw(st.sampled_from(["near", "hostile", "delete"]))
    if how == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif how == "near" and isinstance(old, int) and not isinstance(old, bool):
        parent[path[-1]] = old + draw(st.sampled_from([-2, -1, 1, 2, old, -old, 2**24, 2**40]))
    else:
        how = "hostile"
        parent[path[-1]] = draw(HOSTILE)
    return f"header {how} {'.'.join(map(str, path[-1:]))}"


def _edit_arrays(draw, rng: np.random.Generator, arrays: dict[str, np.ndarray]) -> str:
    name = draw(st.sampled_from(sorted(arrays)))
    arr = arrays[name]
    how = draw(st.sampled_from(["dtype", "shorter", "longer", "reshape", "extreme", "delete",
                                "extra", "noise"]))
    if how == "dtype":
        arrays[name] = arr.astype(draw(st.sampled_from(["<u8", "<i4", "<f4", "i1", "<i8", "<f8",
                                                        "u1", "<u2"])))
    elif how == "shorter":
        arrays[name] = arr.reshape(-1)[: draw(st.integers(0, max(0, arr.size - 1)))]
    elif how == "longer":
        arrays[name] = np.concatenate([arr.reshape(-1), arr.reshape(-1)[:1].repeat(3)])
    elif how == "reshape" and arr.size:
        arrays[name] = arr.reshape(-1)[None]
    elif how == "extreme":
        info = np.finfo(arr.dtype) if arr.dtype.kind == "f" else np.iinfo(arr.dtype)
        pick = [info.max, info.min, 0] + ([np.nan, np.inf] if arr.dtype.kind == "f" else [])
        arrays[name] = np.full(arr.shape, draw(st.sampled_from(pick)), arr.dtype)
    elif how == "delete":
        del arrays[name]
    elif how == "extra":
        arrays["unused"] = np.zeros(3, np.int32)
    elif how == "noise":
        raw = arr.copy().view(np.uint8).reshape(-1)
        if raw.size:
            raw[rng.integers(0, raw.size)] ^= np.uint8(1 << int(rng.integers(0, 8)))
        arrays[name] = raw.view(arr.dtype).reshape(arr.shape)
    return f"arrays {how}"


def _edit_bytes(draw, data: bytes) -> tuple[bytes, str]:
    b = bytearray(data)
    how = draw(st.sampled_from(["flip", "truncate", "append", "splice"]))
    if how == "truncate":
        del b[draw(st.integers(0, len(b) - 1)) :]
    elif how == "append":
        b += bytes(draw(st.integers(1, 64)))
    elif how == "splice":  # an 8-byte little-endian integer over any position
        at = draw(st.integers(0, len(b) - 8))
        value = draw(st.sampled_from([0, 1, 2**31, 2**63, 2**64 - 1]))
        b[at : at + 8] = value.to_bytes(8, "little")
    else:  # bit flips in the header (where most fields are) or anywhere
        head = int.from_bytes(data[:8], "little") + 8 if data[:8] != b"HYBNNENG" else 56 + 600
        end = min(head, len(b)) if draw(st.booleans()) else len(b)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, end - 1))] ^= 1 << draw(st.integers(0, 7))
    return bytes(b), f"bytes {how}"


def _check(tmp_path, data: bytes, outcome: str) -> None:
    path = tmp_path / "forged"
    path.write_bytes(data)
    try:
        model = load(path)
    except ArtifactError as exc:
        assert str(exc) and "\n" not in str(exc)
        event(f"{outcome}: refused")
        return
    event(f"{outcome}: loaded and checked")
    header, arrays, _ = fmt.read(path)
    x = np.random.default_rng(0).standard_normal((5, *model.input_shape)).astype(np.float32)
    accs, logits = run(header, arrays, x)
    for got, want in zip(model.accumulators(x), accs, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(model.logits(x), logits, rtol=1e-5, atol=1e-4)
    assert model.predict(x).shape == (5,)


@FUZZ
@given(net=networks(), legacy=st.booleans(), data=st.data())
def test_forged_fields_and_arrays_give_artifact_error_or_correct_model(
    tmp_path, net, legacy, data
):
    header, arrays = net
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kind = data.draw(st.sampled_from(["none", "header", "header", "arrays"]))
    outcome = "valid"
    if kind == "header":
        outcome = _edit_header(data.draw, header)
    elif kind == "arrays":
        outcome = _edit_arrays(data.draw, rng, arrays)
    try:
        forged = encode(header, arrays, legacy=legacy)
    except (ValueError, TypeError):  # the writer itself refuses (unsupported dtype, NaN text)
        event("writer refused")
        return
    _check(tmp_path, forged, outcome)


@FUZZ
@given(net=networks(), legacy=st.booleans(), data=st.data())
def test_mutated_bytes_with_a_valid_checksum_give_artifact_error_or_correct_model(
    tmp_path, net, legacy, data
):
    mutated, outcome = _edit_bytes(data.draw, encode(*net, legacy=legacy))
    _check(tmp_path, restamp(mutated), outcome)


def test_valid_networks_round_trip(tmp_path):
    """The generator itself makes files that load (else the fuzz would test nothing)."""

    @settings(max_examples=20, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(net=networks(), legacy=st.booleans())
    def valid(net, legacy):
        path = tmp_path / "valid"
        path.write_bytes(encode(*net, legacy=legacy))
        model = load(path)
        assert contents(path.read_bytes())[0]["layers"] == net[0]["layers"]
        assert model.num_classes == net[0]["num_classes"]

    valid()


@pytest.mark.parametrize("legacy", [False, True])
def test_restamp_gives_a_file_that_passes_the_checksum(legacy):
    """The forger works: a header edit re-stamped passes the checksum (and only then)."""
    header = {"kind": fmt.KIND, "format_version": fmt.FORMAT_VERSION,
              "input": {"kind": "rows", "bits": 3}, "layers": []}
    data = encode(header, {"a": np.zeros(2, np.int32)}, legacy=legacy)
    quote = b'\\"' if not legacy else b'"'  # the safetensors metadata escapes the header
    old, new = quote + b"bits" + quote + b": 3", quote + b"bits" + quote + b": 4"
    assert data.count(old) == 1
    with pytest.raises(ArtifactError, match="checksum"):
        fmt.decode(data.replace(old, new))
    assert fmt.decode(restamp(data.replace(old, new)))[0]["input"]["bits"] == 4
