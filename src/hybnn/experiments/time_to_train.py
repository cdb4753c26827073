"""Wall time from a task's raw images to a trained model, compared at equal accuracy.

HyBNN's clock starts at the raw training images: it includes extracting their codes with the
frozen encoder (the encoder itself is trained once on general data, phase 1, and is charged
to no task). A baseline's clock starts at the same images. Each model trains with its own
recipe and is evaluated on the test split after every epoch *outside* the clock; the time to
an accuracy A is the clock at the end of the first epoch whose test accuracy reaches A. Two
models are compared at A = the lower of their two final accuracies, which both reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybnn.hooks import History


@dataclass(frozen=True)
class TrainingClock:
    """One model's run: seconds before the first epoch, then seconds and accuracy per epoch."""

    model: str
    extract_s: float
    epoch_s: tuple[float, ...]
    test_acc: tuple[float, ...]

    @classmethod
    def from_history(cls, model: str, history: History, extract_s: float = 0.0
                     ) -> TrainingClock:
        return cls(model, extract_s, tuple(history.series("seconds")),
                   tuple(history.series("test_acc")))

    @property
    def final_acc(self) -> float:
        return self.test_acc[-1]

    def seconds_to(self, accuracy: float) -> float | None:
        """The clock at the end of the first epoch reaching ``accuracy`` (None: never)."""
        clock = self.extract_s
        for seconds, acc in zip(self.epoch_s, self.test_acc, strict=True):
            clock += seconds
            if acc >= accuracy:
                return clock
        return None


def time_to_same_accuracy(fast: TrainingClock, slow: TrainingClock) -> dict[str, float]:
    """Seconds each model needs to reach the lower of their final accuracies, and the ratio
    ``slow / fast`` (how many times less wall time ``fast`` needs)."""
    if not (fast.test_acc and slow.test_acc):
        raise ValueError("time to accuracy needs a test accuracy after every epoch")
    accuracy = min(fast.final_acc, slow.final_acc)
    fast_s, slow_s = fast.seconds_to(accuracy), slow.seconds_to(accuracy)
    assert fast_s is not None and slow_s is not None  # each reaches its own final accuracy
    return {"accuracy": accuracy, "fast_s": fast_s, "slow_s": slow_s,
            "fast_extract_s": fast.extract_s, "speedup": slow_s / max(fast_s, 1e-9)}


def mean_over_seeds(rows: list[dict[str, float]]) -> dict[str, float]:
    """Seed means of every figure of :func:`time_to_same_accuracy` rows (and any others
    they share); the speed-up is the ratio of the mean times, not the mean of ratios."""
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    mean["speedup"] = mean["slow_s"] / max(mean["fast_s"], 1e-9)
    return mean
