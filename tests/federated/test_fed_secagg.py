"""Secure aggregation (--secagg, Flower's SecAgg+): the server sees only the masked sum.

The fast tests run the real ServerApp and ClientApp through a LocalGrid (Flower's
serialization both ways, no Ray); a spy on each side records what a client computed before
masking and everything the server received. The slow ones run Flower's simulation runtime
and a TLS deployment.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the fed extra (flwr) is not installed")

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.common import bytes_to_ndarray, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from local_runs import settings

from hybnn.cli import main
from hybnn.errors import DataError
from hybnn.federated import faults
from hybnn.federated.client_app import make_client_app
from hybnn.federated.config import FedConfig
from hybnn.federated.encoded_strategy import FederationError
from hybnn.federated.encoding import Layout, UpdateError
from hybnn.federated.local_grid import SERVER_NODE_ID, LocalGrid
from hybnn.federated.secagg import (
    QUANTIZATION_RANGE,
    SecAggFedAvg,
    checked_aggregate,
    from_transport,
    to_transport,
)
from hybnn.federated.server_app import run_server
from hybnn.federated.simulation import federate
from hybnn.federated.transport_scale import transport_bounds
from hybnn.models.bnn_head import BNNHead

HEAD = BNNHead(200, 2, (128,))
LAYOUT = Layout.of(HEAD)


def _cfg(encoder_dir, **kw) -> FedConfig:
    base = {"data": "digits", "task": "0v1", "clients": 3, "rounds": 2, "local_epochs": 1,
            "encoder": encoder_dir, "secagg": True, "node_wait": 60.0,
            "round_timeout": 60.0}
    return settings(**{**base, **kw})


# -- configuration ------------------------------------------------------------------------
@pytest.mark.parametrize(("changes", "flag"), [
    ({"clients": 2}, "--clients >= 3"),
    ({"strategy": "fedmedian"}, "--strategy must be fedavg or fedprox"),
    ({"secagg_shares": 4}, "--secagg-shares"), ({"secagg_shares": 2}, "--secagg-shares"),
    ({"secagg_threshold": 3}, "--secagg-threshold"),
    ({"secagg_threshold": 1}, "--secagg-threshold"),
    ({"secagg_clip": 0.0}, "--secagg-clip"), ({"secagg_clip": math.nan}, "--secagg-clip"),
    ({"clients": 1024, "secagg_shares": 3}, "1023"),
])
def test_invalid_secagg_settings_are_refused_with_one_line(changes, flag):
    with pytest.raises(DataError, match=flag) as info:
        settings(**{"clients": 3, "secagg": True, **changes})
    assert "\n" not in str(info.value)


def test_the_settings_only_matter_with_secagg_and_raise_the_round_minimum():
    settings(clients=2, strategy="krum", secagg_shares=9)  # secagg off: not checked
    assert settings(clients=5, secagg=True).min_nodes == 3  # min-clients 2, 3 shares
    assert settings(clients=5, secagg=True, min_clients=4).min_nodes == 4
    assert FedConfig(clients=5).min_nodes == 2


def test_the_cli_refuses_secagg_with_two_clients_before_anything_runs(tmp_path, capsys):
    rc = main(["federate", "--data", "digits", "--secagg", "--clients", "2",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("hybnn: error: --secagg needs --clients >= 3")
    assert not (tmp_path / "run").exists()


# -- what travels ---------------------------------------------------------------------------
def test_running_statistics_are_divided_by_their_fan_in_bounds():
    bounds = transport_bounds(HEAD, LAYOUT)
    assert bounds["net.1.running_mean"] == 200 and bounds["net.1.running_var"] == 200**2
    assert bounds["net.3.running_mean"] == 128 and bounds["net.3.running_var"] == 128**2
    assert {k for k, b in bounds.items() if b != 1.0} == {
        "net.1.running_mean", "net.1.running_var", "net.3.running_mean", "net.3.running_var"}


def test_transport_round_trips_and_refuses_a_value_the_clip_would_cut():
    rng = np.random.default_rng(0)
    bounds = transport_bounds(HEAD, LAYOUT)
    state = {k: rng.uniform(-1, 1, s).astype(np.float32) * bounds[k]
             for k, s in zip(LAYOUT.keys, LAYOUT.shapes, strict=True)}
    arrays = to_transport(state, LAYOUT, bounds, clip=1.0)
    assert all(np.abs(a).max() <= 1.0 for a in arrays)
    back = from_transport(arrays, LAYOUT, bounds)
    assert all(np.allclose(back[k], state[k], rtol=1e-6) for k in LAYOUT.keys)
    state["net.1.weight"] = state["net.1.weight"] + 1.5  # a batch-norm gamma of ~2.5
    with pytest.raises(UpdateError, match=r"net.1.weight: .* outside --secagg-clip 1"):
        to_transport(state, LAYOUT, bounds, clip=1.0)


def test_the_aggregate_must_be_in_the_models_domain():
    state = {k: np.zeros(s, np.float32) + (1.0 if k.endswith("var") else 0.0)
             for k, s in zip(LAYOUT.keys, LAYOUT.shapes, strict=True)}
    state["net.1.running_var"][0] = -1e-4  # quantization noise: floored, accepted
    assert checked_aggregate(dict(state), LAYOUT)["net.1.running_var"][0] > 0
    state["net.0.weight"][0, 0] = 1.5  # no honest client sends a latent weight of 1.5
    with pytest.raises(UpdateError, match=r"net\.0\.weight"):
        checked_aggregate(state, LAYOUT)


# -- the protocol, in process ---------------------------------------------------------------
class SpyGrid(LocalGrid):
    """A LocalGrid that keeps every reply the server receives (after deserialization)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.replies: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        self.replies += replies
        return replies


def plain_spy(seen: list[dict]):
    """A client mod inside secaggplus_mod: records the update before it is masked."""
    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        if msg.metadata.message_type == MessageType.TRAIN and reply.has_content():
            res = compat.recorddict_to_fitres(reply.content, keep_input=True)
            seen.append({"node": int(context.node_id), "round": int(msg.metadata.group_id),
                         "n": res.num_examples, "arrays": parameters_to_ndarrays(res.parameters)})
        return reply
    return mod


def _run(cfg: FedConfig, mods=(), secagg_mods=(), sink=None):
    grid = SpyGrid(make_client_app(mods, secagg_mods), cfg.clients)
    context = Context(run_id=grid.run_id, node_id=SERVER_NODE_ID, node_config={},
                      state=RecordDict(), run_config={})
    return run_server(grid, context, cfg, sink), grid


@pytest.fixture
def aggregates(monkeypatch):
    """The unmasked aggregate handed to the strategy, per round."""
    seen: dict[int, list[np.ndarray]] = {}
    original = SecAggFedAvg.aggregate_fit

    def record(self, server_round, results, failures):
        if results:
            seen[server_round] = parameters_to_ndarrays(results[0][1].parameters)
        return original(self, server_round, results, failures)

    monkeypatch.setattr(SecAggFedAvg, "aggregate_fit", record)
    return seen


def _received(grid: SpyGrid) -> tuple[list[np.ndarray], list[bytes]]:
    """Every array the server received (ArrayRecords and npy bytes inside ConfigRecords),
    and every reply's serialized objects."""
    arrays, blobs = [], []
    for reply in grid.replies:
        if not reply.has_content():
            continue
        blobs.append(b"".join(o.deflate() for o in get_all_nested_objects(reply.content)
                              .values()))
        for record in reply.content.array_records.values():
            arrays += [a.numpy() for a in record.values()]
        for record in reply.content.config_records.values():
            for value in record.values():
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, bytes) and item.startswith(b"\x93NUMPY"):
                        arrays.append(bytes_to_ndarray(item))
    return arrays, blobs


def _weighted_mean(updates: list[dict]) -> list[np.ndarray]:
    total = sum(u["n"] for u in updates)
    return [sum(u["n"] * u["arrays"][i].astype(np.float64) for u in updates) / total
            for i in range(len(updates[0]["arrays"]))]


def test_no_update_reaches_the_server_in_the_clear(tiny_encoder, aggregates, task_identity):
    cfg = _cfg(str(tiny_encoder[0]), fraction_evaluate=0.0)
    plain: list[dict] = []
    log, grid = _run(cfg, secagg_mods=[plain_spy(plain)])
    assert log["status"] == "completed"
    assert sorted((u["round"], u["node"]) for u in plain) == sorted(
        (r, nid) for r in (1, 2) for nid in grid.get_node_ids())
    received, blobs = _received(grid)
    masked = [a for a in received if a.dtype == np.int64 and a.size > 1]
    assert len(masked) == 2 * 3 * len(LAYOUT.keys)  # rounds x clients x tensors
    assert all(a.size == 0 for a in received if a.dtype != np.int64)  # nothing else
    clip, levels = cfg.secagg.clip, QUANTIZATION_RANGE
    max_weight = log["secagg"]["max_weight"]
    for update in plain:
        ratio = update["n"] / max_weight
        for t in update["arrays"]:
            x = t.astype(np.float64).ravel()
            quantized = (np.clip(ratio * x, -clip, clip) + clip) * levels / (2 * clip)
            for r in (a.ravel() for a in received if a.size == x.size):
                assert not np.allclose(r, x, atol=1e-3)
                assert np.mean(np.abs(r - quantized) <= 1) < 0.01  # masked, not quantized
            raw = t.astype(np.float32).tobytes()[:64]
            assert not any(raw in blob for blob in blobs)
    for r, aggregate in aggregates.items():
        expected = _weighted_mean([u for u in plain if u["round"] == r])
        step = 2 * clip / levels  # per client, before dividing by the summed weights
        for got, want in zip(aggregate, expected, strict=True):
            assert np.abs(got - want).max() < 5 * step
    bounds = transport_bounds(HEAD, LAYOUT)
    assert log["secagg"]["bounds"] == {k: b for k, b in bounds.items() if b != 1.0}
    assert log["secagg"]["per_update_validation"] is False


@pytest.mark.parametrize("encoding", ["fp32", "1bit"])
def test_secagg_matches_plain_fedavg(tmp_path, tiny_encoder, encoding, task_identity):
    cfg = _cfg(str(tiny_encoder[0]), rounds=3, encoding=encoding)
    secure = federate(cfg, tmp_path / "secure", centralized=False, engine="local")
    plain_cfg = cfg.with_(strategy="fedavg").with_group("secagg", enabled=False)
    plain = federate(plain_cfg, tmp_path / "plain", centralized=False, engine="local")
    assert secure["status"] == plain["status"] == "completed"
    assert abs(secure["final_acc"] - plain["final_acc"]) <= 0.02
    assert secure["final_acc"] > secure["initial_acc"]
    for s, p in zip(secure["rounds"], plain["rounds"], strict=True):
        assert s["aggregated"] and s["valid_updates"] == 3
        assert abs(s["global_acc"] - p["global_acc"]) <= 0.02
        assert [c["status"] for c in s["clients"]] == ["ok"] * 3
        assert isinstance(s["clients_global_acc"], float)  # clients' evaluation still runs
        assert all(c["train_loss"] is not None for c in s["clients"])
    # Up: the masked vector is int64, 8 B per value, whatever the encoding.
    values = sum(LAYOUT.sizes())
    assert 8 * values < secure["bytes_up_per_client_round"] < 8 * values + 12_000
    # Down: the global model in the run's encoding, plus the protocol's keys and shares.
    assert 0 < secure["bytes_down_per_client_round"] - plain["bytes_down_per_client_round"] \
        < 6_000
    saved = json.loads((tmp_path / "secure" / "results.json").read_text())
    assert saved["secagg"]["shares"] == 3 and saved["config"]["secagg"]["enabled"] is True


def test_a_client_dropping_out_mid_protocol_is_unmasked_from_its_neighbours(
        tiny_encoder, aggregates, task_identity):
    cfg = _cfg(str(tiny_encoder[0]), clients=4, rounds=1, fraction_evaluate=0.0)
    plain: list[dict] = []
    # Inside secaggplus_mod, so partition 0 fails after sharing its keys, before masking.
    log, _ = _run(cfg, secagg_mods=[faults.crash(0), plain_spy(plain)])
    assert log["status"] == "completed"
    r1 = log["rounds"][0]
    dropped = next(c for c in r1["clients"] if c["partition"] == 0)
    assert dropped["status"] == "error"
    assert "collect_masked_vectors" in dropped["reason"] and "injected crash" in dropped["reason"]
    assert r1["aggregated"] and r1["valid_updates"] == 3
    expected = _weighted_mean(plain)  # the three survivors
    assert all(np.abs(g - w).max() < 1e-4 for g, w in zip(aggregates[1], expected,
                                                            strict=True))


def tamper_fitres(partition: int, count: int | None = None, latent: float | None = None):
    """A hostile client inside secaggplus_mod: a claimed sample count, or every latent
    weight of the first layer set to ``latent`` (inside the clip), before masking."""
    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        if (int(context.node_config["partition-id"]) != partition
                or msg.metadata.message_type != MessageType.TRAIN):
            return reply
        res = compat.recorddict_to_fitres(reply.content, keep_input=True)
        arrays = parameters_to_ndarrays(res.parameters)
        if latent is not None:
            arrays[0] = np.full_like(arrays[0], latent)
        res.parameters = ndarrays_to_parameters(arrays)
        res.num_examples = res.num_examples if count is None else count
        return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)
    return mod


@pytest.mark.parametrize(("hostile", "where"), [
    ({"count": 10**6}, "client"), ({"latent": 5.0}, "aggregate")])
def test_a_hostile_client_in_the_sum_keeps_the_global_model(tiny_encoder, task_identity,
                                                          hostile, where):
    cfg = _cfg(str(tiny_encoder[0]), rounds=1, fraction_evaluate=0.0)
    log: dict = {}
    with pytest.raises(FederationError, match="no valid update"):
        _run(cfg, secagg_mods=[tamper_fitres(1, **hostile)], sink=log)
    r1 = log["rounds"][0]
    assert not r1["aggregated"] and r1["valid_updates"] == 3  # in the sum, not applied
    assert log["status"] == "failed"  # the only round kept the initial head
    if where == "client":
        bad = next(c for c in r1["clients"] if c["partition"] == 1)
        assert bad["status"] == "rejected" and "num-examples" in bad["reason"]
        assert "cannot take it out" in bad["reason"]
    else:  # SecAgg+ hides who: only the aggregate's domain check catches it
        assert [c["status"] for c in r1["clients"]] == ["ok"] * 3
        assert "net.0.weight" in r1["reason"]


def test_the_plain_train_handler_refuses_a_secagg_run(tiny_encoder, task_identity):
    from flwr.app import ConfigRecord

    from hybnn.federated.client_app import train
    from hybnn.federated.encoded_strategy import CONFIG

    cfg = _cfg(str(tiny_encoder[0]))
    msg = Message(RecordDict({CONFIG: ConfigRecord(cfg.client_record())}),
                  dst_node_id=1, message_type=MessageType.TRAIN)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0,
                                                        "num-partitions": 3},
                      state=RecordDict(), run_config={})
    with pytest.raises(DataError, match="only masked"):
        train(msg, context)


# -- Flower's runtimes (slow) ---------------------------------------------------------------
@pytest.mark.slow
def test_secagg_in_the_simulation_runtime(tmp_path, tiny_encoder):
    pytest.importorskip("ray", reason="the fed extra (flwr[simulation]) is not installed")
    cfg = _cfg(str(tiny_encoder[0]), node_wait=120.0, round_timeout=120.0)
    res = federate(cfg, tmp_path / "run", centralized=False, engine="ray")
    local = federate(cfg, tmp_path / "local", centralized=False, engine="local")
    assert res["status"] == "completed" and res["runtime"] == "simulation"
    assert all(r["aggregated"] and r["valid_updates"] == 3 for r in res["rounds"])
    assert abs(res["final_acc"] - local["final_acc"]) <= 0.02


@pytest.mark.slow
def test_secagg_deployment_with_tls(tmp_path, tiny_encoder):
    import shutil

    if shutil.which("flower-superlink") is None:
        pytest.skip("the fed extra (flower-superlink) is not installed")
    from hybnn.federated.deploy import deploy

    cfg = _cfg(str(tiny_encoder[0]), rounds=1, fraction_evaluate=0.0, round_timeout=120.0,
               node_wait=120.0)
    res = deploy(cfg, tmp_path / "run", centralized=False, run_timeout=240)
    assert res["run_status"] == "finished:completed" and res["status"] == "completed"
    assert res["security"] == {"tls": True, "supernode_auth": True}
    r1 = res["rounds"][0]
    assert r1["aggregated"] and r1["valid_updates"] == 3
    assert res["secagg"]["shares"] == 3
    assert res["bytes_up_per_client_round"] > 8 * sum(LAYOUT.sizes())
