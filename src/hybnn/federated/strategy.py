"""A Flower strategy wrapper: update encoding, reply validation and the round ledger.

:class:`EncodedStrategy` wraps FedAvg, FedMedian or FedTrimmedAvg (they only aggregate):

- downlink: the global float32 model is encoded (``fp32`` or ``1bit``) before it is sent;
- sampling: seeded, and the wait for ``min_clients`` connected nodes is bounded
  (``node_wait``) — Flower's own sampler waits forever;
- uplink: every reply is decoded and validated (names, shapes, dtypes, finite values,
  a positive sample count); an invalid one is logged and dropped, never averaged; a round
  with fewer than ``min_clients`` valid updates keeps the previous global model;
- ledger: per round and per client, the serialized bytes down and up, the status
  (``ok``, ``error`` with its reason, ``rejected`` with its reason, ``missing`` when no
  reply came before the round timeout) and the client's metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Strategy
from flwr.supercore import log
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from hybnn.errors import HybnnError
from hybnn.federated.config import FedConfig
from hybnn.federated.encoding import Layout, UpdateError, decode, encode

ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"
TRAIN_METRICS = ("train-loss", "train-acc", "local-loss", "local-acc")


class FederationError(HybnnError):
    """The federation cannot go on (e.g. too few nodes connected in time)."""


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def serialized_bytes(content: RecordDict) -> int:
    """Bytes of a message's content as Flower ships it: every object of its tree, deflated
    (records, array metadata and array chunks), each counted once."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())


def inner_strategy(cfg: FedConfig) -> FedAvg:
    """The aggregation rule; sampling and waiting are done by :class:`EncodedStrategy`."""
    kwargs: dict[str, Any] = {"fraction_train": cfg.fraction, "min_train_nodes": 1,
                              "min_evaluate_nodes": 1, "min_available_nodes": 1}
    if cfg.strategy == "fedavg":
        return FedAvg(**kwargs)
    if cfg.strategy == "fedmedian":
        return FedMedian(**kwargs)
    return FedTrimmedAvg(beta=cfg.trim_beta, **kwargs)


class EncodedStrategy(Strategy):
    def __init__(self, cfg: FedConfig, layout: Layout, inner: FedAvg | None = None) -> None:
        self.cfg = cfg
        self.layout = layout
        self.inner = inner or inner_strategy(cfg)
        self.rounds: dict[int, dict[str, Any]] = {}
        self.partition_of: dict[int, int] = {}
        self.excluded: set[int] = set()  # nodes that refused the handshake
        self.grid: Grid | None = None

    # -- sampling ----------------------------------------------------------------------
    def wait_for_nodes(self, what: str) -> list[int]:
        """Connected nodes not excluded, once there are ``min_clients``; bounded wait."""
        deadline = time.monotonic() + self.cfg.node_wait
        while len(nodes := sorted(set(self.grid_nodes()) - self.excluded)) < self.cfg.min_clients:
            if time.monotonic() > deadline:
                raise FederationError(
                    f"{what}: {len(nodes)} usable node(s) after {self.cfg.node_wait:g} s "
                    f"({len(self.excluded)} excluded), need --min-clients {self.cfg.min_clients}")
            log(INFO, "waiting for nodes: %d usable, need %d", len(nodes), self.cfg.min_clients)
            time.sleep(1.0)
        return nodes

    def grid_nodes(self) -> list[int]:
        return [int(n) for n in self.grid.get_node_ids()] if self.grid is not None else []

    def _sample(self, grid: Grid, server_round: int, fraction: float) -> list[int]:
        self.grid = grid
        nodes = self.wait_for_nodes(f"round {server_round}")
        k = min(len(nodes), max(int(len(nodes) * fraction), self.cfg.min_clients))
        rng = np.random.default_rng([self.cfg.seed, server_round])
        # Index the ids: they are uint64 and would lose precision in a numpy array.
        return sorted(nodes[int(i)] for i in rng.choice(len(nodes), size=k, replace=False))

    def handshake(self, grid: Grid, config: ConfigRecord) -> list[dict[str, Any]]:
        """Ask every connected node, before any training, to check its encoder against the
        federation's fingerprint and to prepare its partition. Nodes that refuse are
        excluded from sampling; the wait is bounded by ``node_wait``. (In simulation this
        also starts the workers, so round timeouts do not have to cover their start-up.)"""
        self.grid = grid
        nodes = self.wait_for_nodes("handshake")
        messages = [Message(content=RecordDict({CONFIG: ConfigRecord(dict(config))}),
                            message_type=MessageType.QUERY, dst_node_id=nid) for nid in nodes]
        replies = {int(r.metadata.src_node_id): r
                   for r in grid.send_and_receive(messages, timeout=self.cfg.node_wait)}
        rows = []
        for nid in nodes:
            row: dict[str, Any] = {"node_id": nid, "status": "missing"}
            reply = replies.get(nid)
            if reply is not None and reply.has_error():
                row.update(status="refused", reason=reply.error.reason)
                self.excluded.add(nid)
                log(WARNING, "handshake: node %d refused and is excluded: %s", nid,
                    reply.error.reason)
            elif reply is not None:
                m = next(iter(reply.content.metric_records.values()), MetricRecord())
                row.update(status="ok", **{k.replace("-", "_"): int(v) for k, v in m.items()})
                self.partition_of[nid] = row.get("partition_id", -1)
            rows.append(row)
        ok = sum(r["status"] == "ok" for r in rows)
        log(INFO, "handshake: %d of %d node(s) ready, %d refused", ok, len(rows),
            len(self.excluded))
        return rows

    def _messages(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                  grid: Grid, kind: str, fraction: float) -> list[Message]:
        if fraction <= 0:
            return []
        node_ids = self._sample(grid, server_round, fraction)
        config = ConfigRecord(dict(config))
        config["server-round"] = server_round
        payload = to_record(encode(from_record(arrays), self.layout, self.cfg.encoding))
        content = RecordDict({ARRAYS: payload, CONFIG: config})
        size = serialized_bytes(content)
        entry = self._round(server_round)
        for nid in node_ids:
            client = entry["clients"].setdefault(nid, self._blank(nid))
            client[f"{kind}_bytes_down"] = size
            client[f"{kind}_sampled"] = True
        log(INFO, "%s round %d: %d node(s), %d B down each (%s)", kind, server_round,
            len(node_ids), size, self.cfg.encoding)
        mtype = MessageType.TRAIN if kind == "train" else MessageType.EVALUATE
        return [Message(content=content, message_type=mtype, dst_node_id=nid)
                for nid in node_ids]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._round(server_round)["t_start"] = time.perf_counter()
        return self._messages(server_round, arrays, config, grid, "train", self.cfg.fraction)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self._messages(server_round, arrays, config, grid, "eval",
                              self.cfg.fraction_evaluate)

    # -- replies -----------------------------------------------------------------------
    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        entry = self._round(server_round)
        passed: list[Message] = []
        for reply in replies:
            client = self._client(entry, reply, "train")
            if client["status"] != "ok":
                continue
            try:
                state, metrics = self._check_train_reply(reply)
            except UpdateError as exc:
                client.update(status="rejected", reason=str(exc))
                log(WARNING, "round %d: rejected the update of node %d (partition %s): %s",
                    server_round, client["node_id"], client["partition"], exc)
                continue
            client.update({k.replace("-", "_"): metrics.get(k) for k in TRAIN_METRICS})
            client["num_examples"] = int(metrics["num-examples"])
            reply.content = RecordDict({ARRAYS: to_record(state), METRICS: MetricRecord(
                {"num-examples": int(metrics["num-examples"])})})
            passed.append(reply)
        self._mark_missing(entry, "train")
        entry["valid_updates"] = len(passed)
        entry["train_seconds"] = time.perf_counter() - entry.get("t_start", time.perf_counter())
        if len(passed) < self.cfg.min_clients:
            entry["aggregated"] = False
            log(WARNING, "round %d: %d valid update(s), need %d: global model unchanged",
                server_round, len(passed), self.cfg.min_clients)
            return None, None
        entry["aggregated"] = True
        arrays, _ = self.inner.aggregate_train(server_round, passed)
        return arrays, MetricRecord({"valid-updates": len(passed)})

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        entry = self._round(server_round)
        total, weighted = 0, 0.0
        for reply in replies:
            client = self._client(entry, reply, "eval")
            if client["status_eval"] != "ok":
                continue
            m = next(iter(reply.content.metric_records.values()), MetricRecord())
            n, acc = int(m.get("num-examples", 0)), float(m.get("acc", float("nan")))
            client["global_acc_local"] = acc
            if n > 0 and np.isfinite(acc):
                total, weighted = total + n, weighted + n * acc
        self._mark_missing(entry, "eval")
        if total == 0:
            return None
        entry["clients_global_acc"] = weighted / total
        return MetricRecord({"acc": weighted / total})

    def _check_train_reply(self, reply: Message) -> tuple[dict[str, np.ndarray], dict]:
        content = reply.content
        if len(content.array_records) != 1 or len(content.metric_records) != 1:
            raise UpdateError("a reply needs exactly one ArrayRecord and one MetricRecord")
        arrays = from_record(next(iter(content.array_records.values())))
        metrics = dict(next(iter(content.metric_records.values())))
        n = metrics.get("num-examples")
        if not isinstance(n, int | float) or not np.isfinite(n) or n <= 0:
            raise UpdateError(f"num-examples must be a positive number, got {n!r}")
        return decode(arrays, self.layout, self.cfg.encoding), metrics

    # -- ledger ------------------------------------------------------------------------
    def _round(self, server_round: int) -> dict[str, Any]:
        return self.rounds.setdefault(server_round, {"round": server_round, "clients": {}})

    def _blank(self, node_id: int) -> dict[str, Any]:
        return {"node_id": node_id, "partition": self.partition_of.get(node_id),
                "status": "not sampled", "status_eval": "not sampled"}

    def _client(self, entry: dict[str, Any], reply: Message, kind: str) -> dict[str, Any]:
        nid = int(reply.metadata.src_node_id)
        client = entry["clients"].setdefault(nid, self._blank(nid))
        status = "status" if kind == "train" else "status_eval"
        if reply.has_error():
            client[status] = "error"
            client[f"reason{'' if kind == 'train' else '_eval'}"] = reply.error.reason
            log(WARNING, "round %d: node %d (partition %s) failed in %s: %s", entry["round"],
                nid, client["partition"], kind, reply.error.reason)
            return client
        client[status] = "ok"
        client[f"{kind}_bytes_up"] = serialized_bytes(reply.content)
        m = next(iter(reply.content.metric_records.values()), None)
        pid = m.get("partition-id") if m is not None else None
        if isinstance(pid, int | float) and np.isfinite(pid):
            self.partition_of[nid] = client["partition"] = int(pid)
        return client

    def _mark_missing(self, entry: dict[str, Any], kind: str) -> None:
        status = "status" if kind == "train" else "status_eval"
        for client in entry["clients"].values():
            if client.get(f"{kind}_sampled") and client[status] == "not sampled":
                client[status] = "missing"
                log(WARNING, "round %d: no %s reply from node %d (partition %s) within "
                    "%g s", entry["round"], kind, client["node_id"], client["partition"],
                    self.cfg.round_timeout)

    def summary(self) -> None:
        log(INFO, "\t├──> hybnn: encoding %s, min clients %d, node wait %g s, seeded sampling",
            self.cfg.encoding, self.cfg.min_clients, self.cfg.node_wait)
        self.inner.summary()


def round_log(strategy: EncodedStrategy, evaluate: Callable[[int], dict[str, float]]
              ) -> list[dict[str, Any]]:
    """The ledger as JSON rows: per round the global metrics, byte sums and every client."""
    rows = []
    for r in sorted(strategy.rounds):
        e = strategy.rounds[r]
        clients = sorted(e["clients"].values(), key=lambda c: (c["partition"] is None,
                                                                c["partition"], c["node_id"]))
        rows.append({
            "round": r,
            **evaluate(r),
            "bytes_down": sum(c.get("train_bytes_down", 0) for c in clients),
            "bytes_up": sum(c.get("train_bytes_up", 0) for c in clients),
            "eval_bytes_down": sum(c.get("eval_bytes_down", 0) for c in clients),
            "eval_bytes_up": sum(c.get("eval_bytes_up", 0) for c in clients),
            "sampled": sum(1 for c in clients if c.get("train_sampled")),
            "valid_updates": e.get("valid_updates", 0),
            "aggregated": e.get("aggregated", False),
            "clients_global_acc": e.get("clients_global_acc"),
            "seconds": e.get("train_seconds"),
            "clients": [{k: v for k, v in c.items() if k not in ("train_sampled",
                                                                   "eval_sampled")}
                        for c in clients if c.get("train_sampled") or c.get("eval_sampled")],
        })
    return rows
