"""Every Flower strategy behind --strategy runs a federation; FedProx's proximal term reaches
the clients and pulls them to the global model; the local grid runs the same apps as Ray."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the fed extra (flwr) is not installed")

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedProx,
    FedYogi,
    Krum,
    MultiKrum,
)
from local_runs import fed_config, settings

from hybnn.errors import DataError
from hybnn.federated import faults
from hybnn.federated.config import STRATEGIES, FedConfig
from hybnn.federated.flower_strategies import ProximalTerm, flower_strategy
from hybnn.federated.local_grid import run_local
from hybnn.federated.simulation import federate


def _cfg(encoder_dir, **kw):
    return fed_config(encoder_dir, **kw)


def _run(cfg, mods=()):
    return run_local(cfg, mods)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("encoding", ["fp32", "1bit"])
def test_every_strategy_completes_a_federation(encoder_dir, strategy, encoding):
    log, _ = _run(_cfg(encoder_dir, strategy=strategy, encoding=encoding, local_epochs=2))
    assert log["status"] == "completed", log.get("error")
    assert all(r["aggregated"] and r["valid_updates"] == 3 for r in log["rounds"])
    # it learned (FedOpt on 1bit over 2 rounds of a 1-epoch encoder: ~+0.17 here, +0.1 fails
    # on some machines, so the bar is +0.05)
    assert log["rounds"][-1]["global_acc"] > log["initial_acc"] + 0.05


def test_strategies_are_flowers_own_with_our_settings():
    cfg = settings(clients=10, fraction=0.5, hostile=2, server_momentum=0.8, proximal_mu=0.3)
    assert isinstance(flower_strategy(cfg.with_(strategy="fedprox")), FedProx)
    assert flower_strategy(cfg.with_(strategy="fedprox")).proximal_mu == 0.3
    assert flower_strategy(cfg.with_(strategy="fedavgm")).server_momentum == 0.8
    assert isinstance(flower_strategy(cfg.with_(strategy="fedadam")), FedAdam)
    assert flower_strategy(cfg.with_(strategy="krum")).num_malicious_nodes == 2
    mk = flower_strategy(cfg.with_(strategy="multikrum"))
    assert isinstance(mk, MultiKrum) and mk.num_nodes_to_select == 3  # 5 sampled - 2
    assert isinstance(flower_strategy(cfg.with_(strategy="bulyan")), Bulyan)
    assert isinstance(flower_strategy(cfg.with_(strategy="krum")), Krum)
    assert isinstance(flower_strategy(cfg.with_(strategy="fedavgm")), FedAvgM)
    with pytest.raises(DataError, match="--hostile"):
        settings(clients=3, hostile=3)
    with pytest.raises(DataError, match="--server-momentum"):
        FedConfig(server_momentum=1.0)


def test_fedprox_sends_mu_and_a_large_mu_keeps_clients_at_the_global_model(encoder_dir):
    """Round 1 starts every client from the same global model: the proximal pull shows as a
    smaller distance between what the clients send back and that model."""
    moved = {}
    for mu in (0.0, 100.0):
        seen = []

        def spy(msg, context, call_next, seen=seen):
            seen.append(msg.content["config"].get("proximal-mu"))
            return call_next(msg, context)

        cfg = _cfg(encoder_dir, strategy="fedprox", proximal_mu=mu, rounds=1, local_epochs=3)
        log, grid = _run(cfg, mods=[spy])
        assert log["status"] == "completed"
        assert [m for m in seen if m is not None] == [mu] * 3  # the training messages
        moved[mu] = log["rounds"][0]["clients"][0]["train_loss"]
        del grid
    # with mu = 100 the clients barely leave the (untrained) global model: higher loss
    assert moved[100.0] > moved[0.0]


def test_proximal_term_is_half_mu_times_the_squared_distance():
    import torch

    model = torch.nn.Linear(3, 2)
    term = ProximalTerm(0.5)
    term.on_train_begin(model)
    assert float(term.extra_loss(model).detach()) == 0.0
    with torch.no_grad():
        model.weight += 1.0
    assert float(term.extra_loss(model).detach()) == pytest.approx(0.25 * 6)
    assert ProximalTerm(0.0).extra_loss(model) is None


def test_fedadam_aggregate_is_projected_into_the_models_domain(encoder_dir):
    log, _ = _run(_cfg(encoder_dir, strategy="fedadam", server_lr=5.0))  # a huge step
    assert log["status"] == "completed"  # the clients accepted the projected global model


def test_the_local_engine_writes_results_like_the_simulation(tmp_path, encoder_dir):
    res = federate(_cfg(encoder_dir, rounds=2), tmp_path / "fed", centralized=False,
                   engine="local")
    assert res["runtime"] == "local grid"
    assert (tmp_path / "fed" / "results.json").is_file()
    assert len(res["rounds"]) == 2 and res["final_acc"] > 0.6
    with pytest.raises(DataError, match="--engine"):
        federate(_cfg(encoder_dir), tmp_path / "x", centralized=False, engine="warp")


@pytest.mark.slow
def test_the_local_grid_and_rays_simulation_reach_the_same_model(tmp_path, encoder_dir):
    # FedAvg: the engines deliver the same updates in another order, and an adaptive server
    # step (FedAdagrad's first is ~eta * sign(mean)) turns float rounding of near-zero means
    # into different signs; the mean itself agrees.
    cfg = _cfg(encoder_dir, rounds=2, strategy="fedavg")
    ray = federate(cfg, tmp_path / "ray", centralized=False)
    local = federate(cfg, tmp_path / "local", centralized=False, engine="local")
    accs = [[r["global_acc"] for r in res["rounds"]] for res in (ray, local)]
    np.testing.assert_allclose(accs[0], accs[1], atol=0.02)


@pytest.mark.parametrize("kind", ["sign-flip", "random"])
def test_well_formed_attacks_pass_validation_and_robust_rules_resist_them(encoder_dir, kind):
    """Attacks inside every value's domain are accepted by the validating wrapper (only a
    robust rule can resist them): two of five clients flipping their signs drag FedAvg
    below the median."""
    cfg = _cfg(encoder_dir, clients=5, rounds=3, local_epochs=2)
    mods = [faults.attack({0, 1}, kind)]
    accs = {}
    for strategy in ("fedavg", "fedmedian"):
        log, _ = _run(cfg.with_(strategy=strategy), mods)
        assert log["status"] == "completed"
        for r in log["rounds"]:
            assert all(c["status"] == "ok" for c in r["clients"])
        accs[strategy] = log["rounds"][-1]["global_acc"]
    if kind == "sign-flip":
        assert accs["fedmedian"] > accs["fedavg"]


def test_a_scaled_update_leaves_the_latent_range_and_is_rejected(encoder_dir):
    log, _ = _run(_cfg(encoder_dir), [faults.attack({2}, "scaled", factor=50.0)])
    assert log["status"] == "completed"
    for r in log["rounds"]:
        by_partition = {c["partition"]: c for c in r["clients"]}
        assert by_partition[2]["status"] == "rejected"
        assert "above" in by_partition[2]["reason"]
        assert r["valid_updates"] == 2


def test_unknown_attack_is_refused():
    with pytest.raises(ValueError, match="unknown attack"):
        faults.attack({0}, "gentle")


def test_auto_strategy_is_the_tables_pick_for_the_head_and_fedavg_where_a_mean_is_needed():
    assert FedConfig().strategy == "auto"
    assert FedConfig().resolved_strategy == "fedavg"  # fp32
    assert FedConfig(encoding="1bit").resolved_strategy == "fedavg"
    assert FedConfig(encoding="xor").resolved_strategy == "fedavg"
    assert FedConfig(strategy="krum").resolved_strategy == "krum"
    assert FedConfig(model="fpcnn").resolved_strategy == "fedavg"
    assert settings(dp="server-fixed").resolved_strategy == "fedavg"  # no error: a mean
    assert settings(secagg=True).resolved_strategy == "fedavg"
    assert isinstance(flower_strategy(FedConfig(encoding="1bit", strategy="fedyogi")), FedYogi)
    assert isinstance(flower_strategy(FedConfig(strategy="fedadagrad")), FedAdagrad)
    with pytest.raises(DataError, match="--strategy must be fedavg or fedprox"):
        settings(secagg=True, strategy="fedyogi")


def test_the_narrow_grids_refuse_what_they_do_not_offer():
    """SampledGrid (a strategy's view of the sampled nodes) offers node ids and the run;
    LocalGrid delivers with send_and_receive: any other Grid call fails loudly, with a
    reason, instead of sending nothing."""
    from flwr.clientapp import ClientApp

    from hybnn.federated.flower_strategies import SampledGrid
    from hybnn.federated.local_grid import LocalGrid

    local = LocalGrid(ClientApp(), clients=3)
    sampled = SampledGrid(local, local.get_node_ids()[:2])
    assert sampled.get_node_ids() == local.get_node_ids()[:2]
    assert sampled.run.run_id == local.run_id
    for call in (lambda: sampled.set_run(local.run), lambda: sampled.create_message(),
                 lambda: sampled.push_messages([]), lambda: sampled.pull_messages([]),
                 lambda: sampled.send_and_receive([])):
        with pytest.raises(NotImplementedError, match="only offers node ids"):
            call()
    for call in (lambda: local.push_messages([]), lambda: local.pull_messages([])):
        with pytest.raises(NotImplementedError, match="send_and_receive only"):
            call()
    assert local.send_and_receive([]) == []
