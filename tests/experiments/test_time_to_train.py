"""Time to a trained model at equal accuracy (hybnn.experiments.time_to_train)."""

from __future__ import annotations

import pytest

from hybnn.experiments.time_to_train import TrainingClock, time_to_same_accuracy
from hybnn.hooks import History


def clock(name: str, seconds: list[float], accs: list[float], extract: float = 0.0):
    history = History([{"epoch": i + 1, "seconds": s, "test_acc": a}
                       for i, (s, a) in enumerate(zip(seconds, accs, strict=True))])
    return TrainingClock.from_history(name, history, extract)


def test_clock_counts_extraction_and_stops_at_the_first_epoch_reaching_the_accuracy():
    c = clock("hybnn", [0.1, 0.1, 0.1, 0.1], [0.80, 0.95, 0.90, 0.97], extract=0.5)
    assert c.seconds_to(0.95) == pytest.approx(0.7)  # epoch 2, not the later dip and rise
    assert c.seconds_to(0.97) == pytest.approx(0.9)
    assert c.seconds_to(0.99) is None
    assert c.final_acc == 0.97


def test_models_are_compared_at_the_lower_final_accuracy():
    head = clock("hybnn", [0.01] * 10, [0.5 + 0.05 * i for i in range(10)], extract=0.05)
    cnn = clock("bcnn", [1.0] * 5, [0.80, 0.85, 0.88, 0.90, 0.91])
    r = time_to_same_accuracy(head, cnn)
    assert r["accuracy"] == 0.91  # the CNN's final accuracy, which the head passes earlier
    assert r["fast_s"] == pytest.approx(0.05 + 0.01 * 10)  # first >= 0.91: 0.95 at epoch 10
    assert r["slow_s"] == pytest.approx(5.0)
    assert r["speedup"] == pytest.approx(5.0 / 0.15)
    # the other way round: a head that ends lower is timed to its own end
    assert time_to_same_accuracy(cnn, head)["accuracy"] == 0.91


def test_a_run_without_test_accuracy_is_refused():
    with pytest.raises(ValueError, match="test accuracy after every epoch"):
        time_to_same_accuracy(clock("a", [], []), clock("b", [1.0], [0.5]))
