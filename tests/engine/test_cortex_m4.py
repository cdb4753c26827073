"""The C export runs on a Cortex-M4 instruction set exactly as the engine computes.

A fully binary HyBNN trained briefly on real images (the ``real`` fixture of test_c_export.py)
is exported to C, built for ``-mcpu=cortex-m4`` (``CORTEX_M4_FLAGS``) into bare-metal firmware
with the real test images as a const array (bench/cortex_m4.py, which bench/embedded.py also
uses), booted in ``qemu-system-arm -M mps2-an386`` and read back over semihosting: every class
and every logit's bits equal the engine's. Skips without arm-none-eabi-gcc or qemu-system-arm
(Debian: gcc-arm-none-eabi, qemu-system-arm; ``make toolchains``).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_c_export import N_REAL, real  # noqa: F401  (real: the fixture of trained engine files)

from bench import cortex_m4
from hybnn.engine import load

# ~12 s on 2 cores: the fixture's brief training (~8 s), then ~1.5 billion emulated instructions
MISSING = cortex_m4.missing_tools()
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (Debian: "
                                "gcc-arm-none-eabi, qemu-system-arm)")


def test_fully_binary_hybnn_on_a_cortex_m4_equals_the_engine(real, tmp_path):  # noqa: F811
    engine_path, x, _ = real["fully-binary"]  # N_REAL real test images in [0, 1]
    assert len(x) == N_REAL >= 200
    engine = load(engine_path)
    assert engine.input_prep == "centered"
    elf = cortex_m4.build_firmware(engine_path, x, tmp_path / "fw")
    run = cortex_m4.run_firmware(elf)
    np.testing.assert_array_equal(run.classes, engine.predict(x))
    np.testing.assert_array_equal(run.logits.view(np.uint32), engine.logits(x).view(np.uint32))
    assert len(set(run.classes.tolist())) > 1  # not one class for every image
    # the timed pass ran every image, and the firmware fits a small Cortex-M4 without its images
    assert run.instructions_per_image > 10_000
    size = cortex_m4.sizes(elf)
    assert size["images_bytes"] == x.nbytes
    assert size["flash_bytes"] < 256 * 1024
    assert 0 < run.stack_bytes and size["data_bss_bytes"] + run.stack_bytes < 64 * 1024


def test_a_firmware_that_fails_is_reported(tmp_path):
    """A firmware that never prints `done` (here: an image the model refuses, NaN) raises."""
    from hybnn.engine import export_model
    from hybnn.models import BinaryEncoder, BNNHead, FullyBinaryHyBNN

    model = FullyBinaryHyBNN(BinaryEncoder((8, 8), latent_bits=20, channels=(4, 4, 4)),
                             BNNHead(20, 2))
    export_model(model.eval(), tmp_path / "fb.engine")
    x = np.full((2, 1, 8, 8), 0.25, np.float32)
    x[1, 0, 3, 3] = np.nan
    elf = cortex_m4.build_firmware(tmp_path / "fb.engine", x, tmp_path / "fw")
    with pytest.raises(RuntimeError, match="firmware failed"):
        cortex_m4.run_firmware(elf)


def test_a_binary_resnet_graph_on_a_cortex_m4_agrees_with_the_engine(tmp_path):
    """A small binary ResNet (bench/cortex_m4.py's RESNET geometry: float 7x7 stem and max
    pool, binary blocks, float 1x1 shortcuts, random weights) as M4 firmware on real test
    images: the engine's classes, its logits within float32 rounding (the float convolutions
    sum in another order), and it fits a 256 KiB flash / 64 KiB RAM M4."""
    import torch
    from test_c_export import _real_data
    from test_engine_graph import _randomize

    from hybnn.engine import export_model
    from hybnn.models.binary_resnet import BinaryResNet

    torch.manual_seed(1)
    model = _randomize(BinaryResNet(**{**cortex_m4.RESNET, "width": 12}), 1)
    export_model(model, tmp_path / "resnet.engine")
    test = _real_data()[1]  # ordered by class: images spread over it
    pick = np.linspace(0, len(test) - 1, 24).astype(int)
    x = np.ascontiguousarray(test.x[pick] - np.float32(0.5))
    want = load(tmp_path / "resnet.engine").logits(x)
    assert len(set(want.argmax(1).tolist())) > 1
    elf = cortex_m4.build_firmware(tmp_path / "resnet.engine", x, tmp_path / "fw")
    run = cortex_m4.run_firmware(elf)
    np.testing.assert_array_equal(run.classes, want.argmax(1))
    np.testing.assert_allclose(run.logits, want, rtol=cortex_m4.TOLERANCE,
                               atol=cortex_m4.TOLERANCE * np.abs(want).max())
    size = cortex_m4.sizes(elf)
    assert size["flash_bytes"] < 256 * 1024
    assert size["data_bss_bytes"] + run.stack_bytes < 64 * 1024
