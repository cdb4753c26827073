"""The NEON kernels compute on aarch64 exactly what the engine computes on x86.

The engine's C core (``csrc`` without the CPython module) and ``neon_driver.c`` are built for
aarch64 (``aarch64-linux-gnu-gcc -static``, setup.py's flags; bench/aarch64.py, which also
counts their instructions) and run under ``qemu-aarch64``:

* kernel level, inside one aarch64 binary: dispatch picks the NEON table; its microkernels
  (contiguous and indirect, store and add, every K block length 1..31, with all-zero and
  all-ones words), fused threshold kernels (thresholds at the counts, one either side, -1,
  the dot product's length, the group padding), ``thr_bits`` on counts up to 2^30 and sign
  packing of widths 1..1000 (±0, ±inf, NaN anywhere) equal the scalar table's;
* network level: with each kernel table forced in turn (scalar, neon), the logits and every
  layer's integer accumulators on real test images equal the x86 engine's, bit for bit, from
  float input (sign packing, the first convolution's patch path) and from packed words (the
  first convolution as a convolution). Networks: the three models test_c_export.py's ``real``
  fixture trains briefly on real images (a head on a VAE's codes, a fully binary HyBNN, a
  binary CNN), and a fully binary HyBNN with awkward widths: convs of 24, 200 and 45 channels
  (tails in each pixel's last word; 36 words per dot product, past one K block), dense
  100 -> 2100 -> 37 (a 33-word dot product with thresholds) and a 10-class output. The trained
  models are marked slow (their training takes most of the time); the awkward network runs on
  real test images without training;
* graph level (binary ResNets, small random widths, on real test images): the engine's fused
  plan, step by step as hybnn.engine.graph runs it (binary layers, fused float epilogues, float
  convolutions, pooling), replayed on the x86 engine's own inputs of each step: binary layers,
  epilogues (signs packed included), pooling and the other per-value ops bit-exact, float
  convolutions (and the classifier's sums) within twice the float32 rounding bound the x86
  float-convolution test uses (both sides round); run end to end, every value up to the global
  pooling equals the x86 engine's on its scalar ISA (the same C float loops, no FMA) bit for
  bit, and the logits are within float32 rounding of the x86 engine's default run, classes equal.

Skips without aarch64-linux-gnu-gcc or qemu-aarch64 (Debian: gcc-aarch64-linux-gnu, qemu-user).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_reference import randomize
from test_c_export import N_REAL, _real_data, real  # noqa: F401  (real: a fixture)

from bench import aarch64
from hybnn.data.prep import prepare
from hybnn.engine import export_model, pack_images, set_isa

MISSING = aarch64.missing_tools()
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (Debian: "
                                "gcc-aarch64-linux-gnu, qemu-user)")
N_IMAGES = 200  # of the fixture's N_REAL real test images, per trained network
N_AWKWARD = 64  # real test images through the awkward network


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    return aarch64.build_driver(tmp_path_factory.mktemp("aarch64"))


def test_neon_kernel_table_equals_scalar_in_one_aarch64_binary(driver):
    proc = subprocess.run([aarch64.QEMU, str(driver), "kernels"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    word, checks = proc.stdout.split()
    assert word == "ok" and int(checks) > 3000  # every check above ran


def _awkward(tmp_path: Path) -> Path:
    from hybnn.models import BinaryEncoder, BNNHead, FullyBinaryHyBNN

    encoder = BinaryEncoder((28, 28), latent_bits=100, channels=(24, 200, 45))
    model = randomize(FullyBinaryHyBNN(encoder, BNNHead(100, 10, hidden=(2100, 37))), seed=3)
    export_model(model, tmp_path / "awkward.engine")
    return tmp_path / "awkward.engine"


def _assert_same_on_aarch64(driver, engine_path: Path, x: np.ndarray, words: np.ndarray,
                            tmp_path: Path) -> None:
    net = tmp_path / "model.net"
    model = aarch64.write_net(engine_path, net)
    for data, packed in ((x, False), (words, True)):
        ref_logits, ref_accs = aarch64.x86_reference(model, data, packed, trace=True)
        assert len(set(ref_logits.argmax(1).tolist())) > 1  # not one class for every image
        for isa in aarch64.ISAS:
            logits, accs = aarch64.run_driver(driver, net, model, data, packed, isa, trace=True)
            np.testing.assert_array_equal(logits.view(np.uint32), ref_logits.view(np.uint32),
                                          err_msg=f"{isa} logits, words={packed}")
            for layer, (got, want) in enumerate(zip(accs, ref_accs, strict=True)):
                np.testing.assert_array_equal(got, want, err_msg=f"{isa} layer {layer}")


@pytest.mark.slow  # ~20 s on 2 busy cores, most of it the fixture's training
@pytest.mark.parametrize("kind", ["head", "bcnn", "fully-binary"])
def test_trained_networks_on_real_images_equal_the_x86_engine(driver, real, kind,  # noqa: F811
                                                              tmp_path):
    engine_path, x, words = real[kind]
    assert len(x) == N_REAL >= N_IMAGES
    _assert_same_on_aarch64(driver, engine_path, x[:N_IMAGES], words[:N_IMAGES], tmp_path)


def test_awkward_widths_on_real_images_equal_the_x86_engine(driver, tmp_path):
    engine_path = _awkward(tmp_path)
    layers = aarch64.write_net(engine_path, tmp_path / "probe.net").geometry
    kwords = [g.kernel_size**2 * -(-g.in_channels // 64) for g in layers]
    assert max(kwords[:3]) > 31 and kwords[5] > 31  # a conv and a dense past one K block
    x = np.ascontiguousarray(_real_data()[1].x[:N_AWKWARD])  # in [0, 1]; the engine centres
    _assert_same_on_aarch64(driver, engine_path, x, pack_images(prepare(x, "centered")),
                            tmp_path)


# ---- graphs -------------------------------------------------------------------------------
U = 2.0**-24
N_GRAPH = 16  # real test images through each ResNet


def _resnet(stem: str, tmp_path: Path) -> Path:
    from test_engine_graph import _randomize

    from hybnn.models.binary_resnet import BinaryResNet

    width = int(np.random.default_rng(len(stem)).integers(5, 24))  # tails in every word
    torch.manual_seed(1)
    model = _randomize(BinaryResNet(10, 1, width, (1, 1, 1, 1), scaling="learned", stem=stem,
                                    image_size=(28, 28)), 2)
    export_model(model, tmp_path / f"{stem}.engine")
    return tmp_path / f"{stem}.engine"


def _float_sum_bound(step: aarch64.GraphStep, xs: list[np.ndarray], want: np.ndarray
                     ) -> np.ndarray:
    """2 x (K + 2) u M per value, M the op on absolute values, K the terms of a sum: the x86
    float-convolution test's bound for each side (plus a batch norm's two roundings)."""
    x = torch.from_numpy(np.abs(xs[0]).astype(np.float64))
    if step.kind == "mean":
        k, mag = xs[0].shape[2] * xs[0].shape[3], x.mean(dim=(2, 3), keepdim=True).numpy()
    else:
        w, bias = (torch.from_numpy(np.abs(b).astype(np.float64)) if b is not None else None
                   for b in step.blobs[:2])
        assert w is not None
        if step.kind == "dense":
            k, mag = w.shape[1], F.linear(x.reshape(len(x), -1), w, bias).numpy()
        else:
            _, _, kk, s, p = step.ints
            k, mag = w.shape[1] * kk * kk, F.conv2d(x, w, bias, s, p).numpy()
            scale, shift = step.blobs[2:]
            if scale is not None and shift is not None:  # the batch norm it stores through
                mag = mag * _channels(np.abs(scale)) + _channels(np.abs(shift))
    return 2 * (k + 2) * U * mag.reshape(want.shape)


def _channels(v: np.ndarray) -> np.ndarray:
    return v[None, :, None, None]


def _same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    want = np.ascontiguousarray(want)
    return got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_binary_resnet_graphs_on_real_images_equal_the_x86_engine(driver, stem, tmp_path):
    engine_path = _resnet(stem, tmp_path)
    model, steps = aarch64.write_graph(engine_path, tmp_path / "model.graph")
    prog = tmp_path / "model.graph"
    assert {"bin", "ew", "conv", "pool", "mean", "dense"} <= {st.kind for st in steps}
    test = _real_data()[1]  # ordered by class: images spread over it, centred
    pick = np.linspace(0, len(test) - 1, N_GRAPH).astype(int)
    x = np.ascontiguousarray(test.x[pick] - np.float32(0.5))
    values = model.run(x, keep=True)  # this host's default ISA: float convolutions with FMA
    want = model.logits(x)
    assert len(set(want.argmax(1).tolist())) > 1
    try:
        set_isa("scalar")
        plain = model.run(x, keep=True)  # the portable float loops aarch64 runs too
    finally:
        set_isa(None)
    first_mean = next(k for k, st in enumerate(steps) if st.kind == "mean")
    for isa in aarch64.ISAS:
        _, outs = aarch64.run_graph(driver, prog, model, steps, x, isa, "replay", values)
        for step, got in zip(steps, outs, strict=True):
            for j, value in zip(step.out, got, strict=True):
                ref = values[j - 1]
                if step.kind in ("conv", "dense", "mean"):
                    xs = [values[i - 1] for i in step.feed]
                    err = np.abs(value.astype(np.float64) - ref.reshape(value.shape))
                    assert (err <= _float_sum_bound(step, xs, value)).all(), (isa, step.kind, j)
                else:
                    assert _same_bits(value, ref), (isa, step.kind, j)
        logits, trace = aarch64.run_graph(driver, prog, model, steps, x, isa, "trace")
        for step, got in list(zip(steps, trace, strict=True))[:first_mean]:
            for j, value in zip(step.out, got, strict=True):
                assert _same_bits(value, plain[j - 1]), (isa, step.kind, j)
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        assert (logits.argmax(1) == want.argmax(1)).all()
