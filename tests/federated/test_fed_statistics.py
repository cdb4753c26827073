"""Server optimizers step the latent binary weights only: under FedAvgM, FedAdam, FedYogi and
FedAdagrad every real-valued tensor of the head (batch-norm weights, biases, running means and
variances) is the clients' sample-weighted mean. A server step of about eta a round would
leave the statistics near their initial 0 and 1, and walk a batch-norm weight across zero
(which flips its unit, or its class's logit)."""

from __future__ import annotations

import numpy as np
import pytest
from local_runs import fed_config

from hybnn.federated.encoded_strategy import mean_real_tensors
from hybnn.federated.encoding import Layout
from hybnn.federated.local_grid import run_local
from hybnn.models.bnn_head import BNNHead


def test_the_real_tensors_are_the_weighted_mean_and_latent_weights_are_left_out():
    layout = Layout.of(BNNHead(16, 3, (8,)))
    rng = np.random.default_rng(0)
    a = {k: rng.standard_normal(s).astype(np.float32) for k, s in zip(layout.keys,
                                                                       layout.shapes, strict=True)}
    b = {k: rng.standard_normal(s).astype(np.float32) for k, s in zip(layout.keys,
                                                                       layout.shapes, strict=True)}
    out = mean_real_tensors([(a, 1), (b, 3)], layout)
    real = {k for k, binary in zip(layout.keys, layout.binary, strict=True) if not binary}
    assert set(out) == real and {"net.1.weight", "net.1.bias", "net.3.weight",
                                 "net.1.running_var"} <= real
    for k in real:
        np.testing.assert_allclose(out[k], (a[k] + 3 * b[k]) / 4, rtol=1e-6, atol=1e-6)
    assert mean_real_tensors([], layout) == {}


@pytest.mark.parametrize("strategy", ["fedadagrad", "fedyogi"])
def test_a_server_optimizer_takes_the_clients_statistics(encoder_dir, strategy):
    log = run_local(fed_config(encoder_dir, rounds=3, local_epochs=2, strategy=strategy))[0]
    assert log["rounds"][-1]["global_acc"] > log["initial_acc"] + 0.1, log["rounds"]
