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
norm's running statistics. With ``--encoding fp32`` they travel as float32; with ``1bit`` or
``xor`` as the 1bit encoding sends weights, each tensor's signs packed and its mean
magnitude (``binary``), both ways: the server compresses all of ``c`` each round, a client
its ``Δc_i`` plus what its earlier compressions left out (error feedback), so the server's
sum of them does not drift. A reply whose ``Δc_i`` does not fit the model or is not finite
is left out of ``c``'s step (logged); its model update is the wrapper's to validate.
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
RESIDUAL = "hybnn-scaffold-residual"  # ... and what its 1bit Δc_i have left out so far
SCALE = "#scale"  # binary: the key of a tensor's mean magnitude, after the tensor's name
DELTA_LIMIT = 1e6  # the largest |Δc_i| accepted (a gradient of a clipped, normalized model)


def to_arrays(values: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in values.items()})


def from_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def pack_signs(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Binary control variates: per tensor its signs (packbits order, sign(0) = +1) and its
    mean magnitude, ``name#scale``."""
    out: dict[str, np.ndarray] = {}
    for k, v in values.items():
        v = np.asarray(v, np.float32)
        out[k] = np.packbits(v.ravel() >= 0)
        out[k + SCALE] = np.array([np.abs(v).mean() if v.size else 0.0], np.float32)
    return out


def unpack_signs(packed: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]
                 ) -> dict[str, np.ndarray]:
    """The tensors of :func:`pack_signs` (``scale · sign``), for the names in ``shapes``;
    ValueError for a name, length or type that does not fit."""
    names = {k for k in packed if not k.endswith(SCALE)}
    if names != {k[:-len(SCALE)] for k in packed if k.endswith(SCALE)} or not names <= set(shapes):
        raise ValueError("its tensors are not the model's, each as signs and a scale")
    out = {}
    for k in names:
        n, bits, scale = int(np.prod(shapes[k])), packed[k], packed[k + SCALE]
        if bits.dtype != np.uint8 or bits.shape != ((n + 7) // 8,) or scale.shape != (1,):
            raise ValueError(f"{k}: {bits.dtype} {bits.shape} and a scale of shape "
                             f"{scale.shape} do not pack {n} values")
        signs = np.unpackbits(bits, count=n).astype(np.float32) * 2.0 - 1.0
        out[k] = (signs * np.float32(scale[0])).reshape(shapes[k])
    return out


class Scaffold(FedAvg):
    """FedAvg with SCAFFOLD's server control variate; ``num_clients``: N of the step;
    ``binary``: control variates travel as packed signs and a scale per tensor."""

    def __init__(self, *, num_clients: int, binary: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_clients = int(num_clients)
        self.binary = bool(binary)
        self.control: dict[str, np.ndarray] = {}  # c; a missing key is zero
        self.shapes: dict[str, tuple[int, ...]] = {}  # of the global model sent this round

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.shapes = {k: tuple(v.shape) for k, v in arrays.items()}
        messages = list(super().configure_train(server_round, arrays, config, grid))
        down = to_arrays(pack_signs(self.control) if self.binary else self.control)
        for msg in messages:
            msg.content[CONTROL] = down
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
        try:
            raw = {k: v.numpy() for k, v in (record or {}).items()}
            if self.binary:
                raw = unpack_signs(raw, self.shapes)
        except (ValueError, TypeError, EOFError, OSError) as exc:
            problem, raw = f"unreadable ({exc})", {}
        for k, v in raw.items():
            delta[k] = np.asarray(v, dtype=np.float64)
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
    """SCAFFOLD's client side for one round: ``server`` (c; with ``binary``, as
    :func:`pack_signs` packs it) and ``own`` (c_i, empty on a client's first round) by
    parameter name, a missing name being zero."""

    def __init__(self, server: Mapping[str, np.ndarray], own: Mapping[str, np.ndarray],
                 binary: bool = False) -> None:
        self.server, self.own, self.binary = dict(server), dict(own), binary
        self.params: dict[str, nn.Parameter] = {}
        self.correction: dict[str, torch.Tensor] = {}
        self.grad_sum: dict[str, torch.Tensor] = {}
        self.steps = 0

    def on_train_begin(self, model: nn.Module) -> None:
        self.params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        if self.binary:
            self.server = unpack_signs(self.server, self.shapes())
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

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(p.shape) for k, p in self.params.items()}

    def updated(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(the new c_i, Δc_i = new c_i - old c_i) after the round's training."""
        new = {k: (g / max(self.steps, 1)).cpu().numpy().astype(np.float32)
               for k, g in self.grad_sum.items()}
        delta = {k: v - self.own.get(k, np.zeros_like(v)) for k, v in new.items()}
        return new, delta


def client_control(content: RecordDict, state: RecordDict, binary: bool = False
                   ) -> ControlVariates | None:
    """A training message's SCAFFOLD callback (None when the server runs no SCAFFOLD), with
    this node's own control variate from its state."""
    record = content.array_records.get(CONTROL)
    if record is None:
        return None
    own = from_arrays(state.array_records[STATE]) if STATE in state.array_records else {}
    return ControlVariates(from_arrays(record), own, binary)


def finish_control(control: ControlVariates, state: RecordDict) -> ArrayRecord:
    """Keep the new c_i in the node's ``state``; the reply's record of Δc_i (binary: of
    Δc_i plus the residual of earlier rounds, the new residual kept)."""
    new, delta = control.updated()
    state[STATE] = to_arrays(new)
    if not control.binary:
        return to_arrays(delta)
    left = from_arrays(state.array_records[RESIDUAL]) if RESIDUAL in state.array_records else {}
    due = {k: d + left.get(k, np.zeros_like(d)) for k, d in delta.items()}
    packed = pack_signs(due)
    sent = unpack_signs(packed, control.shapes())
    state[RESIDUAL] = to_arrays({k: due[k] - sent[k] for k in due})
    return to_arrays(packed)
