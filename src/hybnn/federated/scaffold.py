"""SCAFFOLD (Karimireddy et al., ICML 2020) on Flower's Message API: control variates that
correct each client's drift towards its own data.

Flower 1.41 ships no SCAFFOLD, so both halves are here:

- the server (:class:`Scaffold`, ``--strategy scaffold``) is FedAvg plus a server control
  variate ``c``, sent with every training message in the ArrayRecord ``scaffold``; each
  reply carries the client's change ``Δc_i`` in the same record, and after a round
  ``c ← c + (1/N)·Σ_i Δc_i`` over the valid replies, N the number of clients (the paper's
  server step with a global learning rate of 1);
- the client (:class:`ControlVariates`) adds ``c - c_i`` to every gradient of its local
  training, then sets its own control variate ``c_i`` to the mean gradient of the steps it
  just took (the paper's option I, the local gradient, measured along the round instead of
  in one more pass at the global model: the trainer's Adam steps are no SGD steps for
  option II's ``(x - y_i)/(K·lr)``). It keeps ``c_i`` in its node state between rounds.

Control variates cover the trainable parameters (latent weights included), not the batch
norm's running statistics; they travel as float32 both ways, whatever ``--encoding`` the
model takes. A reply whose ``Δc_i`` does not match the model or is not finite is left out
of ``c``'s step (logged); its model update is the wrapper's to validate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log
from torch import nn

from hybnn.hooks import Callback

CONTROL = "scaffold"  # the record of a message that holds a control variate
STATE = "hybnn-scaffold"  # a client's node state: its own control variate c_i
DELTA_LIMIT = 1e6  # the largest |Δc_i| accepted (a gradient of a clipped, normalized model)


def to_arrays(values: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float32))
                        for k, v in values.items()})


def from_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


class Scaffold(FedAvg):
    """FedAvg with SCAFFOLD's server control variate; ``num_clients``: N of the step."""

    def __init__(self, *, num_clients: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_clients = int(num_clients)
        self.control: dict[str, np.ndarray] = {}  # c; a missing key is zero
        self.shapes: dict[str, tuple[int, ...]] = {}  # of the global model sent this round

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.shapes = {k: tuple(v.shape) for k, v in arrays.items()}
        messages = list(super().configure_train(server_round, arrays, config, grid))
        for msg in messages:
            msg.content[CONTROL] = to_arrays(self.control)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept, deltas = [], []
        for reply in replies:
            if not reply.has_error():
                delta = self.checked_delta(reply.content, int(reply.metadata.src_node_id))
                if delta is not None:
                    deltas.append(delta)
                # FedAvg wants exactly one ArrayRecord: the model's
                reply.content = RecordDict({k: v for k, v in reply.content.items()
                                            if k != CONTROL})
            kept.append(reply)
        arrays, metrics = super().aggregate_train(server_round, kept)
        if arrays is not None:
            for delta in deltas:
                for k, d in delta.items():
                    self.control[k] = (self.control.get(k, np.zeros_like(d))
                                       + d / self.num_clients).astype(np.float32)
        return arrays, metrics

    def checked_delta(self, content: RecordDict, node_id: int) -> dict[str, np.ndarray] | None:
        """The reply's ``Δc_i``, or None (logged) if it is missing or does not fit."""
        record = content.array_records.get(CONTROL)
        problem = "no control variate in the reply" if record is None else ""
        delta: dict[str, np.ndarray] = {}
        for k, v in (record or {}).items():
            try:
                delta[k] = np.asarray(v.numpy(), dtype=np.float64)
            except (ValueError, TypeError, EOFError, OSError) as exc:
                problem = f"{k}: unreadable ({exc})"
                break
            if self.shapes.get(k) != delta[k].shape:
                problem = f"{k}: shape {delta[k].shape} is no parameter of the model"
            elif not np.isfinite(delta[k]).all() or np.abs(delta[k]).max(initial=0) > DELTA_LIMIT:
                problem = f"{k}: values not finite or beyond {DELTA_LIMIT:g}"
            if problem:
                break
        if problem:
            log(WARNING, "SCAFFOLD: node %d's control variate is left out: %s", node_id, problem)
            return None
        return delta


class ControlVariates(Callback):
    """SCAFFOLD's client side for one round: ``server`` (c) and ``own`` (c_i, empty on a
    client's first round) by parameter name, a missing name being zero."""

    def __init__(self, server: Mapping[str, np.ndarray], own: Mapping[str, np.ndarray]) -> None:
        self.server, self.own = dict(server), dict(own)
        self.params: dict[str, nn.Parameter] = {}
        self.correction: dict[str, torch.Tensor] = {}
        self.grad_sum: dict[str, torch.Tensor] = {}
        self.steps = 0

    def on_train_begin(self, model: nn.Module) -> None:
        self.params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        for k, p in self.params.items():
            c = self.server.get(k, np.zeros(tuple(p.shape), np.float32))
            ci = self.own.get(k, np.zeros(tuple(p.shape), np.float32))
            self.correction[k] = torch.as_tensor(c - ci, dtype=p.dtype, device=p.device)
            self.grad_sum[k] = torch.zeros_like(p)
        self.steps = 0

    def on_after_backward(self, model: nn.Module) -> None:
        with torch.no_grad():
            for k, p in self.params.items():
                if p.grad is not None:
                    self.grad_sum[k] += p.grad
                    p.grad += self.correction[k]
        self.steps += 1

    def updated(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(the new c_i, Δc_i = new c_i - old c_i) after the round's training."""
        new = {k: (g / max(self.steps, 1)).cpu().numpy().astype(np.float32)
               for k, g in self.grad_sum.items()}
        delta = {k: v - self.own.get(k, np.zeros_like(v)) for k, v in new.items()}
        return new, delta


def client_control(content: RecordDict, state: RecordDict) -> ControlVariates | None:
    """A training message's SCAFFOLD callback (None when the server runs no SCAFFOLD), with
    this node's own control variate from its state."""
    record = content.array_records.get(CONTROL)
    if record is None:
        return None
    own = from_arrays(state.array_records[STATE]) if STATE in state.array_records else {}
    return ControlVariates(from_arrays(record), own)


def finish_control(control: ControlVariates, state: RecordDict) -> ArrayRecord:
    """Keep the new c_i in the node's ``state``; the reply's record of Δc_i."""
    new, delta = control.updated()
    state[STATE] = to_arrays(new)
    return to_arrays(delta)
