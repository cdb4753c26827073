"""CPU dispatch: the fastest supported kernels are picked, and every ISA gives identical bits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_reference import randomize

from hybnn.engine import available_isas, detect_isa, export_model, isa, load, pack_signs, set_isa
from hybnn.models import BinaryCNN, BNNHead


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.mark.skipif(not cpu_flags(), reason="needs /proc/cpuinfo (Linux)")
def test_fastest_supported_isa_is_picked():
    flags = cpu_flags()
    if {"avx512f", "avx512_vpopcntdq", "avx2"} <= flags:
        expected = "avx512"
    elif {"avx2", "popcnt"} <= flags:
        expected = "avx2"
    else:
        expected = "scalar"
    assert detect_isa() == expected
    if not os.environ.get("HYBNN_ENGINE_ISA"):
        assert isa() == expected  # nothing forced another one in this process
    assert available_isas()[-1] == expected


@pytest.fixture
def restore_isa():
    yield
    set_isa(None)


def test_set_isa_validates(restore_isa):
    with pytest.raises(ValueError, match="unknown ISA"):
        set_isa("neon9")
    set_isa("scalar")
    assert isa() == "scalar"
    missing = [i for i in ("avx2", "avx512") if i not in available_isas()]
    for name in missing:
        with pytest.raises(ValueError, match="does not support"):
            set_isa(name)


def test_every_isa_gives_identical_results(tmp_path, restore_isa):
    rng = np.random.default_rng(0)
    cnn = randomize(BinaryCNN(image_size=(28, 28)), seed=1)
    head = randomize(BNNHead(200, 3, hidden=(130, 64)), seed=2)
    export_model(cnn, tmp_path / "c.hybe")
    export_model(head, tmp_path / "h.hybe")
    images = rng.standard_normal((20, 1, 28, 28)).astype(np.float32)
    codes = rng.standard_normal((300, 200)).astype(np.float32)
    wide = rng.standard_normal((5, 1000)).astype(np.float32)
    results = {}
    for name in available_isas():
        set_isa(name)
        c, h = load(tmp_path / "c.hybe"), load(tmp_path / "h.hybe")
        results[name] = (
            c.accumulators(images),
            c.logits(images),
            h.accumulators(codes),
            h.logits(codes),
            pack_signs(wide),
        )
    base = results.pop("scalar")
    if not results:
        pytest.skip("only the scalar kernels run on this CPU (no second ISA to compare)")
    for other in results.values():
        for a, b in zip(base, other, strict=True):
            if isinstance(a, list):
                for x, y in zip(a, b, strict=True):
                    np.testing.assert_array_equal(x, y)
            else:
                np.testing.assert_array_equal(a, b)


def test_environment_variable_forces_an_isa():
    code = "from hybnn.engine import isa; print(isa())"
    env = {**os.environ, "HYBNN_ENGINE_ISA": "scalar"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "scalar", out.stderr
