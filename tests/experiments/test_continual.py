"""Continual learning: what each strategy keeps, the metrics, and `hybnn continual` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hybnn.errors import DataError
from hybnn.experiments.continual import (
    TaskStream,
    encode_stream,
    final_accuracy,
    forgetting,
    run_sequence,
)
from hybnn.experiments.continual_config import ContinualConfig
from hybnn.experiments.continual_memory import (
    LABEL_BYTES,
    BernoulliCodeModel,
    ReplayMemory,
    frequency_bits,
)
from hybnn.pipeline.codes import pack_code_bits, unpack_code_bits

TASKS = ["0v1", "2v3", "4v5", "6v7", "8v9"]


def random_codes(n: int, num_bits: int = 200, seed: int = 0) -> np.ndarray:
    return pack_code_bits(np.random.default_rng(seed).random((n, num_bits)) < 0.5)


@pytest.mark.parametrize("budget", [0, 25, 26, 100, 1040, 5000])
def test_replay_memory_never_holds_more_than_its_budget(budget: int) -> None:
    memory = ReplayMemory(budget, code_bytes=25, seed=budget)
    assert memory.nbytes <= budget
    for task in range(5):  # two classes per task, 300 codes each
        labels = np.repeat([2 * task, 2 * task + 1], 300)
        memory.add(random_codes(600, seed=task), labels)
        assert memory.nbytes <= budget
        assert memory.size <= budget // (25 + LABEL_BYTES)
    assert memory.capacity == budget // 26


def test_replay_memory_is_class_balanced_and_keeps_real_codes() -> None:
    memory = ReplayMemory(1040, code_bytes=25, seed=1)  # 40 codes
    offered: dict[int, set[bytes]] = {}
    for task in range(5):
        labels = np.repeat([2 * task, 2 * task + 1], 300)
        codes = random_codes(600, seed=10 + task)
        for c, code in zip(labels, codes, strict=True):
            offered.setdefault(int(c), set()).add(code.tobytes())
        memory.add(codes, labels)
        seen = 2 * (task + 1)
        counts = [len(memory.codes_of(c)) for c in range(seen)]
        assert memory.size == 40
        assert max(counts) - min(counts) <= 1, counts  # every seen class keeps its share
    for c in memory.classes():
        assert all(code.tobytes() in offered[c] for code in memory.codes_of(c))


def test_bernoulli_samples_follow_the_stored_frequencies() -> None:
    rng = np.random.default_rng(0)
    truth = {3: rng.random(200), 7: np.r_[np.zeros(100), np.ones(100)]}
    packed = np.concatenate([pack_code_bits(rng.random((4000, 200)) < p) for p in truth.values()])
    labels = np.repeat(list(truth), 4000)
    model = BernoulliCodeModel(200, bits=4)
    model.fit(packed, labels)
    assert model.classes() == [3, 7]
    assert model.nbytes == 2 * 100  # 200 frequencies x 4 bits per class
    for c, p in truth.items():
        stored = model.frequencies(c)
        assert np.abs(stored - p).max() <= 1 / 30 + 0.03  # quantisation + sampling
        drawn = unpack_code_bits(model.sample(c, 20000, rng), 200).mean(axis=0)
        assert np.abs(drawn - stored).max() < 0.02
    assert np.array_equal(model.frequencies(7), truth[7])  # 0 and 1 are exact


def test_sampling_temperature_flattens_the_frequencies_symmetrically() -> None:
    rng = np.random.default_rng(1)
    p = np.r_[np.full(100, 0.9), np.full(50, 0.5), np.full(50, 0.0)]
    model = BernoulliCodeModel(200, bits=8)
    model.fit(pack_code_bits(rng.random((20000, 200)) < p), np.zeros(20000, np.int64))
    drawn = unpack_code_bits(model.sample(0, 20000, rng, temperature=2.0), 200).mean(axis=0)
    # sigmoid(logit(0.9) / 2) = 3 / (3 + 1) = 0.75; 0.5 stays; a never-set bit stays ~never
    assert np.abs(drawn[:100] - 0.75).max() < 0.03
    assert np.abs(drawn[100:150] - 0.5).max() < 0.03
    assert drawn[150:].max() < 0.01


def test_generator_settings_must_be_positive(tmp_path: Path) -> None:
    from hybnn.experiments.continual import continual

    for bad in ({"generator_temperature": 0.0}, {"generator_samples": float("nan")}):
        with pytest.raises(DataError, match="must be a finite number > 0"):
            continual(ContinualConfig(**bad), tmp_path / "out", progress=False)


def test_frequency_bits_fit_the_budget() -> None:
    assert frequency_bits(1040, 10, 200) == 4  # mnist-5k at 1 %: 10 x 100 B
    assert frequency_bits(373, 10, 200) == 1  # digits at 1 %: 10 x 25 B
    assert frequency_bits(10**6, 10, 200) == 8
    with pytest.raises(DataError):
        frequency_bits(249, 10, 200)


def test_unknown_strategy_is_refused_before_any_work(tmp_path: Path) -> None:
    from hybnn.experiments.continual import continual

    with pytest.raises(DataError, match="bogus"):
        continual(ContinualConfig(strategies=["bogus"]), tmp_path / "out", progress=False)


def test_final_accuracy_and_forgetting_of_a_matrix() -> None:
    matrix = [[0.9, None, None], [0.5, 0.8, None], [0.3, 0.6, 1.0]]
    assert final_accuracy(matrix) == pytest.approx((0.3 + 0.6 + 1.0) / 3)
    assert forgetting(matrix) == pytest.approx(((0.9 - 0.3) + (0.8 - 0.6)) / 2)


@pytest.fixture(scope="module")
def stream(tiny_encoder, digits) -> TaskStream:
    from hybnn.data import train_test

    train, test = train_test(digits)
    return encode_stream(tiny_encoder[1], train, test, TASKS)


def test_fine_tuning_forgets_the_first_task(stream: TaskStream) -> None:
    three = TaskStream(TASKS[:3], stream.classes[:3], stream.train, stream.test)
    cfg = ContinualConfig(epochs=15, batch_size=64, seeds=[0])  # seeds 0-2: 0.99 -> 0.06-0.08
    run = run_sequence(three, "class", "finetune", cfg, 0, budget_bytes=0)
    first = [row[0] for row in run["matrix"]]
    assert first[0] > 0.9  # learned 0v1 ...
    assert first[-1] < first[0] - 0.5  # ... and lost most of it two tasks later
    assert run["memory_bytes"] == 0


def test_replay_run_keeps_its_memory_within_the_budget(stream: TaskStream) -> None:
    budget = stream.budget_bytes(0.01)
    cfg = ContinualConfig(epochs=2, seeds=[0])
    run = run_sequence(stream, "domain", "replay", cfg, 0, budget)
    assert 0 < run["memory_bytes"] <= budget
    assert all(len([a for a in row if a is not None]) == t + 1
               for t, row in enumerate(run["matrix"]))


@pytest.mark.slow
def test_generative_replay_forgets_less_than_fine_tuning(stream: TaskStream) -> None:
    cfg = ContinualConfig(epochs=5, batch_size=64, seeds=[0])
    tune = run_sequence(stream, "class", "finetune", cfg, 0, 0)
    gen = run_sequence(stream, "class", "generative", cfg, 0, stream.budget_bytes(0.01))
    # digits with a 1-epoch encoder and 1 bit per frequency: measured 0.40 vs 0.31
    assert final_accuracy(gen["matrix"]) > final_accuracy(tune["matrix"]) + 0.05
    assert gen["memory_bytes"] <= stream.budget_bytes(0.01)  # 373 B: 1 bit per frequency
    assert gen["generator_bits"] == 1


@pytest.mark.slow
def test_cli_writes_results_report_and_plots(tiny_encoder, tmp_path: Path) -> None:
    out = tmp_path / "continual"
    cmd = [sys.executable, "-m", "hybnn.cli", "continual", "--quick", "--data", "digits",
           "--encoder", str(tiny_encoder[0]), "--tasks", "0v1", "2v3", "--epochs", "1",
           "--strategies", "finetune", "replay", "joint", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "class-incremental" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0] and results["tasks"] == ["0v1", "2v3"]
    assert results["encoder"]["fingerprint"] == tiny_encoder[1].fingerprint
    assert {"torch", "numpy", "hybnn"} <= set(results["versions"])
    assert results["config"]["memory_fraction"] == 0.01
    assert set(results["scenarios"]) == {"class", "domain"}
    for rows in results["scenarios"].values():
        assert set(rows) == {"finetune", "replay", "joint"}
        for cell in rows.values():
            assert 0.0 <= cell["final_acc_mean"] <= 1.0
            assert len(cell["matrix_mean"]) == 2 and cell["matrix_mean"][0][1] is None
            assert len(cell["avg_acc_after_task"]) == 2
        assert rows["replay"]["memory_bytes"] <= results["memory_budget_bytes"]
    md = (out / "results.md").read_text()
    assert "## class-incremental" in md and "| replay (stored codes) |" in md
    for name in ("accuracy_class.png", "accuracy_domain.png", "codes/train.safetensors"):
        assert (out / name).is_file(), name


@pytest.mark.slow
def test_reproduce_adds_the_continual_table_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "reproduce"
    cmd = [sys.executable, "-m", "hybnn.cli", "reproduce", "--quick", "--continual",
           "--data", "digits", "--tasks", "0v1", "2v3", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    rows = results["continual"]["scenarios"]["class"]
    assert set(rows) == {"finetune", "replay", "generative", "ewc", "joint"}
    assert rows["replay"]["memory_bytes"] <= results["continual"]["memory_budget_bytes"]
    assert "## Continual learning: 0v1 → 2v3" in (out / "results.md").read_text()
    assert (out / "continual" / "accuracy_class.png").is_file()
