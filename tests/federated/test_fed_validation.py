"""Hostile client messages against the server's strategy, driven with hand-made replies.

Each test builds the replies a malicious or broken client could send (Flower accepts any
int, float or list of them as a metric, any array as an update) and checks that
:class:`EncodedStrategy` drops the reply with a reason in the round ledger, keeps going,
and never lets the value reach the aggregate.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the fed extra (flwr) is not installed")

from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from hybnn.federated.config import FedConfig
from hybnn.federated.encoded_strategy import EncodedStrategy, from_record, to_record
from hybnn.federated.encoding import Layout, decode, encode, model_state
from hybnn.models.bnn_head import BNNHead

pytestmark = pytest.mark.usefixtures("task_identity")

MODEL = BNNHead(8, 2, (4,))
LAYOUT = Layout.of(MODEL)
NODES = {11: 0, 12: 1, 13: 2}  # node id -> partition id
NUM_TRAIN, NUM_TEST = 100, 20
NAN, INF = float("nan"), float("inf")


def handshake_metrics(pid: int) -> dict:
    return {"partition-id": pid, "num-train": NUM_TRAIN, "num-test": NUM_TEST}


class ScriptedGrid:
    """Connected nodes that answer the handshake with the given metrics."""

    def __init__(self, answers: dict[int, dict]):
        self.answers = answers

    def get_node_ids(self):
        return list(self.answers)

    def send_and_receive(self, messages, *, timeout=None):
        return [Message(RecordDict({"metrics": MetricRecord(
            self.answers[m.metadata.dst_node_id])}), reply_to=m) for m in messages]


def make_strategy(encoding: str = "fp32", **cfg) -> EncodedStrategy:
    """A FedAvg strategy (its weighting is what the replies attack) after an honest
    handshake of the three NODES."""
    cfg = {"clients": 3, "min_clients": 1, "encoding": encoding, "strategy": "fedavg", **cfg}
    strategy = EncodedStrategy(FedConfig(**cfg), LAYOUT)
    answers = {nid: handshake_metrics(pid) for nid, pid in NODES.items()}
    strategy.handshake(ScriptedGrid(answers), ConfigRecord({}))
    return strategy


def reply(nid: int, kind: str, content: RecordDict) -> Message:
    msg = Message(RecordDict({"config": ConfigRecord({})}), message_type=kind, dst_node_id=nid)
    return Message(content, reply_to=msg)


def state(fill: float = 0.5, **tensors: float) -> dict[str, np.ndarray]:
    """A valid state: latent weights ``fill``, batch norm as initialised, and overrides
    for the tensors whose names end with the given suffix (dots as underscores)."""
    s = model_state(MODEL, LAYOUT)
    for k, is_binary in zip(LAYOUT.keys, LAYOUT.binary, strict=True):
        if is_binary:
            s[k] = np.full_like(s[k], fill)
        for suffix, v in tensors.items():
            if k.replace(".", "_").endswith(suffix):
                s[k] = np.full_like(s[k], v)
    return s


def train_reply(nid: int, st: dict[str, np.ndarray] | None = None, encoding: str = "fp32",
                arrays: ArrayRecord | None = None, reference: dict | None = None,
                **metrics) -> Message:
    m = {"num-examples": 50, "partition-id": NODES.get(nid, 0), "train-loss": 0.3,
         "train-acc": 0.9, "local-loss": 0.4, "local-acc": 0.85, **metrics}
    arrays = arrays or to_record(encode(st if st is not None else state(), LAYOUT, encoding,
                                        reference))
    return reply(nid, MessageType.TRAIN, RecordDict({"arrays": arrays,
                                                      "metrics": MetricRecord(m)}))


def eval_reply(nid: int, **metrics) -> Message:
    m = {"num-examples": NUM_TEST, "partition-id": NODES[nid], "loss": 0.2, "acc": 0.9,
         **metrics}
    return reply(nid, MessageType.EVALUATE, RecordDict({"metrics": MetricRecord(m)}))


def ledger(strategy: EncodedStrategy, nid: int, server_round: int = 1) -> dict:
    return strategy.ledger[server_round].clients[nid].to_json()


# -- sample counts: bounded by the handshake's count and the cap -----------------------

def test_a_huge_sample_count_cannot_take_over_fedavg():
    s = make_strategy()
    honest = [train_reply(11, state(0.5), **{"num-examples": 60}),
              train_reply(12, state(-0.5), **{"num-examples": 40})]
    attacker = train_reply(13, state(1.0), **{"num-examples": 10**15})
    arrays, _ = s.aggregate_train(1, [*honest, attacker])
    w = from_record(arrays)["net.0.weight"]
    np.testing.assert_allclose(w, 0.6 * 0.5 + 0.4 * -0.5, rtol=1e-6)  # the attacker: 1.0
    assert ledger(s, 13)["status"] == "rejected"
    assert "num-examples" in ledger(s, 13)["reason"] and "100" in ledger(s, 13)["reason"]
    assert s.ledger[1].valid_updates == 2


@pytest.mark.parametrize("count", [10**15, NUM_TRAIN + 1, 0, -3, 2.5, 50.0, INF, NAN, [50]])
def test_a_sample_count_outside_the_handshake_count_is_rejected(count):
    s = make_strategy()
    arrays, _ = s.aggregate_train(1, [train_reply(11), train_reply(12, **{"num-examples":
                                                                           count})])
    assert arrays is not None and s.ledger[1].valid_updates == 1
    assert ledger(s, 12)["status"] == "rejected" and "num-examples" in ledger(s, 12)["reason"]


def test_the_handshake_count_itself_is_accepted():
    s = make_strategy()
    s.aggregate_train(1, [train_reply(11, **{"num-examples": NUM_TRAIN})])
    assert ledger(s, 11)["status"] == "ok" and ledger(s, 11)["num_examples"] == NUM_TRAIN


def test_a_node_without_a_handshake_count_is_bounded_by_the_cap():
    s = make_strategy(max_examples=1000)
    s.aggregate_train(1, [train_reply(99, **{"num-examples": 1000}),
                          train_reply(98, **{"num-examples": 1001})])
    assert ledger(s, 99)["status"] == "ok"
    assert ledger(s, 98)["status"] == "rejected" and "1000" in ledger(s, 98)["reason"]


# -- model states: values outside their domain are rejected ----------------------------

@pytest.mark.parametrize(("encoding", "overrides", "needle"), [
    ("fp32", {"running_var": -1e6}, "running_var"),
    ("fp32", {"running_var": 0.0}, "running_var"),
    ("fp32", {"running_var": 1e12}, "running_var"),
    ("fp32", {"running_mean": 1e7}, "running_mean"),
    ("fp32", {"1_bias": 1e9}, "net.1.bias"),
    ("fp32", {"fill": 1.5}, "latent"),
    ("fp32", {"fill": -50.0}, "latent"),
    ("1bit", {"running_var": -1e6}, "running_var"),
    ("1bit", {"fill": 5.0}, "scale"),
])
def test_a_state_outside_its_domain_is_rejected(encoding, overrides, needle):
    fill = overrides.pop("fill", 0.5)
    s = make_strategy(encoding)
    arrays, _ = s.aggregate_train(1, [train_reply(11, encoding=encoding),
                                      train_reply(12, state(fill, **overrides), encoding)])
    assert s.ledger[1].valid_updates == 1
    assert ledger(s, 12)["status"] == "rejected" and needle in ledger(s, 12)["reason"]
    agg = from_record(arrays)
    assert all((agg[k] > 0).all() for k in LAYOUT.keys if k.endswith("running_var"))


def test_states_at_the_edge_of_their_domain_are_accepted():
    s = make_strategy()
    edge = state(1.0, running_var=1e-3, running_mean=-100.0)
    s.aggregate_train(1, [train_reply(11, edge), train_reply(12, state(-1.0))])
    assert [ledger(s, n)["status"] for n in (11, 12)] == ["ok", "ok"]


# -- xor replies: decoded against the global model sent for the round ----------------------

def send_train(strategy: EncodedStrategy, server_round: int, glob: dict) -> dict:
    """The strategy sends ``glob`` for training; returns the model the clients decode."""
    grid = ScriptedGrid({nid: handshake_metrics(pid) for nid, pid in NODES.items()})
    messages = list(strategy.configure_train(server_round, to_record(glob), ConfigRecord({}),
                                             grid))
    return decode(from_record(messages[0].content["arrays"]), LAYOUT, "1bit")


def test_xor_replies_average_like_1bit_replies():
    honest = [(11, state(-0.5), 60), (12, state(0.5, running_var=2.0), 40)]
    aggregates = {}
    for encoding in ("1bit", "xor"):
        s = make_strategy(encoding)
        received = send_train(s, 1, state(0.3))
        replies = [train_reply(nid, st, encoding, reference=received, **{"num-examples": n})
                   for nid, st, n in honest]
        arrays, _ = s.aggregate_train(1, replies)
        assert s.ledger[1].valid_updates == 2
        aggregates[encoding] = from_record(arrays)
    for k, is_binary in zip(LAYOUT.keys, LAYOUT.binary, strict=True):
        if is_binary:
            np.testing.assert_allclose(aggregates["xor"][k], 0.6 * -0.5 + 0.4 * 0.5, rtol=1e-6)
        np.testing.assert_allclose(aggregates["xor"][k], aggregates["1bit"][k], atol=5e-3)


def test_an_xor_reply_coded_against_another_round_is_rejected():
    s = make_strategy("xor")
    first = send_train(s, 1, state(0.3))
    s.aggregate_train(1, [train_reply(11, state(0.3), "xor", reference=first)])
    send_train(s, 2, state(-0.3))  # round 2 sends other signs
    s.aggregate_train(2, [train_reply(11, state(0.3), "xor", reference=first),
                          train_reply(12, state(0.3), "xor", reference=state(-0.3))])
    assert ledger(s, 11, 1)["status"] == "ok" and ledger(s, 12, 2)["status"] == "ok"
    assert ledger(s, 11, 2)["status"] == "rejected"
    assert "another global model" in ledger(s, 11, 2)["reason"]


def test_an_xor_reply_the_server_sent_nothing_for_is_rejected():
    s = make_strategy("xor")  # no configure_train: no global model went out
    s.aggregate_train(1, [train_reply(11, state(0.3), "xor", reference=state(0.3))])
    assert ledger(s, 11)["status"] == "rejected"
    assert "without a reference" in ledger(s, 11)["reason"]


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"running_var": -1e6}, "running_var"), ({"running_var": 0.0}, "running_var"),
    ({"running_mean": 1e7}, "running_mean"), ({"1_bias": 1e9}, "net.1.bias"),
    ({"fill": 5.0}, "scale"),
])
def test_an_xor_state_outside_its_domain_is_rejected(overrides, needle):
    fill = overrides.pop("fill", 0.5)
    s = make_strategy("xor")
    received = send_train(s, 1, state(0.3))
    arrays, _ = s.aggregate_train(1, [
        train_reply(11, encoding="xor", reference=received),
        train_reply(12, state(fill, **overrides), "xor", reference=received)])
    assert s.ledger[1].valid_updates == 1
    assert ledger(s, 12)["status"] == "rejected" and needle in ledger(s, 12)["reason"]
    agg = from_record(arrays)
    assert all((agg[k] > 0).all() for k in LAYOUT.keys if k.endswith("running_var"))


def test_an_update_with_num_batches_tracked_is_rejected():
    arrays = to_record({**encode(state(), LAYOUT, "fp32"),
                        "net.1.num_batches_tracked": np.array(10**12, np.int64)})
    s = make_strategy()
    s.aggregate_train(1, [train_reply(11), train_reply(12, arrays=arrays)])
    assert ledger(s, 12)["status"] == "rejected" and "unexpected" in ledger(s, 12)["reason"]


def test_an_array_that_cannot_be_read_is_rejected():
    arrays = to_record(encode(state(), LAYOUT, "fp32"))
    arrays["net.1.bias"] = Array(dtype="float32", shape=(4,), stype="numpy.ndarray",
                                 data=b"not a numpy file")
    s = make_strategy()
    s.aggregate_train(1, [train_reply(11), train_reply(12, arrays=arrays)])
    assert ledger(s, 12)["status"] == "rejected" and "net.1.bias" in ledger(s, 12)["reason"]


# -- metrics: non-finite, out-of-range and reserved names are rejected -----------------

@pytest.mark.parametrize("metrics", [
    {"train-loss": INF}, {"local-acc": NAN}, {"train-acc": 7.0}, {"extra": [1.0, NAN]},
    {"status": 1}, {"node-id": 3}, {"reason": 0}, {"train_bytes_up": 1},
    {"partition-id": 9}, {"partition-id": 2},
])
def test_hostile_train_metrics_are_rejected(metrics):
    s = make_strategy()
    s.aggregate_train(1, [train_reply(11), train_reply(12, **metrics)])
    assert ledger(s, 12)["status"] == "rejected"
    assert next(iter(metrics)) in ledger(s, 12)["reason"]
    assert ledger(s, 12)["partition"] == 1  # the handshake's, not the reply's


def test_other_finite_metrics_are_accepted():
    s = make_strategy()
    s.aggregate_train(1, [train_reply(11, **{"norm-bit": 1.0, "curve": [0.5, 0.25]})])
    assert ledger(s, 11)["status"] == "ok"


@pytest.mark.parametrize("metrics", [
    {"num-examples": INF}, {"num-examples": NAN}, {"num-examples": -1},
    {"num-examples": 10**15}, {"num-examples": NUM_TEST + 1}, {"num-examples": 2.5},
    {"acc": 2.0}, {"acc": NAN}, {"loss": INF}, {"status": 0},
])
def test_hostile_evaluate_replies_are_dropped_without_crashing(metrics):
    s = make_strategy()
    result = s.aggregate_evaluate(1, [eval_reply(11, acc=0.8), eval_reply(12, **metrics),
                                      eval_reply(13, acc=0.6)])
    assert result["acc"] == pytest.approx(0.7)
    assert ledger(s, 12)["status_eval"] == "rejected"
    assert next(iter(metrics)) in ledger(s, 12)["reason_eval"]


# -- handshake: a hostile reply excludes the node --------------------------------------

@pytest.mark.parametrize("change", [
    {"status": 1}, {"node_id": 5}, {"num-train": INF}, {"num-train": NAN},
    {"num-train": 2.5}, {"num-train": 10**15}, {"num-train": -1}, {"num-test": INF},
    {"partition-id": 7}, {"partition-id": NAN}, {"num-train": None}, {"extra": INF},
])
def test_a_hostile_handshake_excludes_the_node_with_a_reason(change):
    answers = {nid: handshake_metrics(pid) for nid, pid in NODES.items()}
    answers[12] = {k: v for k, v in {**answers[12], **change}.items() if v is not None}
    s = EncodedStrategy(FedConfig(clients=3, min_clients=1, max_examples=10_000), LAYOUT)
    rows = {r["node_id"]: r for r in s.handshake(ScriptedGrid(answers), ConfigRecord({}))}
    assert rows[12]["status"] == "rejected" and next(iter(change)) in rows[12]["reason"]
    assert 12 in s.excluded
    assert [rows[n]["status"] for n in (11, 13)] == ["ok", "ok"]
    assert s.wait_for_nodes("round 1") == [11, 13]


def test_a_second_claim_of_a_partition_id_excludes_that_node():
    answers = {11: handshake_metrics(0), 12: handshake_metrics(0), 13: handshake_metrics(2)}
    s = EncodedStrategy(FedConfig(clients=3, min_clients=1, max_examples=10_000), LAYOUT)
    rows = {r["node_id"]: r for r in s.handshake(ScriptedGrid(answers), ConfigRecord({}))}
    assert [rows[n]["status"] for n in (11, 12, 13)] == ["ok", "rejected", "ok"]
    assert rows[12]["reason"] == "partition-id = 0 is already claimed by node 11"
    assert s.excluded == {12} and s.partition_of == {11: 0, 13: 2}
    assert s.wait_for_nodes("round 1") == [11, 13]


def test_the_same_node_may_repeat_its_handshake():
    s = make_strategy()
    answers = {nid: handshake_metrics(pid) for nid, pid in NODES.items()}
    rows = s.handshake(ScriptedGrid(answers), ConfigRecord({}))
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"] and not s.excluded
