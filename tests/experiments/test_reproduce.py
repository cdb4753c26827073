"""`hybnn reproduce --quick` end to end on a small real data set (scikit-learn's digits)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUNS = ("hybnn", "bcnn_unit", "bcnn_centered", "fpcnn")
CELL_KEYS = {"acc_mean", "acc_std", "train_s_per_epoch", "model_bytes"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reproduce")
    cmd = [sys.executable, "-m", "hybnn.cli", "reproduce", "--quick", "--data", "digits",
           "--tasks", "0v1", "8v9", "--head-batch-size", "32", "--out", str(out),
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "HyBNN reproduction on digits" in proc.stdout
    return out


def test_results_json_is_complete(quick_run: Path) -> None:
    results = json.loads((quick_run / "results.json").read_text())
    assert results["data"] == "digits"
    assert results["seeds"] == [0]
    assert len(results["encoder"]["fingerprint"]) == 64
    assert results["encoder"]["latent_bits"] == 200
    assert set(results["tasks"]) == {"0v1", "8v9"}
    for row in results["tasks"].values():
        for model in RUNS:
            assert CELL_KEYS <= set(row[model])
            assert 0.0 <= row[model]["acc_mean"] <= 1.0
        for baseline in ("bcnn_centered", "fpcnn"):  # HyBNN's wall time to equal accuracy
            ttt = row["time_to_train"][baseline]
            assert 0 < ttt["fast_extract_s"] < ttt["fast_s"] and ttt["slow_s"] > 0
            assert ttt["speedup"] == pytest.approx(ttt["slow_s"] / ttt["fast_s"])
    assert {"torch", "hybnn", "numpy", "python"} <= set(results["versions"])


def test_the_head_trains_at_its_own_batch_size(quick_run: Path) -> None:
    def batch(run: str) -> int:
        meta = json.loads((quick_run / "models" / "0v1" / run / "meta.json").read_text())
        return meta["train_config"]["batch_size"]

    assert batch("hybnn-seed0") == 32  # --head-batch-size
    assert batch("bcnn_centered-seed0") == batch("fpcnn-seed0") == 64  # the phase-3 batch
    config = json.loads((quick_run / "results.json").read_text())["config"]
    assert config["head"]["batch_size"] == 32 and config["batch_size"] == 64


def test_hybnn_beats_the_paper_setting_baseline(quick_run: Path) -> None:
    results = json.loads((quick_run / "results.json").read_text())
    for task, row in results["tasks"].items():
        # unit inputs binarize to all +1: the binary CNN sees a blank image
        assert row["bcnn_unit"]["acc_mean"] == pytest.approx(0.5, abs=0.05), task
        assert row["hybnn"]["acc_mean"] > row["bcnn_unit"]["acc_mean"] + 0.2, task


def test_reports_plots_and_artifacts_are_written(quick_run: Path) -> None:
    for name in ("results.md", "accuracy_by_task.png", "acc_hybnn.png", "loss_bcnn_centered.png",
                 "encoder/weights.safetensors", "encoder/reconstructions.png",
                 "codes/0v1-train.safetensors", "models/0v1/hybnn-seed0/meta.json"):
        assert (quick_run / name).is_file(), name
    md = (quick_run / "results.md").read_text()
    assert "| 0v1 |" in md and "BCNN paper (unit)" in md
    assert "## Time to a trained model" in md
    # model directories keep no stale checkpoints once training is finished
    assert not list(quick_run.glob("models/*/*/checkpoint.pt"))
