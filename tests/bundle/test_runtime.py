"""hybnn.runtime runs a bundle with numpy, ONNX Runtime and the C engine: no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hybnn.errors import DataError

pytest.importorskip("onnxruntime")

SRC = Path(__file__).resolve().parents[2] / "src"
NO_TORCH = '''
import importlib.abc, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not allowed here")
        return None
sys.meta_path.insert(0, NoTorch())
import numpy as np
from hybnn import runtime
model = runtime.load(sys.argv[1], threads=1)
x = np.load(sys.argv[2])
print(json.dumps({"classes": model.predict(x).tolist(), "names": list(model.label_space.names),
                  "torch": "torch" in sys.modules, "onnx": "onnx" in sys.modules,
                  "hybnn_modules": sorted(m for m in sys.modules if m.startswith("hybnn"))}))
'''


def test_runtime_runs_in_a_process_where_torch_cannot_be_imported(tmp_path, bundle_fp32,
                                                                  test_split):
    from hybnn import runtime

    x = test_split.x[:50]
    np.save(tmp_path / "x.npy", x)
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(bundle_fp32[0]),
                          str(tmp_path / "x.npy")], capture_output=True, text=True, env=env,
                         check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["torch"] is False
    assert got["onnx"] is False  # the graph is checked without the onnx package's import
    assert got["classes"] == runtime.load(bundle_fp32[0]).predict(x).tolist()
    assert got["names"] == [str(d) for d in range(10)]
    assert not any(m.startswith(("hybnn.models", "hybnn.pipeline")) for m in got["hybnn_modules"])


def test_inputs_are_checked(bundle_fp32):
    from hybnn import runtime

    model = runtime.load(bundle_fp32[0])
    good = np.full((2, 1, 8, 8), 0.5, np.float32)
    assert model.predict(good).shape == (2,)
    with pytest.raises(DataError, match="uint8 pixels 0-255 or floats"):
        model.predict(good.astype(np.int32))
    with pytest.raises(DataError, match=r"\(N, 1, 8, 8\)"):
        model.predict(good[:, :, :4])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        model.predict(good * 255)
    bad = good.copy()
    bad[1, 0, 3, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        model.codes(bad)
    assert model.predict(good[:0]).shape == (0,) and model.codes(good[:0]).shape == (0, 200)
    assert model.logits(good[:0]).shape == (0, 10)
    strided = np.full((2, 1, 8, 16), 0.5, np.float32)[..., ::2]
    np.testing.assert_array_equal(model.logits(strided), model.logits(good))


def test_threads_are_pinned(bundle_fp32):
    from hybnn import runtime
    from hybnn.onnxgraph.session import session_options

    opts = session_options(3)
    assert opts.intra_op_num_threads == 3 and opts.inter_op_num_threads == 3
    model = runtime.load(bundle_fp32[0], threads=2)
    assert model.threads == 2 and model.head.threads == 2
    with pytest.raises(ValueError, match="threads"):
        runtime.load(bundle_fp32[0], threads=0)


def test_predictions_do_not_depend_on_the_batch(bundle_fp32, test_split):
    from hybnn import runtime

    model = runtime.load(bundle_fp32[0])
    x = test_split.x[:64]
    whole = model.predict(x)
    single = np.concatenate([model.predict(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(whole, single)


def test_inputs_take_what_the_cli_takes(bundle_fp32, test_split):
    """uint8 0-255 and (N, H, W) / (H, W) images, as `hybnn predict` reads them."""
    from hybnn import runtime

    model = runtime.load(bundle_fp32[0])
    pixels = (test_split.x[:12, 0] * 255).round().astype(np.uint8)  # (N, H, W) uint8
    floats = pixels[:, None].astype(np.float32) / np.float32(255.0)
    want = model.logits(floats)
    np.testing.assert_array_equal(model.logits(pixels), want)
    np.testing.assert_array_equal(model.logits(floats[:, 0]), want)
    np.testing.assert_array_equal(model.logits(floats.astype(np.float64)), want)
    np.testing.assert_array_equal(model.logits(pixels[3]), want[3:4])
    np.testing.assert_array_equal(model.predict(pixels), model.predict(floats))
    with pytest.raises(DataError, match=r"\(N, 1, 8, 8\), \(N, 8, 8\) or \(8, 8\)"):
        model.predict(pixels[:, :4])
