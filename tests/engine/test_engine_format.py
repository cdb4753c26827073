"""The engine file refuses everything but an intact file, and the runtime refuses bad input.

The property-based fuzz of every field is in test_engine_fuzz.py; version-1 files in
test_engine_legacy.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from engine_reference import randomize
from forge import contents
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from hybnn.engine import export_model, load
from hybnn.engine import format as fmt
from hybnn.errors import ArtifactError, DataError
from hybnn.models import BinaryCNN, BNNHead


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "head.hybe"
    export_model(randomize(BNNHead(40, 3, hidden=(70,)), seed=4), path)
    return path


@pytest.fixture(scope="module")
def good_bytes(head_file):
    return head_file.read_bytes()


def _load_bytes(tmp_path, data: bytes):
    path = tmp_path / "x.hybe"
    path.write_bytes(data)
    return load(path)


def test_layout_is_documented(good_bytes):
    """A safetensors file: the JSON header and its checksum in the metadata, arrays as tensors."""
    size = int.from_bytes(good_bytes[:8], "little")
    table = json.loads(good_bytes[8 : 8 + size])
    meta = table.pop("__metadata__")
    assert set(meta) == {"hybnn", "fingerprint"}
    header = json.loads(meta["hybnn"])
    assert header["kind"] == "engine" and header["format_version"] == 2
    assert header["input"] == {"kind": "rows", "bits": 40}
    assert [layer["op"] for layer in header["layers"]] == ["dense", "output"]
    names = {layer[k] for layer in header["layers"] for k in layer if k in _ARRAY_KEYS}
    assert set(table) == names
    assert {t["dtype"] for t in table.values()} == {"U64", "I32", "I8", "F32"}
    assert meta["fingerprint"] == fmt.fingerprint(meta["hybnn"], st_load(good_bytes))
    assert load(io_path(good_bytes)).fingerprint == meta["fingerprint"]


_ARRAY_KEYS = ("weights", "thresholds", "flips", "alpha", "bn_scale", "bn_shift")


def io_path(data: bytes, name: str = "engine-file"):
    path = Path(tempfile.mkdtemp()) / name
    path.write_bytes(data)
    return path


def _edit_json(data: bytes, edit) -> bytes:
    """Rewrite the safetensors header (checksum untouched)."""
    size = int.from_bytes(data[:8], "little")
    table = json.loads(data[8 : 8 + size])
    edit(table)
    head = json.dumps(table).encode()
    return len(head).to_bytes(8, "little") + head + data[8 + size :]


def _header_edit(key, value):
    def edit(table):
        header = json.loads(table["__metadata__"]["hybnn"])
        header[key] = value
        table["__metadata__"]["hybnn"] = json.dumps(header)

    return edit


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "unreadable arrays"),
        (lambda b: b[:30], "truncated"),
        (lambda b: b[:5], "not a hybnn engine file"),
        (lambda b: b + b"\0", "unreadable arrays"),
        (lambda b: b"NOTHYBNN" + b[8:], "not a hybnn engine file"),
        (lambda b: (1 << 40).to_bytes(8, "little") + b[8:], "not a hybnn engine file"),
        (lambda b: b"", "not a hybnn engine file"),
        (lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], "checksum"),
        (lambda b: _edit_json(b, _header_edit("format_version", fmt.GRAPH_VERSION + 1)),
         "newer than this hybnn"),
        (lambda b: _edit_json(b, _header_edit("format_version", "2")), "unknown format version"),
        (lambda b: _edit_json(b, _header_edit("kind", "codes")), "not describe"),
        (lambda b: _edit_json(b, _header_edit("note", 1)), "checksum"),
        (lambda b: _edit_json(b, lambda t: t["__metadata__"].pop("hybnn")), "not a hybnn"),
        (lambda b: _edit_json(b, lambda t: t["__metadata__"].pop("fingerprint")), "checksum"),
        (lambda b: _edit_json(b, lambda t: t.pop("__metadata__")), "not a hybnn engine file"),
        (lambda b: b[:8] + b"{" + b"[" * 100_000 + b[9:], "unreadable safetensors header"),
    ],
)
def test_damaged_files_are_refused(tmp_path, good_bytes, mutate, message):
    with pytest.raises(ArtifactError, match=message):
        _load_bytes(tmp_path, mutate(good_bytes))


def test_deeply_nested_header_json_is_refused(tmp_path, good_bytes):
    deep = "[" * 100_000 + "]" * 100_000
    forged = _edit_json(good_bytes, lambda t: t["__metadata__"].update(hybnn=deep))
    with pytest.raises(ArtifactError, match="unreadable header"):
        _load_bytes(tmp_path, forged)


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read"):
        load(tmp_path / "absent.hybe")


def test_only_regular_files_of_bounded_size_are_read(tmp_path, good_bytes, monkeypatch):
    with pytest.raises(ArtifactError, match=r"directory|not a regular file"):
        load(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ArtifactError, match="not a regular file"):
        load(fifo)  # returns at once: a FIFO with no writer must not hang the reader
    monkeypatch.setattr(fmt, "MAX_FILE_BYTES", len(good_bytes) - 1)
    with pytest.raises(ArtifactError, match="more than the"):
        _load_bytes(tmp_path, good_bytes)


def test_the_format_is_read_from_the_content_not_the_name(tmp_path, good_bytes):
    for name in ("model.safetensors", "model.hybe", "model"):
        (tmp_path / name).write_bytes(good_bytes)
        assert load(tmp_path / name).num_classes == 3


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_random_corruption_or_truncation_raises_artifact_error(tmp_path, good_bytes, data):
    b = bytearray(good_bytes)
    if data.draw(st.booleans()):
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] = data.draw(st.integers(0, 255).filter(lambda v, i=i: v != b[i]))
    assume(bytes(b) != good_bytes)  # two edits of one byte can restore it
    try:
        _load_bytes(tmp_path, bytes(b))
    except ArtifactError:
        return
    # Loaded: only insignificant bytes changed (JSON whitespace padding the safetensors
    # header), so what the file says must be exactly what the original says.
    (h1, a1), (h2, a2) = contents(good_bytes), contents(bytes(b))
    assert h1 == h2 and a1.keys() == a2.keys()
    assert all(np.array_equal(a1[k], a2[k]) for k in a1)


def _resign(good: bytes, edit) -> bytes:
    """Re-encode the file with an edited header and a valid checksum (a forged, wrong file)."""
    header, arrays = contents(good)
    edit(header, arrays)
    return fmt.encode(header, arrays)


def _set(path, value):
    def edit(header, arrays):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        _set(("layers", 0, "in_bits"), 41),
        _set(("layers", 0, "out_features"), 71),
        _set(("layers", 1, "in_words"), 1),
        _set(("layers", 0, "weights"), "nope"),
        _set(("layers", 0, "op"), "conv3d"),
        _set(("layers", 1, "op"), "dense"),
        _set(("input", "bits"), -3),
        _set(("input", "kind"), "audio"),
        _set(("layers",), []),
        _set(("layers",), "dense"),
        _set(("num_classes",), 4),
        _set(("metadata",), [1, 2]),
        lambda h, a: a.update({"layers.0.thresholds": a["layers.0.thresholds"][:5]}),
        lambda h, a: a.update({"layers.0.flips": np.zeros(70, np.int8)}),
        lambda h, a: a.update({"layers.0.thresholds": np.full(70, 10**6, np.int32)}),
        lambda h, a: a.update({"layers.0.weights": a["layers.0.weights"].astype(np.int32)}),
        lambda h, a: a.update({"layers.0.weights": a["layers.0.weights"] | np.uint64(1 << 63)}),
        lambda h, a: a.update({"layers.1.alpha": np.full(3, np.nan, np.float32)}),
        lambda h, a: a.update({"layers.1.bn_shift": np.full(3, np.inf, np.float32)}),
        lambda h, a: a.update({"extra": np.zeros(2, np.int32)}),
        lambda h, a: a.update({"layers.0.weights": a["layers.0.weights"].astype(np.float64)}),
    ],
)
def test_forged_headers_are_refused(tmp_path, good_bytes, edit):
    try:
        forged = _resign(good_bytes, edit)
    except ValueError:  # our own writer refuses float64; an attacker's would not
        header, arrays = contents(good_bytes)
        edit(header, arrays)
        text = json.dumps(header)
        forged = st_save(arrays, metadata={"hybnn": text,
                                           "fingerprint": fmt.fingerprint(text, arrays)})
    with pytest.raises(ArtifactError):
        _load_bytes(tmp_path, forged)


def test_writes_are_atomic(tmp_path):
    export_model(randomize(BNNHead(8, 2, hidden=()), seed=0), tmp_path / "m.hybe")
    assert [p.name for p in tmp_path.iterdir()] == ["m.hybe"]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    path = tmp_path_factory.mktemp("cnn") / "cnn.hybe"
    export_model(randomize(BinaryCNN(image_size=(9, 9)), seed=1), path)
    return load(path)


def test_bad_inputs_raise_clear_errors(head_file, cnn):
    head = load(head_file)
    with pytest.raises(DataError, match=r"shape \(N, 40\)"):
        head.predict(np.zeros((2, 41), np.float32))
    with pytest.raises(DataError, match="float32"):
        head.predict(np.zeros((2, 40), np.float64))
    with pytest.raises(DataError, match=r"shape \(N, 40\)"):
        head.predict(np.zeros(40, np.float32))
    with pytest.raises(DataError, match="NaN"):
        head.logits(np.full((2, 40), np.nan, np.float32))
    with pytest.raises(DataError, match="NCHW"):
        cnn.predict(np.zeros((2, 9, 9, 1), np.float32))
    with pytest.raises(DataError, match="NaN"):
        cnn.predict(np.full((1, 1, 9, 9), np.nan, np.float32))
    with pytest.raises(DataError, match="uint8"):
        head.predict_packed(np.zeros((2, 5), np.int64))
    with pytest.raises(DataError, match="codes"):
        cnn.predict_packed(np.zeros((2, 5), np.uint8))


def test_non_contiguous_input_is_fine(head_file):
    head = load(head_file)
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    np.testing.assert_array_equal(head.predict(x.T), head.predict(np.ascontiguousarray(x.T)))


NO_TORCH = """
import importlib.abc, json, sys, types
import numpy as np

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked in this test")

sys.meta_path.insert(0, NoTorch())
import hybnn
# hybnn/engine/__init__.py also imports the exporter (torch): load the package without it
engine = types.ModuleType("hybnn.engine")
engine.__path__ = [sys.argv[1]]
sys.modules["hybnn.engine"] = engine
from hybnn.engine import format, packed
model = packed.load(sys.argv[2])
format.write(sys.argv[3], *format.read(sys.argv[2])[:2])
print(json.dumps([model.predict(np.zeros((2, 40), np.float32)).tolist(),
                  packed.load(sys.argv[3]).num_classes]))
assert not any(m.split(".")[0] == "torch" for m in sys.modules)
"""


def test_the_format_and_runtime_need_no_torch(head_file, tmp_path):
    engine_dir = Path(fmt.__file__).parent
    env = {**os.environ, "PYTHONPATH": str(engine_dir.parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(engine_dir), str(head_file), str(tmp_path / "copy")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    classes, num_classes = json.loads(proc.stdout)
    assert num_classes == 3 and len(classes) == 2
