"""Server optimizers step parameters, not batch-norm statistics: under FedAvgM, FedAdam,
FedYogi and FedAdagrad the global running mean and variance are the clients' sample-weighted
mean (a server step of about eta a round would leave them near their initial 0 and 1)."""

from __future__ import annotations

import numpy as np
import pytest
from local_runs import fed_config

from hybnn.federated.encoded_strategy import mean_statistics
from hybnn.federated.local_grid import run_local


def test_mean_statistics_weights_by_samples_and_ignores_parameters():
    a = {"bn.running_mean": np.array([1.0, 2.0], np.float32), "bn.weight": np.ones(2, np.float32),
         "bn.running_var": np.array([4.0], np.float32)}
    b = {"bn.running_mean": np.array([4.0, 8.0], np.float32), "bn.weight": np.zeros(2, np.float32),
         "bn.running_var": np.array([1.0], np.float32)}
    out = mean_statistics([(a, 1), (b, 2)])
    assert set(out) == {"bn.running_mean", "bn.running_var"}
    np.testing.assert_allclose(out["bn.running_mean"], [3.0, 6.0])
    np.testing.assert_allclose(out["bn.running_var"], [2.0])
    assert mean_statistics([]) == {}


@pytest.mark.parametrize("strategy", ["fedadagrad", "fedyogi"])
def test_a_server_optimizer_takes_the_clients_statistics(encoder_dir, strategy):
    log = run_local(fed_config(encoder_dir, rounds=3, local_epochs=2, strategy=strategy))[0]
    assert log["rounds"][-1]["global_acc"] > log["initial_acc"] + 0.1, log["rounds"]
