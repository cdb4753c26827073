"""The round ledger: what the server saw of every round and every client, typed.

Both server paths fill it (the Message API strategy,
:class:`~hybnn.federated.encoded_strategy.EncodedStrategy`, and secure aggregation's legacy
FedAvg, :class:`~hybnn.federated.secagg.SecAggFedAvg`), and :meth:`Ledger.rows` turns it into
the ``rounds`` of federation.json: per round the global metrics, byte sums and one row per
client that was asked to train or to evaluate. A value never measured stays ``None`` and is
left out of the JSON row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Stage = Literal["train", "eval"]
# What a client's reply can report beside its update (the ledger keeps each as a float).
TRAIN_METRICS = ("train-loss", "train-acc", "local-loss", "local-acc")


@dataclass
class ClientRow:
    """One client in one round: sampled for which stage, what it sent, and how it ended.

    A status is ``not sampled``, ``ok``, ``error`` (its ClientApp failed), ``rejected`` (its
    reply failed validation) or ``missing`` (no reply within the round's timeout)."""

    node_id: int
    partition: int | None
    status: str = "not sampled"
    status_eval: str = "not sampled"
    reason: str | None = None
    reason_eval: str | None = None
    train_sampled: bool = False
    eval_sampled: bool = False
    train_bytes_down: int | None = None
    train_bytes_up: int | None = None
    eval_bytes_down: int | None = None
    eval_bytes_up: int | None = None
    num_examples: int | None = None
    update_norm: float | None = None
    global_acc_local: float | None = None  # the global model on the client's own test data
    metrics: dict[str, float | None] = field(default_factory=dict)  # TRAIN_METRICS, as sent

    def sampled(self, stage: Stage) -> None:
        """Asked to do ``stage`` (its status stays as it is until the reply or a failure)."""
        if stage == "train":
            self.train_sampled = True
        else:
            self.eval_sampled = True

    def status_of(self, stage: Stage) -> str:
        return self.status if stage == "train" else self.status_eval

    def set(self, stage: Stage, status: str, reason: str | None = None) -> None:
        """``stage`` is ``ok``, or ended ``error``, ``rejected`` or ``missing`` (``reason``)."""
        if stage == "train":
            self.status, self.reason = status, reason
        else:
            self.status_eval, self.reason_eval = status, reason

    def count(self, stage: Stage, direction: Literal["down", "up"], size: int,
              add: bool = False) -> None:
        """Serialized bytes of a message to (``down``) or from (``up``) the client; ``add``
        for protocols that send several messages per stage (SecAgg+)."""
        name = f"{stage}_bytes_{direction}"
        before = getattr(self, name) or 0
        setattr(self, name, before + size if add else size)

    def trained(self, metrics: dict[str, Any], num_examples: int) -> None:
        """A valid training reply's metrics and sample count."""
        self.metrics = {k.replace("-", "_"): _float(metrics.get(k)) for k in TRAIN_METRICS}
        self.num_examples = num_examples

    def to_json(self) -> dict[str, Any]:
        row = {"node_id": self.node_id, "partition": self.partition, "status": self.status,
               "status_eval": self.status_eval}
        optional = {"reason": self.reason, "reason_eval": self.reason_eval,
                    "train_bytes_down": self.train_bytes_down,
                    "train_bytes_up": self.train_bytes_up,
                    "eval_bytes_down": self.eval_bytes_down, "eval_bytes_up": self.eval_bytes_up,
                    "num_examples": self.num_examples, "update_norm": self.update_norm,
                    "global_acc_local": self.global_acc_local, **self.metrics}
        return {**row, **{k: v for k, v in optional.items() if v is not None}}


@dataclass
class RoundEntry:
    """One round: its clients, and what came of the aggregation."""

    round: int
    clients: dict[int, ClientRow] = field(default_factory=dict)
    started: float | None = None  # time.perf_counter() when training was configured
    train_seconds: float | None = None
    valid_updates: int = 0
    aggregated: bool = False
    reason: str | None = None  # why the round's aggregate was not applied
    clients_global_acc: float | None = None  # test-size-weighted, from the clients
    clipping_norm: float | None = None  # differential privacy's bound this round
    epsilon: float | None = None  # privacy spent so far
    delta: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def finish_training(self, valid_updates: int) -> None:
        self.valid_updates = valid_updates
        self.train_seconds = time.perf_counter() - (self.started or time.perf_counter())

    def sampled(self, stage: Stage) -> Iterator[ClientRow]:
        return (c for c in self.clients.values()
                if (c.train_sampled if stage == "train" else c.eval_sampled))

    def to_json(self, metrics: dict[str, float | None]) -> dict[str, Any]:
        clients = sorted(self.clients.values(),
                         key=lambda c: (c.partition is None, c.partition or 0, c.node_id))
        return {
            "round": self.round,
            **metrics,
            "bytes_down": sum(c.train_bytes_down or 0 for c in clients),
            "bytes_up": sum(c.train_bytes_up or 0 for c in clients),
            "eval_bytes_down": sum(c.eval_bytes_down or 0 for c in clients),
            "eval_bytes_up": sum(c.eval_bytes_up or 0 for c in clients),
            "sampled": sum(1 for c in clients if c.train_sampled),
            "valid_updates": self.valid_updates,
            "aggregated": self.aggregated,
            **({"reason": self.reason} if self.reason is not None else {}),
            "clients_global_acc": self.clients_global_acc,
            "clipping_norm": self.clipping_norm,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "seconds": self.train_seconds,
            "clients": [c.to_json() for c in clients if c.train_sampled or c.eval_sampled],
        }


class Ledger:
    """Every round the server ran, by round number. ``partition_of(node_id)`` names a node's
    partition (known from its handshake, or None) when its row is first written."""

    def __init__(self, partition_of: Callable[[int], int | None]) -> None:
        self.partition_of = partition_of
        self.rounds: dict[int, RoundEntry] = {}

    def __getitem__(self, server_round: int) -> RoundEntry:
        return self.round(server_round)

    def round(self, server_round: int) -> RoundEntry:
        return self.rounds.setdefault(server_round, RoundEntry(server_round))

    def client(self, server_round: int, node_id: int) -> ClientRow:
        entry = self.round(server_round)
        if node_id not in entry.clients:
            entry.clients[node_id] = ClientRow(node_id, self.partition_of(node_id))
        return entry.clients[node_id]

    def rows(self, metrics: Callable[[int], dict[str, float | None]]) -> list[dict[str, Any]]:
        """The ledger as federation.json's ``rounds``; ``metrics(round)`` adds the global
        model's scores."""
        return [self.rounds[r].to_json(metrics(r)) for r in sorted(self.rounds)]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
