"""Weight oscillation: per-layer sign-flip ratios per epoch and per step, and their summaries."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybnn.binary.layers import BinaryLinear
from hybnn.binary.oscillation import (
    FlipMonitor,
    flip_ratio,
    late_flip_ratio,
    layer_flip_curves,
)
from hybnn.hooks import History
from hybnn.models.bnn_head import BNNHead
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.train import fit_classifier


def test_flip_ratio_counts_sign_changes_with_zero_positive():
    before = torch.tensor([0.5, -0.5, 0.0, -0.1]) >= 0
    assert flip_ratio(before, torch.tensor([-0.5, -0.5, 0.1, 0.0])) == pytest.approx(0.5)


def _set(layer: BinaryLinear, values: list[float]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))


def test_epoch_ratio_misses_back_and_forth_flips_that_the_step_ratio_counts():
    model = nn.Sequential(BinaryLinear(10, 1))
    layer = model[0]
    _set(layer, [0.1] * 10)
    monitor = FlipMonitor()
    monitor.on_train_begin(model)
    _set(layer, [-0.1, -0.1] + [0.1] * 8)  # step 1: two weights flip
    monitor.on_step_end(model)
    _set(layer, [0.1] * 10)  # step 2: they flip back
    monitor.on_step_end(model)
    logs: dict = {}
    monitor.on_epoch_end(model, 0, logs)
    assert logs["flip_ratio/0"] == 0.0
    assert logs["step_flip_ratio/0"] == pytest.approx(0.2)
    assert logs["flip_ratio"] == 0.0 and logs["step_flip_ratio"] == pytest.approx(0.2)

    _set(layer, [-0.1] * 5 + [0.1] * 5)  # next epoch: half flip and stay flipped
    monitor.on_step_end(model)
    logs = {}
    monitor.on_epoch_end(model, 1, logs)
    assert logs["flip_ratio/0"] == pytest.approx(0.5)
    assert logs["step_flip_ratio/0"] == pytest.approx(0.5)


def test_late_ratio_averages_the_last_quarter_of_epochs():
    h = History([{"flip_ratio": v} for v in [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.2, 0.1]])
    assert late_flip_ratio(h) == pytest.approx(0.15)
    assert late_flip_ratio(History([{"flip_ratio": 0.3}])) == pytest.approx(0.3)
    assert late_flip_ratio(History()) != late_flip_ratio(History())  # NaN


def test_training_logs_a_curve_for_every_binary_layer():
    torch.manual_seed(0)
    x = torch.randint(0, 2, (64, 15)).float() * 2 - 1
    y = (x.sum(1) > 0).long()
    history = fit_classifier(BNNHead(15, 2, (8, 4)), (x, y), None,
                             TrainConfig(epochs=3, batch_size=16), callbacks=[FlipMonitor()],
                             progress=False)
    curves = layer_flip_curves(history)
    assert set(curves) == {"net.0", "net.2", "net.4"}
    assert all(len(c) == 3 and all(0.0 <= v <= 1.0 for v in c) for c in curves.values())
    assert set(layer_flip_curves(history, "step_flip_ratio")) == set(curves)
