"""One loaded model, many Python threads: the C code releases the GIL and must share nothing.

Also a regression test of two data races in C (the lazily built table of ``hyb_pack_bytes``
and the plain ``g_isa``): ``race_driver.c`` is built with ThreadSanitizer,
which reported both races before the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from engine_reference import randomize

import hybnn.engine
from hybnn.engine import available_isas, export_model, load, set_isa
from hybnn.models import BinaryCNN, BNNHead
from hybnn.models.binary_resnet import BinaryResNet

CSRC = Path(hybnn.engine.__file__).parent / "csrc"
CC = shutil.which("gcc") or shutil.which("clang")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("threads")
    export_model(randomize(BinaryCNN(image_size=(13, 13)), seed=5), tmp / "cnn")
    export_model(randomize(BNNHead(200, 4, hidden=(96,)), seed=6), tmp / "head")
    return load(tmp / "cnn"), load(tmp / "head")


def test_concurrent_predictions_on_one_model_equal_the_sequential_ones(models):
    cnn, head = models
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((n, 1, 13, 13)).astype(np.float32) for n in range(1, 25)]
    codes = [np.packbits(rng.random((n, 200)) < 0.5, axis=1) for n in range(1, 25)]
    want = [cnn.logits(x) for x in images], [head.predict_packed(c) for c in codes]
    stop = threading.Event()

    def toggle_isa() -> None:  # every ISA gives the same bits, so results must not change
        isas = available_isas()
        while not stop.is_set():
            for name in isas:
                set_isa(name)

    def job(i: int):
        j = i % len(images)
        return cnn.logits(images[j], threads=1 + i % 3), head.predict_packed(codes[j])

    toggler = threading.Thread(target=toggle_isa)
    toggler.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(job, range(4 * len(images))))
    finally:
        stop.set()
        toggler.join()
        set_isa(None)
    for i, (logits, classes) in enumerate(results):
        j = i % len(images)
        np.testing.assert_array_equal(logits, want[0][j])
        np.testing.assert_array_equal(classes, want[1][j])



def test_concurrent_runs_of_one_graph_model_equal_the_sequential_ones(tmp_path):
    """A binary ResNet graph (stem, pooling, fused epilogues, shortcuts): every call keeps its
    own activations, so threads that share the model never see each other's values."""
    model = randomize(BinaryResNet(5, 3, 8, (1, 1, 1, 1), stem="imagenet",
                                   image_size=(40, 36)), seed=7)
    export_model(model, tmp_path / "r.engine")
    engine = load(tmp_path / "r.engine")
    rng = np.random.default_rng(1)
    images = [rng.standard_normal((n, 3, 40, 36)).astype(np.float32) for n in (1, 2, 3, 5)]
    want = [engine.logits(x) for x in images]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: engine.logits(images[i % 4], threads=1 + i % 2),
                            range(24)))
    for i, logits in enumerate(got):
        np.testing.assert_array_equal(logits, want[i % 4])

@pytest.mark.skipif(CC is None, reason="needs a C compiler")
def test_no_data_races_under_thread_sanitizer(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # not ASan's, if set
    exe = tmp_path / "race_driver"
    sources = [CSRC / f"{n}.c" for n in ("dispatch", "kernels_scalar", "kernels_avx2",
                                         "kernels_avx512", "kernels_neon")]
    build = subprocess.run(
        [CC, "-O1", "-g", "-std=gnu11", "-fsanitize=thread", f"-I{CSRC}",
         str(Path(__file__).parent / "race_driver.c"), *map(str, sources), "-o", str(exe),
         "-lpthread"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if build.returncode:
        pytest.skip(f"no ThreadSanitizer here: {build.stderr[-300:]}")
    env["TSAN_OPTIONS"] = "exitcode=66"
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=120)
    if "FATAL: ThreadSanitizer" in run.stderr:  # e.g. an address layout TSan cannot use
        pytest.skip(f"ThreadSanitizer cannot run here: {run.stderr[-300:]}")
    assert "data race" not in run.stderr, run.stderr[-3000:]
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
