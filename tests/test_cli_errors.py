"""The `hybnn` command on bad input: exit code 2, one `hybnn: error:` line, no traceback,
and nothing already on disk destroyed.

Each case prepares its files in its own directory; all commands then run at once (each
process spends seconds importing torch, so running them side by side keeps the suite fast),
and each test checks one result.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from hybnn.cli import main
from hybnn.encoders.vae import save as save_encoder
from hybnn.models import BinaryLatentVAE, BNNHead
from hybnn.models.io import save_model
from hybnn.pipeline.codes import CodeStore, pack_code_bits

pytestmark = pytest.mark.slow  # whole-CLI runs in subprocesses

FP_A, FP_B = "a" * 64, "b" * 64

CASES: dict[str, Callable[..., list[str]]] = {}


def case(setup: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """Register ``setup(tmp, write_idx) -> hybnn arguments`` to run in directory ``tmp``."""
    CASES[setup.__name__] = setup
    return setup


def code_store(path: Path, fingerprint: str, n: int = 32, bits: int = 16) -> Path:
    rng = np.random.default_rng(0)
    store = CodeStore(pack_code_bits(rng.integers(0, 2, (n, bits))), rng.integers(0, 2, n), bits,
                      fingerprint, {"task": "0v1", "num_classes": 2})
    return store.save(path)


@case
def truncated_idx(tmp, write_idx):
    images = write_idx(tmp / "images.idx", np.zeros((10, 28, 28), np.uint8))
    images.write_bytes(images.read_bytes()[:-100])
    write_idx(tmp / "labels.idx", np.arange(10, dtype=np.uint8) % 2)
    return ["train", "--model", "fpcnn", "--data", "images.idx,labels.idx", "--out", "out",
            "--epochs", "1"]


@case
def corrupt_npz(tmp, write_idx):
    np.savez(tmp / "data.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4))
    (tmp / "data.npz").write_bytes((tmp / "data.npz").read_bytes()[:100])
    return ["train", "--model", "bcnn", "--data", "data.npz", "--out", "out"]


@case
def nan_data(tmp, write_idx):
    x = np.full((4, 8, 8), 0.5, np.float32)
    x[2, 3, 3] = np.nan
    np.savez(tmp / "nan.npz", x=x, y=np.array([0, 1, 0, 1]))
    return ["train", "--model", "bcnn", "--data", "nan.npz", "--out", "out"]


@case
def missing_artifact(tmp, write_idx):
    return ["evaluate", "--model", "no-such-model", "--codes", "c.safetensors"]


@case
def foreign_codes(tmp, write_idx):
    save_model(tmp / "model", BNNHead(16, 2, (8,)), encoder_fingerprint=FP_A)
    code_store(tmp / "codes.safetensors", FP_B)
    return ["evaluate", "--model", "model", "--codes", "codes.safetensors"]


@case
def unwritable_out(tmp, write_idx):
    code_store(tmp / "codes.safetensors", FP_A)
    (tmp / "results").write_text("an earlier result\n")  # a file where --out needs a folder
    return ["train", "--codes", "codes.safetensors", "--out", "results/head", "--epochs", "1",
            "--hidden", "8"]


@case
def failed_extract_over_old_codes(tmp, write_idx):
    torch.manual_seed(0)
    save_encoder(tmp / "encoder", BinaryLatentVAE((8, 8), latent_bits=16), {})
    code_store(tmp / "codes.safetensors", FP_A)
    (tmp / "codes.before").write_bytes((tmp / "codes.safetensors").read_bytes())
    np.savez(tmp / "bad.npz", x=np.full((4, 8, 8), 2.0), y=np.arange(4))
    return ["extract", "--encoder", "encoder", "--data", "bad.npz", "--out", "codes.safetensors"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, write_idx) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    started = {}
    for name, setup in CASES.items():
        tmp = tmp_path_factory.mktemp(name)
        argv = [sys.executable, "-m", "hybnn.cli", *setup(tmp, write_idx)]
        env = {**os.environ, "HYBNN_NO_PROGRESS": "1", "HYBNN_CACHE": str(tmp / "cache")}
        started[name] = (tmp, argv, subprocess.Popen(argv, cwd=tmp, env=env, text=True,
                                                     stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE))
    results = {}
    for name, (tmp, argv, proc) in started.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (tmp, subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return results


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hybnn: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_truncated_idx_data(runs):
    tmp, result = runs["truncated_idx"]
    assert_one_line_error(result, "images.idx", "truncated")
    assert not (tmp / "out").exists()


def test_corrupt_npz_data(runs):
    _, result = runs["corrupt_npz"]
    assert_one_line_error(result, "data.npz", "not a readable .npz")


def test_nan_in_data(runs):
    _, result = runs["nan_data"]
    assert_one_line_error(result, "nan.npz", "NaN")


def test_missing_artifact(runs):
    _, result = runs["missing_artifact"]
    assert_one_line_error(result, "no-such-model", "not found")


def test_codes_of_another_encoder(runs):
    _, result = runs["foreign_codes"]
    assert_one_line_error(result, "bbbbbbbbbbbb", "aaaaaaaaaaaa", "re-extract")


def test_unwritable_out_keeps_what_is_in_the_way(runs):
    tmp, result = runs["unwritable_out"]
    assert_one_line_error(result, "cannot write", "results")
    assert (tmp / "results").read_text() == "an earlier result\n"


def test_failed_extract_leaves_the_previous_code_store_intact(runs):
    tmp, result = runs["failed_extract_over_old_codes"]
    assert_one_line_error(result, "bad.npz", "[0, 1]")
    assert (tmp / "codes.safetensors").read_bytes() == (tmp / "codes.before").read_bytes()
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".")] == []


# In-process through ``main``: the same error path, without the cost of a process.


def run_main(capsys, *args) -> subprocess.CompletedProcess:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)


def test_model_that_does_not_record_its_encoder(tmp_path, capsys):
    save_model(tmp_path / "model", BNNHead(16, 2, (8,)))  # saved by hand: no encoder record
    codes = code_store(tmp_path / "codes.safetensors", FP_A)
    result = run_main(capsys, "evaluate", "--model", tmp_path / "model", "--codes", codes)
    assert_one_line_error(result, "aaaaaaaaaaaa", "re-extract")


def test_impossible_training_settings(tmp_path, capsys):
    codes = code_store(tmp_path / "codes.safetensors", FP_A)
    result = run_main(capsys, "train", "--codes", codes, "--out", tmp_path / "head",
                      "--batch-size", "0", "--no-progress")
    assert_one_line_error(result, "--batch-size must be at least 1")
    assert not (tmp_path / "head").exists()


def test_json_output_is_strict_json_without_nan():
    import json

    from hybnn.cli import to_json

    text = to_json({"loss": float("nan"), "rows": [{"p": float("inf")}, {"p": 0.5}]})
    assert json.loads(text) == {"loss": None, "rows": [{"p": None}, {"p": 0.5}]}
    assert "NaN" not in text and "Infinity" not in text
