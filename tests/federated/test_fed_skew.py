"""Label skew: FedRS and FedLC adjust only the logits a client's loss sees while it trains;
SCAFFOLD's control variates correct every local gradient and travel in the messages."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the fed extra (flwr) is not installed")

import torch
import torch.nn.functional as F
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from local_runs import fed_config

from hybnn.errors import DataError
from hybnn.federated.config import FedConfig
from hybnn.federated.local_grid import run_local
from hybnn.federated.scaffold import CONTROL, STATE, ControlVariates, Scaffold
from hybnn.federated.skew import SkewLoss, calibrated_logits, restricted_logits, skew_callbacks

# -- FedRS and FedLC: the math ------------------------------------------------------------


def test_fedrs_scales_the_logits_of_absent_classes_by_alpha():
    logits = torch.tensor([[1.0, 2.0, 3.0], [-4.0, 6.0, 0.5]])
    present = torch.tensor([True, False, True])
    out = restricted_logits(logits, present, 0.5)
    assert torch.equal(out, torch.tensor([[1.0, 1.0, 3.0], [-4.0, 3.0, 0.5]]))
    assert torch.equal(restricted_logits(logits, present, 1.0), logits)  # plain softmax


def test_fedlc_lowers_each_logit_by_tau_over_the_fourth_root_of_its_count():
    logits = torch.zeros(1, 3)
    out = calibrated_logits(logits, torch.tensor([16, 1, 0]), tau=2.0)
    # 16^(-1/4) = 1/2, 1^(-1/4) = 1, an absent class counts 1e-8: (1e-8)^(-1/4) = 100
    assert out[0].tolist() == pytest.approx([-1.0, -2.0, -200.0])


def test_fedlc_takes_an_absent_class_out_of_the_softmax():
    """Its logit gets (almost) no gradient: a client no longer pushes down classes it lacks."""
    logits = torch.zeros(4, 3, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    F.cross_entropy(calibrated_logits(logits, torch.bincount(y, minlength=3), 1.0), y).backward()
    assert logits.grad[:, 2].abs().max() < 1e-30
    plain = torch.zeros(4, 3, requires_grad=True)
    F.cross_entropy(plain, y).backward()
    assert plain.grad[:, 2].min() > 0.05  # plain cross-entropy pushes it down


def test_skew_loss_acts_in_training_mode_only():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    plain = model(x).detach()
    loss = SkewLoss("fedrs", torch.tensor([0, 0, 2]), alpha=0.0)
    loss.on_train_begin(model)
    model.train()
    assert torch.equal(model(x).detach(), plain * torch.tensor([1.0, 0.0, 1.0]))
    model.eval()
    assert torch.equal(model(x).detach(), plain)  # evaluation and the upload are untouched
    loss.on_train_begin(model)  # a second begin replaces the hook, does not stack it
    model.train()
    assert torch.equal(model(x).detach(), plain * torch.tensor([1.0, 0.0, 1.0]))


def test_the_skew_loss_setting_picks_the_callback():
    y = torch.tensor([0, 1])
    assert skew_callbacks(FedConfig(), y) == ()
    (cb,) = skew_callbacks(FedConfig(skew_loss="fedlc", calibration_tau=0.5), y)
    assert isinstance(cb, SkewLoss) and cb.kind == "fedlc" and cb.tau == 0.5
    with pytest.raises(DataError):
        FedConfig(skew_loss="fedfoo")
    with pytest.raises(DataError, match="restricted"):
        FedConfig(restricted_alpha=1.5)


# -- SCAFFOLD: the math -------------------------------------------------------------------


def test_scaffold_client_corrects_each_gradient_by_c_minus_ci_and_keeps_the_mean_gradient():
    model = torch.nn.Linear(2, 1, bias=False)
    c = {"weight": np.array([[1.0, 0.0]], np.float32)}
    ci = {"weight": np.array([[0.0, 3.0]], np.float32)}
    control = ControlVariates(c, ci)
    control.on_train_begin(model)
    grads = []
    for x in ([1.0, 2.0], [3.0, 4.0]):
        model.zero_grad()
        model(torch.tensor([x])).sum().backward()
        grads.append(model.weight.grad.clone())
        control.on_after_backward(model)
        assert torch.equal(model.weight.grad, grads[-1] + torch.tensor([[1.0, -3.0]]))
    new, delta = control.updated()
    assert new["weight"].tolist() == [[2.0, 3.0]]  # the mean raw gradient (option I)
    assert delta["weight"].tolist() == [[2.0, 0.0]]  # new c_i - old c_i


def _record(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, np.float32)) for k, v in arrays.items()})


def _reply(nid: int, w: float, n: int, delta: ArrayRecord | None) -> Message:
    sent = Message(RecordDict({"config": ConfigRecord({})}), message_type="train",
                   dst_node_id=nid)
    content = RecordDict({"arrays": _record(w=np.full(2, w)),
                          "metrics": MetricRecord({"num-examples": n})})
    if delta is not None:
        content[CONTROL] = delta
    return Message(content, reply_to=sent)


def test_scaffold_server_steps_c_by_the_mean_delta_over_all_clients(task_identity):
    """c <- c + (1/N)·sum of the valid Δc_i; the model is FedAvg's; a Δc_i that does not fit
    the model or is not finite is left out of c."""
    strategy = Scaffold(num_clients=4, fraction_train=1.0, min_train_nodes=1,
                        min_available_nodes=1)
    strategy.shapes = {"w": (2,)}
    replies = [_reply(1, 1.0, 1, _record(w=[4.0, 8.0])),
               _reply(2, 4.0, 3, _record(w=[4.0, 0.0])),
               _reply(3, 0.0, 1, _record(w=[np.nan, 0.0])),  # not finite
               _reply(4, 0.0, 1, _record(w=[1.0, 2.0, 3.0]))]  # wrong shape
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays["w"].numpy().tolist() == pytest.approx([13 / 6] * 2)  # weighted 1:3:1:1
    assert strategy.control["w"].tolist() == pytest.approx([2.0, 2.0])  # (4+4)/4, (8+0)/4


def test_scaffold_sends_c_with_every_training_message(task_identity):
    from hybnn.federated.flower_strategies import SampledGrid

    strategy = Scaffold(num_clients=2, fraction_train=1.0, min_train_nodes=1,
                        min_available_nodes=1)
    strategy.control = {"w": np.array([0.5, -0.5], np.float32)}
    messages = list(strategy.configure_train(1, _record(w=np.zeros(2)), ConfigRecord({}),
                                             SampledGrid(None, [7, 8])))
    assert len(messages) == 2 and strategy.shapes == {"w": (2,)}
    for m in messages:
        assert m.content[CONTROL]["w"].numpy().tolist() == [0.5, -0.5]


# -- short real federations (the digits, 10 classes, 3 clients of 4 classes each) ----------


def _skewed(encoder_dir, **kw):
    return fed_config(encoder_dir, task="all", partition="classes", classes_per_client=4,
                      rounds=5, local_epochs=2, **kw)


@pytest.mark.parametrize("skew_loss", ["fedrs", "fedlc"])
def test_a_skew_loss_federation_learns(encoder_dir, skew_loss):
    log, _ = run_local(_skewed(encoder_dir, skew_loss=skew_loss, strategy="fedavg"))
    assert log["status"] == "completed", log.get("error")
    assert all(r["aggregated"] and r["valid_updates"] == 3 for r in log["rounds"])
    # 4 of the 10 digits per client, a one-epoch encoder: from 13 % to about 40 % here
    assert log["rounds"][-1]["global_acc"] > log["initial_acc"] + 0.15


def test_a_scaffold_federation_carries_control_variates_both_ways(encoder_dir):
    seen = []

    def spy(msg, context, call_next):
        reply = call_next(msg, context)
        if CONTROL in msg.content.array_records:
            seen.append((dict(msg.content[CONTROL]), dict(reply.content[CONTROL]),
                         STATE in context.state.array_records))
        return reply

    log, _ = run_local(_skewed(encoder_dir, strategy="scaffold"), mods=[spy])
    assert log["status"] == "completed", log.get("error")
    assert all(r["aggregated"] and r["valid_updates"] == 3 for r in log["rounds"])
    assert log["rounds"][-1]["global_acc"] > log["initial_acc"] + 0.15
    assert len(seen) == 3 * 5  # 3 clients x 5 rounds
    assert not seen[0][0] and seen[0][1] and seen[0][2]  # round 1: c = 0, a Δc_i back
    assert seen[-1][0]  # later rounds: the server's c travels down
    assert set(seen[-1][0]) == set(seen[0][1])  # over the trainable parameters


def test_a_record_the_server_did_not_send_is_still_rejected(encoder_dir):
    """Only records named like the strategy's own go past validation to it: under FedAvg a
    reply that smuggles a 'scaffold' record is rejected like any reply of two ArrayRecords."""
    import json

    from hybnn.federated.encoded_strategy import FederationError

    def smuggle(msg, context, call_next):
        reply = call_next(msg, context)
        if msg.metadata.message_type == "train" and not reply.has_error():
            reply.content[CONTROL] = _record(w=np.ones(2))
        return reply

    sink: dict = {}
    with pytest.raises(FederationError):
        run_local(fed_config(encoder_dir, rounds=1), mods=[smuggle], sink=sink)
    assert "exactly one ArrayRecord" in json.dumps(sink["rounds"])


def test_binary_control_variates_are_signs_and_a_mean_magnitude_per_tensor():
    from hybnn.federated.scaffold import SCALE, pack_signs, unpack_signs

    values = {"w": np.array([[0.5, -1.5], [0.0, -2.0]], np.float32)}
    packed = pack_signs(values)
    assert packed["w"].dtype == np.uint8 and packed["w"].shape == (1,)  # 4 signs, one byte
    assert packed["w" + SCALE].tolist() == [1.0]  # mean |w|
    assert unpack_signs(packed, {"w": (2, 2)})["w"].tolist() == [[1, -1], [1, -1]]
    for bad in ({"w": packed["w"]}, {**packed, "v": packed["w"]},
                {"w": np.zeros(3, np.uint8), "w" + SCALE: packed["w" + SCALE]}):
        with pytest.raises(ValueError):
            unpack_signs(bad, {"w": (2, 2)})


def test_a_binary_client_sends_its_delta_plus_what_earlier_rounds_left_out():
    """Error feedback: over two rounds the server receives the sum of the client's Δc_i
    up to one round's compression error, not two."""
    from hybnn.federated.scaffold import RESIDUAL, finish_control, pack_signs, unpack_signs

    model = torch.nn.Linear(2, 1, bias=False)
    state, own, received = RecordDict(), {}, np.zeros((1, 2))
    for x in ([3.0, 1.0], [1.0, -2.0]):
        control = ControlVariates(pack_signs({}), own, binary=True)
        control.on_train_begin(model)
        model.zero_grad()
        model(torch.tensor([x])).sum().backward()
        control.on_after_backward(model)
        record = finish_control(control, state)
        received += unpack_signs({k: v.numpy() for k, v in record.items()},
                                 {"weight": (1, 2)})["weight"]
        own = {"weight": state[STATE]["weight"].numpy()}
    left = state[RESIDUAL]["weight"].numpy()
    assert np.allclose(received + left, own["weight"])  # Δc_1 + Δc_2 = the last c_i
    assert np.abs(left).max() > 0  # one round's compression error remains
