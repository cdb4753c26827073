"""A Flower strategy wrapper: update encoding, reply validation and the round ledger.

:class:`EncodedStrategy` wraps any Flower strategy of :mod:`hybnn.federated.flower_strategies`
(``--strategy``): the wrapped strategy configures each round (its config keys, its server
state) and aggregates the validated, decoded updates; around it:

- downlink: the global float32 model is encoded (``fp32``, or ``1bit`` for ``1bit`` and
  ``xor``) before it is sent; the round's global state is kept to decode ``xor`` replies;
- sampling: seeded, and the wait for ``min_clients`` connected nodes is bounded
  (``node_wait``) — Flower's own sampler waits forever; the wrapped strategy then configures
  the round for exactly the sampled nodes (:class:`~hybnn.federated.flower_strategies.SampledGrid`);
- the aggregate is projected back into the model's domain (latent weights clipped to
  [-1, 1], batch-norm variances kept positive): server optimisers such as FedAdam step
  outside it;
- handshake: each node's partition id and sample counts, validated and kept;
- uplink: every reply is decoded and validated against what the server knows
  (:mod:`hybnn.federated.validation`: layout, finite values in their domain, sample counts
  bounded by the node's handshake counts and ``max_examples``, metrics finite and apart
  from the ledger's keys); an invalid one is logged and dropped, never averaged, and never
  stops the server; a round with fewer than ``min_clients`` valid updates keeps the
  previous global model;
- differential privacy (``--dp``, :mod:`hybnn.federated.privacy`): the wrapped strategy
  is inside Flower's DP wrapper, calibrated each round to the updates it averages; it sees
  the global model and the updates in transport coordinates
  (:mod:`hybnn.federated.transport_scale`: batch-norm running statistics divided by the
  fan-in bounds), so clipping and noise act there, and its aggregate is mapped back; an
  update clipped on the client but above the norm sent is rejected; the privacy spent so
  far is written into the ledger after every round;
- ledger: per round and per client, the serialized bytes down and up, the status
  (``ok``, ``error`` with its reason, ``rejected`` with its reason, ``missing`` when no
  reply came before the round timeout) and the client's metrics; evaluation likewise
  (``status_eval``, ``reason_eval``); per client the norm of its decoded update
  (``update_norm``, in transport coordinates: what DP clips), per round the clipping norm
  and (epsilon, delta).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
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
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from hybnn.errors import HybnnError
from hybnn.federated.config import FedConfig
from hybnn.federated.encoding import Layout, UpdateError, downlink, encode
from hybnn.federated.flower_strategies import SampledGrid
from hybnn.federated.ledger import ClientRow, Ledger, RoundEntry, Stage
from hybnn.federated.privacy import (
    check_clipped,
    current_clipping_norm,
    private_strategy,
    reply_metrics,
    sent_clipping_norm,
    set_sample_size,
    spent,
    update_norm,
)
from hybnn.federated.transport_scale import scaled, unscaled
from hybnn.federated.validation import (
    check_metrics,
    check_partition,
    handshake_reply,
    project,
    sample_count,
    train_update,
)

ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"
# Strategies whose server step moves each array by a learning rate (momentum, Adam, Yogi,
# Adagrad: at most about eta a round, whatever the size of the mean update). That step is sized
# for latent binary weights in [-1, 1]; the real-valued tensors around them are not on that
# scale. Batch-norm running statistics are measured on the clients' data, on the scale of a
# binary layer's fan-in: a step of 0.1 would take dozens of rounds to reach them. Batch-norm
# weights and biases set each unit's threshold and, before the logits, each class's scale: an
# adaptive step turns a small consistent drift into about eta a round, and once a weight
# crosses zero the unit's sign flips (ten classes, two per client, 1bit FedYogi: every class's
# final weight went from 0.91 to -0.26 in nine rounds and accuracy from 40 % to 0.6 %). Under
# these strategies the server optimizer steps the latent weights, and every real-valued tensor
# takes the clients' sample-weighted mean, as FedAvg does.
SERVER_OPTIMIZERS = ("fedavgm", "fedadam", "fedyogi", "fedadagrad")


def mean_real_tensors(updates: Sequence[tuple[Mapping[str, np.ndarray], int]], layout: Layout
                      ) -> dict[str, np.ndarray]:
    """The sample-weighted mean of every real-valued tensor (not a latent binary weight) of
    ``updates`` ((state, samples) pairs)."""
    total = sum(n for _, n in updates)
    if not updates or total <= 0:
        return {}
    keys = [k for k, binary in zip(layout.keys, layout.binary, strict=True) if not binary]
    return {k: np.asarray(sum(np.asarray(s[k], np.float64) * n for s, n in updates) / total,
                          dtype=np.float32) for k in keys}


class FederationError(HybnnError):
    """The federation cannot go on (e.g. too few nodes connected in time)."""


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def arrays_of(content: RecordDict) -> ArrayRecord:
    """The message's model arrays (typed access to ``content["arrays"]``)."""
    return content.array_records[ARRAYS]


def server_round(content: RecordDict) -> int:
    """The round number the server put into a message's config."""
    value = content.config_records[CONFIG]["server-round"]
    if not isinstance(value, int | float):
        raise UpdateError(f"server-round must be a number, got {value!r}")
    return int(value)


def serialized_bytes(content: RecordDict) -> int:
    """Bytes of a message's content as Flower ships it: every object of its tree, deflated
    (records, array metadata and array chunks), each counted once."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())


class EncodedStrategy(Strategy):
    """``partitions``: the sizes the server knows per partition id (``train``, ``test``);
    given, a node's handshake counts must match its partition's. ``bounds``: the model's
    transport bounds (:func:`~hybnn.federated.transport_scale.transport_bounds`; default 1
    for every tensor): under ``--dp`` the wrapped strategy sees the global model and the
    updates divided by them, and its aggregate is multiplied back."""

    def __init__(self, cfg: FedConfig, layout: Layout, inner: Strategy | None = None,
                 partitions: Sequence[Mapping[str, Any]] | None = None,
                 bounds: Mapping[str, float] | None = None) -> None:
        self.cfg = cfg
        self.layout = layout
        self.inner = inner or private_strategy(cfg)
        self.bounds = dict(bounds) if bounds is not None else dict.fromkeys(layout.keys, 1.0)
        self.partitions = partitions
        self.partition_of: dict[int, int] = {}
        self.ledger = Ledger(self.partition_of.get)
        self.counts: dict[int, dict[str, int]] = {}  # node -> its handshake's num-train/-test
        self.excluded: set[int] = set()  # nodes that refused or failed the handshake
        self.grid: Grid | None = None
        # this training round's global state and the clipping norm sent with it (if any)
        self.sent: dict[str, np.ndarray] = {}
        self.sent_clip: float | None = None
        self.sent_side: set[str] = set()  # names of the wrapped strategy's own records

    # -- sampling ----------------------------------------------------------------------
    def wait_for_nodes(self, what: str) -> list[int]:
        """Connected nodes not excluded, once there are ``min_nodes``; bounded wait."""
        deadline = time.monotonic() + self.cfg.node_wait
        need = self.cfg.min_nodes
        while len(nodes := sorted(set(self.grid_nodes()) - self.excluded)) < need:
            if time.monotonic() > deadline:
                raise FederationError(
                    f"{what}: {len(nodes)} usable node(s) after {self.cfg.node_wait:g} s "
                    f"({len(self.excluded)} excluded), need {need} (--min-clients"
                    f"{', --secagg-shares' if self.cfg.secagg.enabled else ''})")
            log(INFO, "waiting for nodes: %d usable, need %d", len(nodes), need)
            time.sleep(1.0)
        return nodes

    def grid_nodes(self) -> list[int]:
        return [int(n) for n in self.grid.get_node_ids()] if self.grid is not None else []

    def sample_nodes(self, grid: Grid, server_round: int, fraction: float) -> list[int]:
        """The nodes of a round (training or evaluation): seeded, at least ``min_nodes``."""
        self.grid = grid
        nodes = self.wait_for_nodes(f"round {server_round}")
        k = min(len(nodes), max(int(len(nodes) * fraction), self.cfg.min_nodes))
        rng = np.random.default_rng([self.cfg.seed, server_round])
        # Index the ids: they are uint64 and would lose precision in a numpy array.
        return sorted(nodes[int(i)] for i in rng.choice(len(nodes), size=k, replace=False))

    def handshake(self, grid: Grid, config: ConfigRecord) -> list[dict[str, Any]]:
        """Ask every connected node, before any training, to check its encoder against the
        federation's fingerprint and to prepare its partition. Nodes that refuse, or whose
        reply fails validation (status ``rejected``), are excluded from sampling; the wait
        is bounded by ``node_wait``; under ``secagg`` so are nodes that did not answer in
        time (a late reply would race SecAgg+'s state on that node). (In simulation this
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
                try:
                    owners = {p: n for n, p in self.partition_of.items() if n != nid}
                    info = handshake_reply(reply.content, self.cfg.clients,
                                           self.cfg.max_examples, self.partitions, owners)
                except UpdateError as exc:
                    row.update(status="rejected", reason=str(exc))
                    self.excluded.add(nid)
                    log(WARNING, "handshake: node %d rejected and excluded: %s", nid, exc)
                else:
                    self.partition_of[nid] = info["partition-id"]
                    self.counts[nid] = info
                    row.update(status="ok", **{k.replace("-", "_"): v for k, v in info.items()})
            if row["status"] == "missing" and self.cfg.secagg.enabled:
                # Its reply may still come, and would race SecAgg+'s state on that node.
                self.excluded.add(nid)
                log(WARNING, "handshake: node %d did not reply within %g s and is excluded "
                    "(--secagg)", nid, self.cfg.node_wait)
            rows.append(row)
        ok = sum(r["status"] == "ok" for r in rows)
        log(INFO, "handshake: %d of %d node(s) ready, %d excluded", ok, len(rows),
            len(self.excluded))
        return rows

    def _messages(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                  grid: Grid, stage: Stage, fraction: float) -> list[Message]:
        if fraction <= 0:
            return []
        node_ids = self.sample_nodes(grid, server_round, fraction)
        if stage == "train":
            set_sample_size(self.inner, len(node_ids))
        configure = self.inner.configure_train if stage == "train" else \
            self.inner.configure_evaluate
        planned = list(configure(server_round, self._to_inner(arrays),
                                 ConfigRecord(dict(config)), SampledGrid(grid, node_ids)))
        if not planned:
            return []
        # the wrapped strategy's config (e.g. FedProx's proximal-mu), our encoded arrays
        config = ConfigRecord(dict(planned[0].content.config_records[CONFIG]))
        config["server-round"] = server_round
        node_ids = sorted(int(m.metadata.dst_node_id) for m in planned)
        state = from_record(arrays)
        payload = to_record(encode(state, self.layout, downlink(self.cfg.encoding)))
        # the wrapped strategy's own records, e.g. SCAFFOLD's control variate
        side = {k: v for k, v in planned[0].content.array_records.items() if k != ARRAYS}
        content = RecordDict({ARRAYS: payload, CONFIG: config, **side})
        size = serialized_bytes(content)
        if stage == "train":
            self.sent, self.sent_clip = state, sent_clipping_norm(config)
            self.sent_side = set(side)
            self.ledger[server_round].clipping_norm = current_clipping_norm(self.inner)
        for nid in node_ids:
            client = self.ledger.client(server_round, nid)
            client.count(stage, "down", size)
            client.sampled(stage)
        log(INFO, "%s round %d: %d node(s), %d B down each (%s)", stage, server_round,
            len(node_ids), size, self.cfg.encoding)
        mtype = MessageType.TRAIN if stage == "train" else MessageType.EVALUATE
        return [Message(content=content, message_type=mtype, dst_node_id=nid)
                for nid in node_ids]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.ledger[server_round].start()
        return self._messages(server_round, arrays, config, grid, "train", self.cfg.fraction)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self._messages(server_round, arrays, config, grid, "eval",
                              self.cfg.fraction_evaluate)

    # -- replies -----------------------------------------------------------------------
    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        try:
            return self._aggregate_train(server_round, replies)
        finally:  # the privacy spent so far, aggregated or not
            entry, privacy = self.ledger[server_round], spent(self.inner)
            entry.epsilon = privacy.epsilon if privacy else None
            entry.delta = privacy.delta if privacy else None

    def _aggregate_train(self, server_round: int, replies: Iterable[Message]
                         ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        entry = self.ledger[server_round]
        passed: list[Message] = []
        updates: list[tuple[dict[str, np.ndarray], int]] = []  # (state, samples) of each one
        for reply in replies:
            client = self._client(server_round, reply, "train")
            if client.status != "ok":
                continue
            # records named like those the wrapped strategy sent (SCAFFOLD's Δc_i) go back
            # to it, which checks them; the model update is validated here
            side = {k: v for k, v in reply.content.array_records.items() if k in self.sent_side}
            reply.content = RecordDict({k: v for k, v in reply.content.items() if k not in side})
            try:
                state, metrics, n = self._check_train_reply(client.node_id, reply)
                client.update_norm = norm = update_norm(state, self.sent, self.bounds)
                if self.sent_clip is not None:
                    check_clipped(norm, self.sent_clip)
                kept = reply_metrics(self.cfg, n, metrics)
            except UpdateError as exc:
                self._reject(client, "train", server_round, exc)
                continue
            client.trained(metrics, n)
            self._learn_partition(client, metrics)
            reply.content = RecordDict({ARRAYS: self._to_inner(to_record(state)),
                                        METRICS: kept, **side})
            passed.append(reply)
            updates.append((state, n))
        self._mark_missing(entry, "train")
        entry.finish_training(len(passed))
        if len(passed) < self.cfg.min_clients:
            log(WARNING, "round %d: %d valid update(s), need %d: global model unchanged",
                server_round, len(passed), self.cfg.min_clients)
            return None, None
        entry.aggregated = True
        set_sample_size(self.inner, len(passed))  # DP noise for the mean of these updates
        arrays, _ = self.inner.aggregate_train(server_round, passed)
        if arrays is None:  # e.g. Bulyan with fewer than 4f + 3 updates
            entry.aggregated = False
            log(WARNING, "round %d: %s did not aggregate %d update(s): global model "
                "unchanged", server_round, self.cfg.resolved_strategy, len(passed))
            return None, None
        state = self._from_inner(arrays)
        if self.cfg.resolved_strategy in SERVER_OPTIMIZERS:
            state.update(mean_real_tensors(updates, self.layout))
        arrays = to_record(project(state, self.layout))
        return arrays, MetricRecord({"valid-updates": len(passed)})

    def _to_inner(self, arrays: ArrayRecord) -> ArrayRecord:
        """What the wrapped strategy sees of a model: under ``--dp``, transport
        coordinates (DP clips and noises there); else the model as it is."""
        if not self.cfg.dp.enabled:
            return arrays
        return to_record(scaled(from_record(arrays), self.bounds))

    def _from_inner(self, arrays: ArrayRecord) -> dict[str, np.ndarray]:
        """The float32 state of the wrapped strategy's aggregate."""
        if not self.cfg.dp.enabled:
            return from_record(arrays)
        return unscaled(from_record(arrays), self.bounds)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        entry = self.ledger[server_round]
        total, weighted = 0, 0.0
        for reply in replies:
            client = self._client(server_round, reply, "eval")
            if client.status_eval != "ok":
                continue
            try:
                n, acc, metrics = self._check_eval_reply(client.node_id, reply)
            except UpdateError as exc:
                self._reject(client, "eval", server_round, exc)
                continue
            client.global_acc_local = acc
            self._learn_partition(client, metrics)
            if n > 0:
                total, weighted = total + n, weighted + n * acc
        self._mark_missing(entry, "eval")
        if total == 0:
            return None
        entry.clients_global_acc = weighted / total
        return MetricRecord({"acc": weighted / total})

    def _check_train_reply(self, nid: int, reply: Message
                           ) -> tuple[dict[str, np.ndarray], dict[str, Any], int]:
        """(state, metrics, sample count) of a valid training reply; else UpdateError."""
        # xor replies are coded against the round's global state; --dp local: LocalDpMod's
        # noise leaves the domain, and projecting is post-processing
        state, metrics = train_update(reply.content, self.layout, self.cfg.encoding,
                                      self.sent or None, projected=self.cfg.dp.mode == "local")
        n = self._checked_count(nid, metrics, "num-train", 1)
        return state, metrics, n

    def _check_eval_reply(self, nid: int, reply: Message
                          ) -> tuple[int, float, dict[str, Any]]:
        """(sample count, accuracy, metrics) of a valid evaluation reply; else UpdateError."""
        metrics = check_metrics(reply.content)
        n = self._checked_count(nid, metrics, "num-test", 0)
        acc = metrics.get("acc", -1)
        if n > 0 and not 0.0 <= acc <= 1.0:
            raise UpdateError(f"acc = {acc!r} for {n} samples")
        return n, float(acc), metrics

    def _checked_count(self, nid: int, metrics: dict[str, Any], what: str, low: int) -> int:
        """The reply's sample count, bounded by the node's handshake count ``what``."""
        known = self.counts.get(nid, {})
        check_partition(metrics, known.get("partition-id"), self.cfg.clients)
        return sample_count(metrics, low, known.get(what), self.cfg.max_examples, what)

    def _learn_partition(self, client: ClientRow, metrics: dict[str, Any]) -> None:
        """A valid reply's partition id (the handshake's, or new for a node without one)."""
        pid = metrics.get("partition-id")
        if pid is not None:
            self.partition_of[client.node_id] = client.partition = pid

    def _reject(self, client: ClientRow, stage: Stage, server_round: int,
                exc: UpdateError) -> None:
        client.set(stage, "rejected", str(exc))
        log(WARNING, "round %d: rejected the %s reply of node %d (partition %s): %s",
            server_round, stage, client.node_id, client.partition, exc)

    # -- ledger ------------------------------------------------------------------------
    def _client(self, server_round: int, reply: Message, stage: Stage) -> ClientRow:
        """The ledger row of a reply's node: ``ok`` with its bytes, or ``error``."""
        nid = int(reply.metadata.src_node_id)
        client = self.ledger.client(server_round, nid)
        if reply.has_error():
            client.set(stage, "error", reply.error.reason)
            log(WARNING, "round %d: node %d (partition %s) failed in %s: %s", server_round,
                nid, client.partition, stage, reply.error.reason)
            return client
        client.set(stage, "ok")
        client.count(stage, "up", serialized_bytes(reply.content))
        return client

    def _mark_missing(self, entry: RoundEntry, stage: Stage) -> None:
        """Clients sampled for ``stage`` whose reply never came."""
        for client in entry.sampled(stage):
            if client.status_of(stage) == "not sampled":  # sampled, and no reply came
                client.set(stage, "missing")
                log(WARNING, "round %d: no %s reply from node %d (partition %s) within "
                    "%g s", entry.round, stage, client.node_id, client.partition,
                    self.cfg.round_timeout)

    def summary(self) -> None:
        log(INFO, "\t├──> hybnn: encoding %s, min clients %d, node wait %g s, seeded sampling",
            self.cfg.encoding, self.cfg.min_clients, self.cfg.node_wait)
        self.inner.summary()
