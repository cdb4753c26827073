"""Interrupted runs lose nothing: artifact directories are replaced as a unit, two writers
never corrupt one, ``--out`` never overwrites an artifact of another kind, checkpoints are
bound to their data, and ``pretrain``, ``distill``, ``train`` and ``reproduce`` resume after
kill -9 exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hybnn.artifacts import load_artifact, save_artifact
from hybnn.errors import ArtifactError
from hybnn.models import BNNHead
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.train import fit_classifier


def hybnn(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "hybnn", *args],
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_concurrent_saves_of_one_artifact_always_leave_it_loadable(tmp_path):
    target = tmp_path / "model"
    errors: list[BaseException] = []

    def writer(value: float) -> None:
        try:
            for _ in range(15):
                save_artifact(target, "model", {"w": torch.full((64,), value)}, {"v": value})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(float(v),)) for v in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # readers see a whole artifact at any time
        if (target / "meta.json").is_file():
            tensors, meta = load_artifact(target, "model")
            assert float(tensors["w"][0]) == meta["config"]["v"]
    for t in threads:
        t.join()
    assert not errors, errors
    tensors, meta = load_artifact(target, "model")
    assert torch.all(tensors["w"] == meta["config"]["v"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left


def test_a_new_save_keeps_the_other_files_of_the_directory(tmp_path):
    save_artifact(tmp_path / "m", "model", {"w": torch.zeros(2)}, {})
    (tmp_path / "m" / "notes.txt").write_text("mine")
    save_artifact(tmp_path / "m", "model", {"w": torch.ones(2)}, {})
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"


def test_an_artifact_of_another_kind_or_a_plain_folder_is_never_overwritten(tmp_path):
    save_artifact(tmp_path / "enc", "encoder", {"w": torch.zeros(2)}, {})
    before = (tmp_path / "enc" / "weights.safetensors").read_bytes()
    with pytest.raises(ArtifactError, match="holds a 'encoder' artifact"):
        save_artifact(tmp_path / "enc", "model", {"w": torch.ones(2)}, {})
    assert (tmp_path / "enc" / "weights.safetensors").read_bytes() == before
    (tmp_path / "runs" / "keep").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="sub-directories"):
        save_artifact(tmp_path / "runs", "model", {"w": torch.ones(2)}, {})
    assert (tmp_path / "runs" / "keep").is_dir()


@pytest.mark.slow
def test_train_out_an_encoder_directory_is_refused_before_training(tmp_path):
    enc = tmp_path / "enc"
    hybnn("pretrain", "--data", "digits", "--epochs", "1", "--out", str(enc))
    for split in ("train", "test"):
        hybnn("extract", "--encoder", str(enc), "--data", "digits", "--task", "0v1",
              "--split", split, "--out", str(tmp_path / f"{split}.safetensors"))
    before = {p.name: p.read_bytes() for p in enc.iterdir()}
    proc = hybnn("train", "--codes", str(tmp_path / "train.safetensors"), "--out", str(enc),
                 check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("hybnn: error: ")
    assert "'encoder' artifact" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in enc.iterdir()} == before  # no checkpoint either


def test_resume_on_codes_of_another_encoder_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.where(rng.random((64, 32)) < 0.5, -1.0, 1.0).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 2, 64))
    cfg = TrainConfig(epochs=2, batch_size=16)
    ckpt = tmp_path / "checkpoint.pt"
    fit_classifier(BNNHead(32, 2, (8,)), (x, y), None, cfg, checkpoint=ckpt, progress=False)
    other = -x  # same count and shape: another encoder's codes of the same images
    with pytest.raises(ArtifactError, match="belongs to another run"):
        fit_classifier(BNNHead(32, 2, (8,)), (other, y), None, cfg, checkpoint=ckpt,
                       resume=True, progress=False)


def kill_when(args: list[str], ready: callable, timeout: float = 300) -> None:
    """Start ``hybnn args`` and SIGKILL it once ``ready()`` holds."""
    proc = subprocess.Popen([sys.executable, "-m", "hybnn", *args],
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -9


def checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:  # absent, or being replaced
        return 0


@pytest.mark.slow
def test_pretrain_resumed_after_kill_9_gives_the_same_encoder(tmp_path):
    args = ["pretrain", "--data", "digits", "--epochs", "5", "--seed", "4"]
    killed = tmp_path / "killed"
    kill_when([*args, "--out", str(killed)],
              lambda: checkpoint_epoch(killed / "checkpoint.pt") >= 2)
    assert not (killed / "meta.json").exists()
    hybnn(*args, "--out", str(killed), "--resume")
    hybnn(*args, "--out", str(tmp_path / "reference"))
    fp = [json.loads((d / "meta.json").read_text())["fingerprint"]
          for d in (killed, tmp_path / "reference")]
    assert fp[0] == fp[1]  # bit-identical weights
    assert not (killed / "checkpoint.pt").exists()


@pytest.mark.slow
def test_distill_and_train_resumed_after_kill_9_give_the_same_artifacts(tmp_path):
    """Every trainer runs the one epoch loop (:mod:`hybnn.pipeline.loop`), so each resumes."""
    hybnn("pretrain", "--data", "digits", "--epochs", "2", "--out", str(tmp_path / "vae"))
    hybnn("extract", "--encoder", str(tmp_path / "vae"), "--data", "digits", "--out",
          str(tmp_path / "codes.safetensors"))
    runs = {
        "distill": ["distill", "--encoder", str(tmp_path / "vae"), "--data", "digits",
                    "--epochs", "6", "--seed", "3"],
        "train": ["train", "--codes", str(tmp_path / "codes.safetensors"), "--epochs", "30",
                  "--seed", "3"],
    }
    for name, args in runs.items():
        killed = tmp_path / f"{name}-killed"
        kill_when([*args, "--out", str(killed)],
                  lambda k=killed: checkpoint_epoch(k / "checkpoint.pt") >= 2)
        assert not (killed / "meta.json").exists(), name
        hybnn(*args, "--out", str(killed), "--resume")
        hybnn(*args, "--out", str(tmp_path / f"{name}-reference"))
        fp = [json.loads((d / "meta.json").read_text())["fingerprint"]
              for d in (killed, tmp_path / f"{name}-reference")]
        assert fp[0] == fp[1], name  # bit-identical weights


@pytest.mark.slow
def test_reproduce_resumed_after_kill_9_gives_the_same_results(tmp_path):
    args = ["reproduce", "--data", "digits", "--tasks", "0v1", "--seeds", "0", "1",
            "--vae-epochs", "2", "--head-epochs", "6", "--cnn-epochs", "2"]
    killed = tmp_path / "killed"
    kill_when([*args, "--out", str(killed)],
              lambda: checkpoint_epoch(killed / "models" / "0v1" / "hybnn-seed1"
                                       / "checkpoint.pt") >= 2)
    hybnn(*args, "--out", str(killed), "--resume")
    hybnn(*args, "--out", str(tmp_path / "reference"))
    got, want = (json.loads((d / "results.json").read_text())["tasks"]["0v1"]
                 for d in (killed, tmp_path / "reference"))
    for run in ("hybnn", "bcnn_unit", "bcnn_centered", "fpcnn"):
        assert got[run]["accs"] == want[run]["accs"], run
