"""Secure aggregation (``--secagg``): the server learns the sum of the updates, never one.

Flower 1.41 has SecAgg+ on its legacy path only: ``SecAggPlusWorkflow`` inside a
``DefaultWorkflow``, driving a legacy strategy through a ``LegacyContext``, and on each
client a ``NumPyClient`` behind ``secaggplus_mod``. This module is the server side
(:class:`SecAggFedAvg`, :class:`MeteredGrid`) and the transport both sides share; the
client side is :class:`hybnn.federated.client_app.SecAggClient`.

A round is four exchanges with the sampled nodes (each a ``train`` message and its reply):

1. *setup*: the protocol's settings; each node answers with two public keys;
2. *share keys*: its neighbours' keys; each node splits its mask seed and its private key
   into ``secagg_shares`` Shamir shares (one kept) and answers with the others, encrypted
   for its neighbours;
3. *collect masked vectors*: the global model and the shares addressed to the node; the
   node trains, quantizes ``[n, n·update]`` (n: its sample count) and answers with it
   masked: a private mask plus pairwise masks that cancel between neighbours, modulo 2^32;
4. *unmask*: who survived; each node answers with the shares that rebuild the survivors'
   private masks and the dropped nodes' pairwise masks (``secagg_threshold`` shares each).

The masked vectors add up to the weighted sum ``Σ n_i·update_i`` and ``Σ n_i``: the sample
weighted average, FedAvg, is all the server obtains. A node that drops out after step 2 is
unmasked from its neighbours' shares; fewer than ``secagg_threshold`` colluding
neighbours learn nothing of it.

**What travels** (:func:`to_transport`): every tensor in the transport coordinates of
:mod:`hybnn.federated.transport_scale`, in [-1, 1]: latent weights as they are (clipped
there), a batch norm's running mean divided by the fan-in K of the layer before it and its
running variance by K² (a binary layer's output is a sum of K products of ±1). Flower then clips to
[-``secagg_clip``, ``secagg_clip``] and quantizes into 2^22 levels; a client refuses to send
a value the clip would cut. Without the bounds a running variance of ~K (200) would need a
range that leaves latent weights a quantization step of ~0.02. The masked vector is int64:
8 bytes per value, twice fp32, whatever the encoding.

**Encodings**: ``fp32`` sends the latent weights. ``1bit`` sends the global model down as
packed signs and scales, and the update up as ``scale · sign(w)`` floats in [-1, 1]: their
weighted sum is the plain ``1bit`` majority vote, but it travels masked like ``fp32`` (the
signs of one client cannot be added to another's as bits).

**What the server can no longer check**: one update. It sees in the clear each client's
claimed sample count and metrics (checked as usual, see :mod:`hybnn.federated.validation`)
and, after unmasking, the aggregate, which must be finite and in the model's domain before
it becomes the global model (:func:`checked_aggregate`). A client can shift the sum within
the clipping range, weight its update by a count other than the one it claims, and cannot
be singled out or dropped once its masked vector is in the sum: secure aggregation and
per-update validation (and any robust rule: median, trimmed mean, Krum) exclude each other.
A round whose sum holds a client whose visible reply fails validation is not applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid
from flwr.supercore import log

from hybnn.federated.config import FedConfig
from hybnn.federated.encoded_strategy import (
    METRICS,
    EncodedStrategy,
    project,
    serialized_bytes,
    to_record,
)
from hybnn.federated.encoding import Layout, UpdateError, encode, wire_keys
from hybnn.federated.ledger import ClientRow, Ledger, Stage
from hybnn.federated.transport_scale import scaled, unscaled
from hybnn.federated.validation import (
    VAR_FLOOR,
    check_metrics,
    check_partition,
    check_state,
    sample_count,
)

QUANTIZATION_RANGE = 2**22  # Flower's defaults: levels of [-clip, clip] per value ...
MODULUS_RANGE = 2**32  # ... and the masks' modulus: 1023 quantized updates sum without wrapping
MAX_SUMMED = MODULUS_RANGE // QUANTIZATION_RANGE - 1


# -- what travels ------------------------------------------------------------------------
def to_transport(state: Mapping[str, np.ndarray], layout: Layout, bounds: Mapping[str, float],
                 clip: float) -> list[np.ndarray]:
    """The update as SecAgg+ takes it: each tensor in transport coordinates
    (:func:`~hybnn.federated.transport_scale.scaled`), in layout order; raises
    :class:`UpdateError` for a value the quantizer would clip."""
    out = []
    for k, a in scaled({k: state[k] for k in layout.keys}, bounds).items():
        if a.size and not np.abs(a).max() <= clip:  # also NaN
            raise UpdateError(f"{k}: |value| / bound {bounds[k]:g} = {np.abs(a).max():.3g} is "
                              f"outside --secagg-clip {clip:g}; it would be clipped in the sum")
        out.append(a.astype(np.float32))
    return out


def from_transport(arrays: list[np.ndarray], layout: Layout, bounds: Mapping[str, float]
                   ) -> dict[str, np.ndarray]:
    """The float32 state from an unmasked aggregate (the inverse of :func:`to_transport`)."""
    if len(arrays) != len(layout.keys):
        raise UpdateError(f"the aggregate has {len(arrays)} arrays, the model "
                          f"{len(layout.keys)}")
    for k, shape, a in zip(layout.keys, layout.shapes, arrays, strict=True):
        if np.shape(a) != shape:
            raise UpdateError(f"{k}: shape {np.shape(a)} in the aggregate, expected {shape}")
    return unscaled(dict(zip(layout.keys, arrays, strict=True)), bounds)


def checked_aggregate(state: dict[str, np.ndarray], layout: Layout) -> dict[str, np.ndarray]:
    """The unmasked aggregate as a global model, if finite and in the model's domain (else
    :class:`UpdateError`). Running variances are floored first: quantization noise can push
    a variance near 0 below it."""
    floored = {k: np.maximum(v, VAR_FLOOR) if k.endswith("running_var") else v
               for k, v in state.items()}
    for k, v in floored.items():
        if not np.isfinite(v).all():
            raise UpdateError(f"{k}: the aggregate holds NaN or infinite values")
    check_state(floored, layout)
    return project(floored, layout)


# -- the server ---------------------------------------------------------------------------
EvaluateFn = Callable[[int, Any], MetricRecord | None]


class SecAggFedAvg(FedAvg):
    """Flower's legacy FedAvg for ``SecAggPlusWorkflow``, with hybnn's sampling, downlink
    encoding, checks and round ledger (``rounds``, the shape of
    :class:`~hybnn.federated.encoded_strategy.EncodedStrategy`'s).

    ``nodes`` is the run's :class:`~hybnn.federated.encoded_strategy.EncodedStrategy`: it did the
    handshake, and it samples each round (seeded, bounded wait, excluded nodes left out).
    ``evaluate_fn(round, ArrayRecord)`` scores a global model on the server's test set.
    """

    def __init__(self, cfg: FedConfig, layout: Layout, bounds: Mapping[str, float],
                 initial: Mapping[str, np.ndarray], evaluate_fn: EvaluateFn,
                 nodes: EncodedStrategy, max_weight: int) -> None:
        super().__init__(fraction_fit=cfg.fraction, fraction_evaluate=cfg.fraction_evaluate,
                         initial_parameters=self._global(initial, layout),
                         accept_failures=True)
        self.cfg = cfg
        self.layout = layout
        self.bounds = dict(bounds)
        self.score = evaluate_fn
        self.nodes = nodes
        self.max_weight = max_weight
        self.grid: Grid | None = None
        self.ledger = Ledger(nodes.partition_of.get)

    @staticmethod
    def _global(state: Mapping[str, np.ndarray], layout: Layout) -> Parameters:
        return ndarrays_to_parameters([np.asarray(state[k], np.float32) for k in layout.keys])

    def _state(self, parameters: Parameters) -> dict[str, np.ndarray]:
        return dict(zip(self.layout.keys, parameters_to_ndarrays(parameters), strict=True))

    def protocol(self) -> dict[str, Any]:
        """The SecAgg+ settings, for the federation log."""
        return {"protocol": "SecAgg+ (flwr.server.workflow.SecAggPlusWorkflow)",
                "shares": self.cfg.secagg.shares, "threshold": self.cfg.secagg.threshold,
                "clip": self.cfg.secagg.clip, "quantization_range": QUANTIZATION_RANGE,
                "modulus_range": MODULUS_RANGE, "max_weight": self.max_weight,
                "bounds": {k: b for k, b in self.bounds.items() if b != 1.0},
                "per_update_validation": False}

    def run(self, grid: Grid, context: Context) -> None:
        """``cfg.rounds`` rounds of SecAgg+ FedAvg through Flower's legacy workflow."""
        self.grid = grid
        fit = SecAggPlusWorkflow(num_shares=self.cfg.secagg.shares,
                                 reconstruction_threshold=self.cfg.secagg.threshold,
                                 max_weight=float(self.max_weight),
                                 clipping_range=self.cfg.secagg.clip,
                                 quantization_range=QUANTIZATION_RANGE,
                                 modulus_range=MODULUS_RANGE, timeout=self.cfg.round_timeout)
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=self.cfg.rounds),
                               strategy=self, client_manager=SimpleClientManager())
        DefaultWorkflow(fit_workflow=fit)(MeteredGrid(grid, self), legacy)

    # -- configure ------------------------------------------------------------------------
    def _instructions(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager, stage: Stage, fraction: float
                      ) -> list[tuple[ClientProxy, dict[str, Scalar], Parameters]]:
        if fraction <= 0 or self.grid is None:
            return []
        node_ids = self.nodes.sample_nodes(self.grid, server_round, fraction)
        proxies = {int(p.node_id): p for p in client_manager.all().values()}
        node_ids = [nid for nid in node_ids if nid in proxies]  # registered by now
        config: dict[str, Scalar] = {**self.cfg.client_record(), "server-round": server_round}
        if self.cfg.resolved_strategy == "fedprox":
            config["proximal-mu"] = self.cfg.proximal_mu
        encoded = encode(self._state(parameters), self.layout, self.cfg.encoding)
        down = ndarrays_to_parameters([encoded[k] for k in wire_keys(self.layout,
                                                                      self.cfg.encoding)])
        for nid in node_ids:
            client = self.ledger.client(server_round, nid)
            client.sampled(stage)
            client.set(stage, "ok")  # until a stage of the protocol fails
        log(INFO, "secagg %s round %d: %d node(s) (%s down)", stage, server_round,
            len(node_ids), self.cfg.encoding)
        return [(proxies[nid], config, down) for nid in node_ids]

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        self.ledger[server_round].start()
        return [(p, FitIns(down, config)) for p, config, down in
                self._instructions(server_round, parameters, client_manager, "train",
                                   self.cfg.fraction)]

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager
                           ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return [(p, EvaluateIns(down, config)) for p, config, down in
                self._instructions(server_round, parameters, client_manager, "eval",
                                   self.cfg.fraction_evaluate)]

    # -- aggregate ------------------------------------------------------------------------
    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[tuple[ClientProxy, FitRes] | BaseException]
                      ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """``results`` all carry the same unmasked aggregate (SecAgg+ already averaged):
        check the clients' visible replies and the aggregate, then apply it."""
        entry = self.ledger[server_round]
        entry.finish_training(len(results))
        rejected = 0
        for proxy, res in results:
            client = self.ledger.client(server_round, int(proxy.node_id))
            try:
                metrics = self._checked(int(proxy.node_id), res.metrics, res.num_examples,
                                        "num-train", 1)
            except UpdateError as exc:
                rejected += 1
                client.set("train", "rejected", f"{exc} (its masked update is in the sum: "
                           "SecAgg+ cannot take it out; the round is not applied)")
                log(WARNING, "round %d: node %d's reply is invalid: %s", server_round,
                    proxy.node_id, exc)
                continue
            client.trained(metrics, res.num_examples)
        if rejected or len(results) < self.cfg.min_clients or not results:
            log(WARNING, "round %d: %d update(s) in the sum, %d invalid reply(ies), need %d "
                "valid: global model unchanged", server_round, len(results), rejected,
                self.cfg.min_clients)
            return None, {}
        try:
            state = checked_aggregate(
                from_transport(parameters_to_ndarrays(results[0][1].parameters), self.layout,
                               self.bounds), self.layout)
        except UpdateError as exc:
            entry.reason = f"aggregate rejected: {exc}"
            log(WARNING, "round %d: the unmasked aggregate is rejected: %s", server_round, exc)
            return None, {}
        entry.aggregated = True
        return self._global(state, self.layout), {"valid-updates": len(results)}

    def aggregate_evaluate(self, server_round: int,
                           results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list[tuple[ClientProxy, EvaluateRes] | BaseException]
                           ) -> tuple[float | None, dict[str, Scalar]]:
        entry = self.ledger[server_round]
        total, weighted = 0, 0.0
        for proxy, res in results:
            nid = int(proxy.node_id)
            client = self.ledger.client(server_round, nid)
            try:
                metrics = self._checked(nid, res.metrics, res.num_examples, "num-test", 0)
                acc = metrics.get("acc", -1)
                if res.num_examples > 0 and not 0.0 <= acc <= 1.0:
                    raise UpdateError(f"acc = {acc!r} for {res.num_examples} samples")
            except UpdateError as exc:
                client.set("eval", "rejected", str(exc))
                continue
            client.global_acc_local = float(acc)
            if res.num_examples > 0:
                total, weighted = total + res.num_examples, weighted + res.num_examples * acc
        if total == 0:
            return None, {}
        entry.clients_global_acc = weighted / total
        return None, {"acc": weighted / total}

    def evaluate(self, server_round: int, parameters: Parameters
                 ) -> tuple[float, dict[str, Scalar]] | None:
        record = self.score(server_round, to_record(self._state(parameters)))
        if record is None:  # node data without a server test set
            return None
        scores: dict[str, Any] = dict(record)
        return float(scores["loss"]), {"acc": float(scores["acc"])}

    def _checked(self, nid: int, metrics: Mapping[str, Scalar], n: int, what: str, low: int
                 ) -> dict[str, Any]:
        """A reply's metrics and sample count, checked as the plain path checks them."""
        known = self.nodes.counts.get(nid, {})
        values: dict[str, Any] = {**metrics, "num-examples": n}
        checked = check_metrics(RecordDict({METRICS: MetricRecord(values)}))
        check_partition(checked, known.get("partition-id"), self.cfg.clients)
        sample_count(checked, low, known.get(what), self.cfg.max_examples, what)
        return checked

    # -- ledger ---------------------------------------------------------------------------
    def sent(self, msg: Message) -> None:
        """Count a message to a node into its round's ledger row."""
        client = self._row(msg)
        client.count(_kind(msg), "down", serialized_bytes(msg.content), add=True)

    def received(self, msg: Message, reply: Message | None, timeout: float) -> None:
        """Count a node's reply (``None``: none came within ``timeout``); a failed stage
        marks the node ``error`` or ``missing`` for the round."""
        client, stage = self._row(msg), _kind(msg)
        where = f"stage {_stage(msg)}" if stage == "train" else "evaluation"
        if reply is None:
            client.set(stage, "missing", f"no reply in {where} within {timeout:g} s")
            return
        if reply.has_content():
            client.count(stage, "up", serialized_bytes(reply.content), add=True)
        else:
            client.set(stage, "error", f"{where}: {reply.error.reason}")
            log(WARNING, "round %s: node %d failed in %s: %s", msg.metadata.group_id,
                msg.metadata.dst_node_id, where, reply.error.reason)

    def _row(self, msg: Message) -> ClientRow:
        return self.ledger.client(int(msg.metadata.group_id), int(msg.metadata.dst_node_id))


def _kind(msg: Message) -> Stage:
    return "train" if msg.metadata.message_type == MessageType.TRAIN else "eval"


def _stage(msg: Message) -> str:
    record = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    return str(record.get(Key.STAGE, "?")) if record is not None else "?"


class MeteredGrid(Grid):
    """The grid the legacy workflow talks through: every message and reply is counted into
    the strategy's ledger (serialized bytes, failed stages), and every wait is bounded by
    ``round_timeout`` (Flower's evaluation workflow would wait forever)."""

    def __init__(self, grid: Grid, ledger: SecAggFedAvg) -> None:
        self._grid = grid
        self.ledger = ledger

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        timeout = self.ledger.cfg.round_timeout if timeout is None else timeout
        messages = list(messages)
        for msg in messages:
            self.ledger.sent(msg)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        by_node = {int(r.metadata.src_node_id): r for r in replies}
        for msg in messages:
            self.ledger.received(msg, by_node.get(int(msg.metadata.dst_node_id)), timeout)
        return replies

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def set_run(self, run: Any) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)
