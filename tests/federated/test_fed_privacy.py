"""Differential privacy on request (--dp): every mode runs a federation; fixed clipping and
local DP report the spent epsilon after every round; the noise is real; clipped updates are
within the clipping norm where the aggregator sees them; invalid settings are refused."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the fed extra (flwr) is not installed")
pytest.importorskip("dp_accounting", reason="the fed extra (flwr[dp]) is not installed")

from flwr.app import Array, ArrayRecord, MessageType
from flwr.clientapp.mod import LocalDpMod, adaptiveclipping_mod, fixedclipping_mod
from flwr.serverapp import GaussianPrivacyEvent
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
)
from local_runs import fed_config, settings

from hybnn.errors import DataError
from hybnn.federated import faults
from hybnn.federated.config import DP_MODES, FedConfig
from hybnn.federated.encoded_strategy import ARRAYS, from_record
from hybnn.federated.encoding import Layout, UpdateError
from hybnn.federated.local_grid import run_local
from hybnn.federated.privacy import (
    KEY_CLIPPING_NORM,
    UNIFORM_WEIGHT,
    LocalDpAccounting,
    accountant,
    client_mod,
    private_strategy,
)
from hybnn.federated.simulation import federate
from hybnn.federated.transport_scale import scaled, transport_bounds, unscaled
from hybnn.models.bnn_head import BNNHead


def _cfg(encoder_dir, **kw):
    return fed_config(encoder_dir, **kw)


def _run(cfg, mods=()):
    return run_local(cfg, mods)[0]


def _epsilons(log):
    return [r["epsilon"] for r in log["rounds"]]


# Flower's adaptive clipping needs noise < clients per round / 10 (0.3 with 3 clients).
NOISE = {"server-adaptive": 0.1, "client-adaptive": 0.1}


@pytest.mark.parametrize("dp", DP_MODES)
def test_every_dp_mode_completes_a_federation(encoder_dir, dp):
    cfg = _cfg(encoder_dir, dp=dp, noise_multiplier=NOISE.get(dp, 1.0), clipping_norm=5.0)
    log = _run(cfg)
    assert log["status"] == "completed", log.get("error")
    assert all(r["aggregated"] and r["valid_updates"] == 3 for r in log["rounds"])
    eps = _epsilons(log)
    if dp in ("server-fixed", "client-fixed", "local"):  # accounted
        assert all(math.isfinite(e) and e > 0 for e in eps)
        assert all(r["delta"] == cfg.dp.delta for r in log["rounds"])
    else:  # no DP, or adaptive clipping: Flower has no accountant
        assert eps == [None, None]
    if dp != "none":
        assert all(r["clipping_norm"] > 0 for r in log["rounds"])


def test_server_side_fixed_clipping_works_with_1bit_updates(encoder_dir):
    log = _run(_cfg(encoder_dir, dp="server-fixed", encoding="1bit", clipping_norm=5.0))
    assert log["status"] == "completed"
    assert all(math.isfinite(e) for e in _epsilons(log))


def test_epsilon_grows_with_the_rounds_and_with_less_noise(encoder_dir):
    eps = {}
    for z in (0.5, 2.0):
        cfg = _cfg(encoder_dir, dp="server-fixed", noise_multiplier=z, rounds=3)
        log = _run(cfg)
        eps[z] = _epsilons(log)
        assert all(math.isfinite(e) for e in eps[z])
        assert eps[z][0] < eps[z][1] < eps[z][2]
        # one Gaussian release per round, as an accountant of our own counts them
        assert log["config"]["dp"] == asdict(cfg.dp)
        own = accountant(cfg, cfg.clients)
        own.compose(GaussianPrivacyEvent(z, 3, 3), 3)
        assert eps[z][2] == pytest.approx(own.get_epsilon(cfg.dp.delta))
    assert all(a > b for a, b in zip(eps[0.5], eps[2.0], strict=True))


def test_results_carry_the_spent_epsilon(tmp_path, encoder_dir):
    res = federate(_cfg(encoder_dir, dp="server-fixed"), tmp_path / "run", centralized=False,
                   engine="local")
    assert res["dp"] == "server-fixed"
    assert res["epsilon"] == res["rounds"][-1]["epsilon"] > res["rounds"][0]["epsilon"] > 0
    assert res["delta"] == 1e-5
    assert "spent epsilon" in (tmp_path / "run" / "results.md").read_text()


def test_a_huge_noise_multiplier_takes_the_model_to_chance(encoder_dir):
    clean = _run(_cfg(encoder_dir, rounds=3, local_epochs=2))
    noisy = _run(_cfg(encoder_dir, rounds=3, local_epochs=2, dp="server-fixed",
                      noise_multiplier=1e3, clipping_norm=1.0))
    assert clean["rounds"][-1]["global_acc"] > clean["initial_acc"] + 0.1  # it learns
    assert noisy["rounds"][-1]["global_acc"] <= 0.6  # two balanced classes: chance is 0.5
    assert noisy["rounds"][-1]["epsilon"] < 0.01  # and almost nothing is learned of anyone


class SeenNorms(list):
    """Norms of the updates the aggregator saw, and the updates (``updates``)."""

    def __init__(self) -> None:
        super().__init__()
        self.updates: list[dict[str, np.ndarray]] = []


@pytest.fixture
def aggregator_spy(monkeypatch):
    """The norms of the updates FedAvg (inside the DP wrapper) averages, per round, against
    the global arrays and the clipping norm it was configured with; the updates themselves
    in ``seen.updates``."""
    seen, sent = SeenNorms(), {}
    configure, aggregate = FedAvg.configure_train, FedAvg.aggregate_train

    def spy_configure(self, server_round, arrays, config, grid):
        sent[server_round] = (from_record(arrays), config.get(KEY_CLIPPING_NORM))
        return configure(self, server_round, arrays, config, grid)

    def spy_aggregate(self, server_round, replies):
        replies = list(replies)
        glob, _ = sent[server_round]
        for reply in replies:
            state = from_record(reply.content.array_records[ARRAYS])
            seen.updates.append({k: state[k].astype(np.float64) - glob[k] for k in glob})
            seen.append(math.sqrt(sum(float(np.sum((state[k].astype(np.float64)
                                                    - glob[k]) ** 2)) for k in glob)))
        return aggregate(self, server_round, replies)

    monkeypatch.setattr(FedAvg, "configure_train", spy_configure)
    monkeypatch.setattr(FedAvg, "aggregate_train", spy_aggregate)
    return seen, sent


@pytest.mark.parametrize(("dp", "encoding"), [("client-fixed", "fp32"),
                                              ("server-fixed", "fp32"),
                                              ("server-fixed", "1bit")])
def test_updates_reaching_the_aggregator_are_within_the_clipping_norm(encoder_dir,
                                                                      aggregator_spy, dp,
                                                                      encoding):
    seen, sent = aggregator_spy
    log = _run(_cfg(encoder_dir, dp=dp, encoding=encoding, clipping_norm=0.5))
    assert log["status"] == "completed"
    assert len(seen) == 6
    # unclipped, the updates are longer than 0.5 (every one was clipped)
    assert all(0.5 * 0.999 <= n <= 0.5 * (1 + 1e-4) for n in seen), seen
    if dp == "client-fixed":  # the clients learned the norm from the server's config
        assert all(clip == 0.5 for _, clip in sent.values())


@pytest.mark.parametrize(("dp", "encoding"), [("client-fixed", "fp32"),
                                              ("server-fixed", "1bit")])
def test_dp_clips_in_transport_coordinates_where_the_weights_dominate(encoder_dir,
                                                                       aggregator_spy, dp,
                                                                       encoding):
    """In raw coordinates the batch-norm running variances are almost all of an update's
    norm (they measure ~K, the layer's fan-in); divided by K² they are not: what DP clips
    (and the aggregator averages) is mostly the weights. (Round 2's variances move more
    than round 1's: the noise of round 1, projected, left some far from the data's.)"""
    seen, _ = aggregator_spy
    log = _run(_cfg(encoder_dir, dp=dp, encoding=encoding, clipping_norm=0.5))
    assert log["status"] == "completed"
    assert all(0.5 * 0.999 <= n <= 0.5 * (1 + 1e-4) for n in seen)  # all clipped
    for update in seen.updates:
        total = sum(float(np.sum(u ** 2)) for u in update.values())
        variances = sum(float(np.sum(u ** 2)) for k, u in update.items()
                        if k.endswith("running_var"))
        weights = sum(float(np.sum(u ** 2)) for k, u in update.items()
                      if k.endswith(".weight") and u.ndim == 2)
        assert variances < 0.25 * total and weights > 0.5 * total, (variances, weights, total)


def test_transport_scaling_round_trips_exactly():
    head = BNNHead(200, 2)
    layout = Layout.of(head)
    bounds = transport_bounds(head, layout)
    rng = np.random.default_rng(0)
    state = {k: (rng.normal(0, 1, s) * bounds[k]).astype(np.float32)
             for k, s in zip(layout.keys, layout.shapes, strict=True)}
    there = scaled(state, bounds)
    assert all(a.dtype == np.float64 for a in there.values())
    assert np.abs(there["net.1.running_var"]).max() < 10  # on the latent weights' scale
    back = unscaled(there, bounds)
    assert all(back[k].dtype == np.float32 and np.array_equal(back[k], state[k])
               for k in layout.keys)


def test_client_side_adaptive_clipping_moves_the_norm_the_clients_clip_to(encoder_dir,
                                                                          aggregator_spy):
    seen, sent = aggregator_spy
    log = _run(_cfg(encoder_dir, dp="client-adaptive", noise_multiplier=0.1,
                    clipping_norm=0.2, rounds=3))
    clips = [sent[r][1] for r in (1, 2, 3)]
    # every update (norm > 1 in transport coordinates) is clipped, more than the target
    # half: the norm grows (Flower 1.41's own step would shrink it), by exp(0.2 · (1 - 0.5))
    # give or take the noise on the clipped count
    assert clips[0] == 0.2 and clips[0] < clips[1] < clips[2]
    assert clips[1] == pytest.approx(0.2 * math.exp(0.1), rel=0.05)
    assert [r["clipping_norm"] for r in log["rounds"]] == clips
    for i, n in enumerate(seen):
        assert n <= clips[i // 3] * (1 + 1e-4)


def test_server_side_adaptive_clipping_grows_the_norm_while_every_update_is_clipped(
        encoder_dir):
    log = _run(_cfg(encoder_dir, dp="server-adaptive", noise_multiplier=0.1,
                    clipping_norm=0.2, rounds=3))
    clips = [r["clipping_norm"] for r in log["rounds"]]
    assert clips[0] == 0.2 and clips[0] < clips[1] < clips[2]


def test_a_client_that_does_not_clip_is_rejected(encoder_dir):
    def unclip(msg, context, call_next):
        """Outside the DP mod: doubles the clipped update before it leaves."""
        reply = call_next(msg, context)
        if (msg.metadata.message_type == MessageType.TRAIN and not reply.has_error()
                and int(context.node_config["partition-id"]) == 1):
            glob = from_record(msg.content.array_records[ARRAYS])
            state = from_record(reply.content.array_records[ARRAYS])
            reply.content[ARRAYS] = ArrayRecord({k: Array(glob[k] + 2 * (v - glob[k]))
                                                 for k, v in state.items()})
        return reply

    log = _run(_cfg(encoder_dir, dp="client-fixed", clipping_norm=0.5), mods=[unclip])
    assert log["status"] == "completed"
    for r in log["rounds"]:
        bad = next(c for c in r["clients"] if c["partition"] == 1)
        assert bad["status"] == "rejected" and "above the clipping norm" in bad["reason"]
        assert r["valid_updates"] == 2 and r["aggregated"]  # the others, correctly noised


def test_a_failed_client_leaves_a_noised_mean_of_the_others(encoder_dir):
    log = _run(_cfg(encoder_dir, dp="server-fixed", rounds=3),
               mods=[faults.crash(0, rounds={2})])
    assert [r["valid_updates"] for r in log["rounds"]] == [3, 2, 3]
    assert all(r["aggregated"] for r in log["rounds"])
    eps = _epsilons(log)
    assert eps[0] < eps[1] < eps[2]


def test_local_dp_noises_every_update_and_counts_its_releases(encoder_dir):
    cfg = _cfg(encoder_dir, dp="local", clipping_norm=1.0, local_epsilon=1.0, rounds=3)
    log = _run(cfg)
    assert log["status"] == "completed"
    # clipped to 1, then noise of stddev 2·sqrt(2 ln(1.25e5)) ≈ 9.7 on every value
    norms = [c["update_norm"] for r in log["rounds"] for c in r["clients"]]
    assert min(norms) > 100
    assert all(r["valid_updates"] == 3 for r in log["rounds"])  # projected, not rejected
    eps = _epsilons(log)
    assert eps[0] < eps[1] < eps[2] and all(math.isfinite(e) for e in eps)


def test_each_mode_gets_flowers_wrapper_and_client_mod():
    cfg = settings(clients=10, fraction=0.5, noise_multiplier=0.3, clipping_norm=4.0)
    s = private_strategy(cfg.with_group("dp", mode="server-fixed"))
    assert isinstance(s, DifferentialPrivacyServerSideFixedClipping)
    assert s.accountant is not None and s.num_sampled_clients == 5 and s.clipping_norm == 4.0
    assert s.strategy.weighted_by_key == UNIFORM_WEIGHT  # equal weights: the accountant's rule
    assert isinstance(private_strategy(cfg.with_group("dp", mode="client-fixed")),
                      DifferentialPrivacyClientSideFixedClipping)
    assert isinstance(private_strategy(cfg.with_group("dp", mode="server-adaptive")),
                      DifferentialPrivacyServerSideAdaptiveClipping)
    assert isinstance(private_strategy(cfg.with_group("dp", mode="client-adaptive")),
                      DifferentialPrivacyClientSideAdaptiveClipping)
    local_dp = private_strategy(cfg.with_group("dp", mode="local"))
    assert isinstance(local_dp, LocalDpAccounting)
    assert local_dp.strategy.weighted_by_key == "num-examples"
    assert client_mod(cfg.with_group("dp", mode="client-fixed")) is fixedclipping_mod
    assert client_mod(cfg.with_group("dp", mode="client-adaptive")) is adaptiveclipping_mod
    local = client_mod(cfg.with_group("dp", mode="local", local_epsilon=0.5))
    assert isinstance(local, LocalDpMod) and local.epsilon == 0.5 and local.sensitivity == 8.0
    assert client_mod(cfg) is None and client_mod(cfg.with_group("dp", mode="server-fixed")) is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"dp": "gaussian"}, "--dp must be one of"),
    ({"noise_multiplier": -1.0}, "--noise-multiplier"),
    ({"noise_multiplier": float("nan")}, "--noise-multiplier"),
    ({"clipping_norm": 0.0}, "--clipping-norm"),
    ({"clipping_norm": float("inf")}, "--clipping-norm"),
    ({"dp_delta": 0.0}, "--dp-delta"), ({"dp_delta": 1.0}, "--dp-delta"),
    ({"local_epsilon": 0.0}, "--local-epsilon"),
    ({"dp": "server-fixed", "strategy": "krum"}, "use --strategy fedavg or fedprox"),
    ({"dp": "client-adaptive", "strategy": "fedadam"}, "use --strategy fedavg or fedprox"),
    ({"dp": "server-fixed", "noise_multiplier": 0.0}, "without noise there is no privacy"),
    ({"dp": "client-fixed", "encoding": "1bit"}, "use --encoding fp32"),
    ({"dp": "local", "encoding": "1bit"}, "use --encoding fp32"),
    ({"dp": "server-adaptive", "noise_multiplier": 0.5}, "needs --noise-multiplier < 0.3"),
])
def test_invalid_privacy_settings_are_refused_with_one_line(changes, message):
    with pytest.raises(DataError, match=message) as info:
        settings(clients=3, **changes)
    assert "\n" not in str(info.value)


def test_the_noise_settings_reach_the_clients():
    """A client rebuilds its FedConfig from the server's config: the cross checks of --dp
    must hold there too (noise multiplier included)."""
    cfg = settings(clients=3, dp="server-adaptive", noise_multiplier=0.2)
    assert FedConfig.from_record(cfg.client_record()).dp.noise_multiplier == 0.2


def test_a_projected_noisy_state_passes_validation():
    """What --dp local's server does with a noised reply: project it, then check it."""
    from hybnn.federated.encoding import model_state
    from hybnn.federated.validation import check_state, project

    layout = Layout.of(head := BNNHead(200, 2))
    rng = np.random.default_rng(0)
    noisy = {k: (v + rng.normal(0, 1e7, v.shape)).astype(np.float32)
             for k, v in model_state(head, layout).items()}
    with pytest.raises(UpdateError):
        check_state(noisy, layout)
    check_state(project(noisy, layout), layout)
