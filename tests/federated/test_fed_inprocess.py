"""The server and client apps wired together in this process (no Ray, no network).

A small grid delivers each message to the real ClientApp handlers, with one persistent
Context per node, as Flower does: fast, deterministic checks of the round logic, the
validation and the fault handling. The Flower runtimes are exercised in
test_fed_simulation.py and test_fed_deploy.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the fed extra (flwr) is not installed")

from flwr.app import Context, Error, Message, RecordDict

from hybnn.federated import faults
from hybnn.federated.client_app import make_client_app
from hybnn.federated.config import FedConfig
from hybnn.federated.encoded_strategy import FederationError
from hybnn.federated.server_app import run_server
from hybnn.pipeline.config import PretrainConfig
from hybnn.pipeline.pretrain import pretrain

pytestmark = pytest.mark.usefixtures("task_identity")

BASE_ID = 2**63 + 11  # node ids are uint64: beyond int64 on purpose


class InProcessGrid:
    """Delivers messages to ClientApp handlers in-process; ``silent`` nodes never reply
    (what the server sees when a node disappears until the round timeout)."""

    def __init__(self, app, clients: int, silent: set[int] = frozenset(), connected=None):
        self.app = app
        self.silent = set(silent)
        n_connected = clients if connected is None else connected
        self.contexts = {
            BASE_ID + i: Context(run_id=1, node_id=BASE_ID + i,
                                 node_config={"partition-id": i, "num-partitions": clients},
                                 state=RecordDict(), run_config={})
            for i in range(n_connected)}
        self.received: dict[int, list[str]] = {nid: [] for nid in self.contexts}

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            self.received[nid].append(msg.metadata.message_type)
            if nid - BASE_ID in self.silent:
                continue
            try:
                replies.append(self.app(message=msg, context=self.contexts[nid]))
            except Exception as exc:  # what Flower's runtime does with a raising ClientApp
                replies.append(Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"),
                                       reply_to=msg))
        return replies


def _cfg(encoder_dir, **kw):
    base = {"data": "digits", "task": "0v1", "clients": 3, "rounds": 2, "local_epochs": 1,
            "encoder": encoder_dir, "fraction_evaluate": 1.0, "node_wait": 5.0}
    return FedConfig(**{**base, **kw})


def _run(cfg, mods=(), silent=(), connected=None):
    grid = InProcessGrid(make_client_app(mods), cfg.clients, set(silent), connected)
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    return run_server(grid, ctx, cfg), grid


def _clients(log, server_round):
    return {c["partition"]: c for c in log["rounds"][server_round - 1]["clients"]}


@pytest.mark.parametrize("encoding", ["fp32", "1bit"])
def test_federation_completes_and_counts_serialized_bytes(encoder_dir, encoding):
    log, _ = _run(_cfg(encoder_dir, encoding=encoding))
    assert log["status"] == "completed"
    assert [h["status"] for h in log["handshake"]] == ["ok"] * 3
    assert [r["round"] for r in log["rounds"]] == [1, 2]
    for r in log["rounds"]:
        assert r["aggregated"] and r["valid_updates"] == 3
        assert 0.0 <= r["global_acc"] <= 1.0
        assert r["bytes_up"] == sum(c["train_bytes_up"] for c in r["clients"])
        assert all(c["status"] == "ok" and c["status_eval"] == "ok" for c in r["clients"])
        assert sorted(c["partition"] for c in r["clients"]) == [0, 1, 2]
    payload = log["model_payload_bytes"][encoding]
    up = log["rounds"][0]["clients"][0]["train_bytes_up"]
    assert payload < up < payload + 8192  # serialized = payload + framing (ids, headers)


def test_1bit_sends_far_fewer_bytes_than_fp32(encoder_dir):
    fp32, _ = _run(_cfg(encoder_dir, rounds=1, fraction_evaluate=0.0))
    onebit, _ = _run(_cfg(encoder_dir, rounds=1, fraction_evaluate=0.0, encoding="1bit"))
    for key in ("bytes_up", "bytes_down"):
        assert fp32["rounds"][0][key] / onebit["rounds"][0][key] > 15


def test_xor_federation_sends_30x_fewer_bytes_up_and_learns_like_1bit(encoder_dir):
    runs = {e: _run(_cfg(encoder_dir, encoding=e, rounds=3))[0] for e in ("fp32", "1bit", "xor")}
    xor = runs["xor"]
    assert xor["status"] == "completed"
    for r in xor["rounds"]:
        assert r["aggregated"] and r["valid_updates"] == 3
        assert all(c["status"] == "ok" and c["status_eval"] == "ok" for c in r["clients"])
        up, down = r["bytes_up"], r["bytes_down"]
        assert runs["fp32"]["rounds"][r["round"] - 1]["bytes_up"] / up >= 30
        assert abs(down - runs["1bit"]["rounds"][r["round"] - 1]["bytes_down"]) <= 3 * 8
    # Same signs as 1bit; only the 8-bit batch norm differs (72 test digits: 1 = 1.4 %).
    finals = {e: run["rounds"][-1]["global_acc"] for e, run in runs.items()}
    assert abs(finals["xor"] - finals["1bit"]) <= 0.05
    # learns: at least 4 more test digits right than the initial model after 3 rounds (the
    # gain is 7-8 digits on the machines seen, which differ in float rounding)
    assert finals["xor"] > xor["initial_acc"] + 0.05


@pytest.mark.parametrize("encoding", ["1bit", "xor"])
def test_1bit_and_xor_clients_keep_their_latent_magnitudes_between_rounds(encoder_dir, encoding):
    _, grid = _run(_cfg(encoder_dir, encoding=encoding, fraction_evaluate=0.0))
    for ctx in grid.contexts.values():
        latent = ctx.state["hybnn-latent"]
        w = latent["net.0.weight"].numpy()
        assert w.shape == (128, 200) and len(np.unique(np.abs(w))) > 100


def test_1bit_and_xor_round_one_starts_every_client_from_the_servers_exact_model(encoder_dir):
    # Newcomers take their latent magnitudes from the seeded initial model, so after the
    # first local training 1bit (and xor) clients hold exactly what fp32 clients hold.
    runs = [_run(_cfg(encoder_dir, rounds=1, fraction_evaluate=0.0, encoding=e))[0]
            for e in ("fp32", "1bit", "xor")]
    fp32, onebit, xor = ([(c["train_loss"], c["local_acc"]) for c in r["rounds"][0]["clients"]]
                         for r in runs)
    assert fp32 == onebit == xor


def test_a_crashing_client_fails_its_round_and_the_others_carry_on(encoder_dir):
    log, _ = _run(_cfg(encoder_dir), mods=[faults.crash(1, rounds={1})])
    assert log["status"] == "completed"
    r1, r2 = _clients(log, 1), _clients(log, 2)
    assert r1[1]["status"] == "error" and "injected crash" in r1[1]["reason"]
    assert log["rounds"][0]["valid_updates"] == 2 and log["rounds"][0]["aggregated"]
    assert r2[1]["status"] == "ok"


def test_a_client_that_never_replies_is_marked_missing(encoder_dir):
    log, _ = _run(_cfg(encoder_dir), silent={2})
    assert log["status"] == "completed"
    missing = next(c for c in log["rounds"][0]["clients"] if c["node_id"] == BASE_ID + 2)
    assert missing["status"] == "missing" and missing["status_eval"] == "missing"
    assert log["rounds"][0]["valid_updates"] == 2 and log["rounds"][0]["aggregated"]


@pytest.mark.parametrize("kind", ["nan", "inf", "shape"])
def test_a_corrupt_update_is_rejected_and_never_averaged(encoder_dir, kind):
    log, _ = _run(_cfg(encoder_dir, fraction_evaluate=0.0), mods=[faults.corrupt(0, kind)])
    for server_round in (1, 2):
        bad = _clients(log, server_round)[0]
        assert bad["status"] == "rejected"
        assert ("NaN or infinite" if kind != "shape" else "shape") in bad["reason"]
        assert log["rounds"][server_round - 1]["valid_updates"] == 2
    accs = [r["global_acc"] for r in log["rounds"]]
    assert all(np.isfinite(accs))


def test_too_few_valid_updates_keep_the_global_model(encoder_dir):
    cfg = _cfg(encoder_dir, min_clients=3, fraction_evaluate=0.0)
    log, _ = _run(cfg, mods=[faults.corrupt(2, "nan", rounds={2})])
    r1, r2 = log["rounds"]
    assert r1["aggregated"] and not r2["aggregated"]
    assert r2["global_acc"] == r1["global_acc"] and r2["global_loss"] == r1["global_loss"]


def test_waiting_for_nodes_is_bounded(encoder_dir):
    cfg = _cfg(encoder_dir, min_clients=3, node_wait=1.5)
    t0 = time.monotonic()
    with pytest.raises(FederationError, match=r"1 usable node\(s\) after 1.5 s"):
        _run(cfg, connected=1)
    assert time.monotonic() - t0 < 10


def test_a_client_with_another_encoder_refuses_before_training(encoder_dir, tmp_path,
                                                                 tiny_encoder):
    images = tiny_encoder[2]
    other = pretrain(images, tmp_path / "other", PretrainConfig(epochs=1, seed=1),
                     {"source": "digits"}, progress=False, plots=False)
    log, grid = _run(_cfg(encoder_dir), mods=[faults.foreign_encoder(1, str(tmp_path / "other"))])
    refused = [h for h in log["handshake"] if h["status"] == "refused"]
    assert len(refused) == 1 and refused[0]["node_id"] == BASE_ID + 1
    assert other.fingerprint[:12] in refused[0]["reason"]
    assert "every client must hold the same frozen encoder" in refused[0]["reason"]
    assert grid.received[BASE_ID + 1] == ["query"]  # never asked to train
    assert log["status"] == "completed" and log["rounds"][-1]["valid_updates"] == 2


def test_sampling_is_seeded(encoder_dir):
    cfg = _cfg(encoder_dir, clients=6, fraction=0.5, rounds=3, fraction_evaluate=0.0)
    a, _ = _run(cfg)
    b, _ = _run(cfg)
    picks = [[c["partition"] for c in r["clients"]] for r in a["rounds"]]
    assert picks == [[c["partition"] for c in r["clients"]] for r in b["rounds"]]
    assert all(len(p) == 3 for p in picks) and len({tuple(p) for p in picks}) > 1


# -- hostile clients: the real client app behind the fault mods --------------

HOSTILE = {  # name: (encoding, mod, ledger status field, word of the reason)
    "huge train count": ("fp32", faults.tamper_metrics(0, {"num-examples": 10**15}),
                         "status", "num-examples"),
    "negative variance": ("fp32", faults.poison(0, "running_var", -1e6), "status",
                          "running_var"),
    "negative variance, 1bit": ("1bit", faults.poison(0, "running_var", -1e6), "status",
                                "running_var"),
    "negative variance, xor": ("xor", faults.poison(0, "running_var", -1e6), "status",
                               "running_var"),
    "latent weights out of range": ("fp32", faults.poison(0, "0.weight", 50.0), "status",
                                    "latent"),
    "infinite evaluate count": ("fp32", faults.tamper_metrics(
        0, {"num-examples": float("inf")}, kind="evaluate"), "status_eval", "num-examples"),
    "server key in the metrics": ("fp32", faults.tamper_metrics(0, {"status": 1.0}),
                                  "status", "status"),
}
_REFERENCE: dict[tuple, dict] = {}


def _without_client_0(encoder_dir, encoding, field):
    """The run the hostile one must equal: client 0's train (or evaluate) replies dropped
    because it crashed, or no fault at all when only evaluate replies are hostile."""
    key = (encoder_dir, encoding, field)
    if key not in _REFERENCE:
        mods = [faults.crash(0)] if field == "status" else []
        _REFERENCE[key] = _run(_cfg(encoder_dir, encoding=encoding), mods=mods)[0]
    return _REFERENCE[key]


@pytest.mark.parametrize("attack", HOSTILE)
def test_a_hostile_reply_is_dropped_and_has_no_influence(encoder_dir, attack):
    encoding, mod, field, word = HOSTILE[attack]
    log, _ = _run(_cfg(encoder_dir, encoding=encoding), mods=[mod])
    assert log["status"] == "completed"
    for server_round in (1, 2):
        bad = _clients(log, server_round)[0]
        assert bad[field] == "rejected" and word in bad[f"reason{field[6:]}"]
        assert all(c[field] == "ok" for p, c in _clients(log, server_round).items() if p)
    reference = _without_client_0(encoder_dir, encoding, field)
    for r, ref in zip(log["rounds"], reference["rounds"], strict=True):
        assert np.isfinite(r["global_loss"])
        assert (r["global_acc"], r["global_loss"]) == (ref["global_acc"], ref["global_loss"])
        assert r["clients_global_acc"] is None or 0 <= r["clients_global_acc"] <= 1


@pytest.mark.parametrize("metrics", [{"status": 1}, {"num-train": float("inf")},
                                     {"num-train": 10**15}, {"num-test": 2.5}])
def test_a_hostile_handshake_excludes_the_node_and_the_federation_goes_on(encoder_dir,
                                                                          metrics):
    mod = faults.tamper_metrics(1, metrics, kind="query")
    log, grid = _run(_cfg(encoder_dir), mods=[mod])
    assert log["status"] == "completed"
    rejected = [h for h in log["handshake"] if h["status"] == "rejected"]
    assert [h["node_id"] for h in rejected] == [BASE_ID + 1]
    assert next(iter(metrics)) in rejected[0]["reason"]
    assert grid.received[BASE_ID + 1] == ["query"]  # never asked to train
    assert log["rounds"][-1]["valid_updates"] == 2


def test_a_federation_in_which_every_client_always_fails_ends_failed(encoder_dir):
    cfg = _cfg(encoder_dir, fraction_evaluate=0.0)
    grid = InProcessGrid(make_client_app([faults.crash(p) for p in range(3)]), cfg.clients)
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    sink: dict = {}
    with pytest.raises(FederationError, match="no valid update in any of the 2 round"):
        run_server(grid, ctx, cfg, sink)
    assert sink["status"] == "failed" and "no valid update" in sink["error"]
    assert [r["aggregated"] for r in sink["rounds"]] == [False, False]
