"""FedHyBNN ClientApp: check the encoder, train the head on local codes, send the head only.

Node config (``flower-supernode --node-config``, set automatically in simulation, where
:func:`node_data_mod` adds each virtual node's ``data``):
``partition-id``, ``num-partitions`` and optionally ``encoder`` (this node's encoder
directory; default: the path in the server's config, for runs on one machine) and ``data``
(this node's own data file, when the run config sets ``node-data``: the node trains on that
file alone, any format ``--data`` takes, holding out ``local-test`` of it as its test set).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Scalar
from flwr.common.constant import ErrorCode
from torch import nn

from hybnn.encoders import CodeEncoder
from hybnn.errors import DataError, HybnnError
from hybnn.federated import task
from hybnn.federated.config import FedConfig
from hybnn.federated.encoded_strategy import (
    ARRAYS,
    CONFIG,
    METRICS,
    arrays_of,
    from_record,
    to_record,
)
from hybnn.federated.encoding import (
    Layout,
    UpdateError,
    decode,
    downlink,
    encode,
    load_state,
    model_state,
    wire_keys,
)
from hybnn.federated.flower_strategies import ProximalTerm
from hybnn.federated.privacy import client_dp_mod
from hybnn.federated.scaffold import CONTROL, client_control, finish_control
from hybnn.federated.secagg import to_transport
from hybnn.federated.skew import skew_callbacks
from hybnn.federated.transport_scale import transport_bounds
from hybnn.hooks import Callback

LATENT = "hybnn-latent"  # context.state key: this client's latent weights (1bit, xor)


def node_data(context: Context) -> str:
    """This node's own data file (node config ``data``); empty on a partition of --data."""
    return str(context.node_config.get("data", ""))


def node_data_mod(files: Sequence[str]) -> Mod:
    """A mod that gives virtual node ``i`` of Flower's simulation its own data file
    ``files[i]`` as node config ``data``, as ``flower-supernode --node-config`` gives a
    real node (the simulation sets only ``partition-id`` and ``num-partitions``), so the
    same ClientApp reads it; the server's side never sees the paths."""
    paths = tuple(str(f) for f in files)

    def give_data(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        pid = int(context.node_config.get("partition-id", -1))
        if not 0 <= pid < len(paths):
            raise DataError(f"virtual node {pid} has no data file ({len(paths)} given)")
        context.node_config["data"] = paths[pid]
        return call_next(msg, context)

    return give_data


def _setup(config: Mapping[str, Any], context: Context
           ) -> tuple[FedConfig, int, CodeEncoder | None]:
    torch.set_num_threads(1)
    cfg = FedConfig.from_record(config)
    node = context.node_config
    pid, n = int(node.get("partition-id", -1)), int(node.get("num-partitions", cfg.clients))
    if n != cfg.clients:
        raise DataError(f"this node was configured for {n} partitions but the federation "
                        f"has {cfg.clients} clients")
    encoder = None
    if cfg.model == "head":
        encoder = task.encoder_at(str(node.get("encoder", "")) or cfg.encoder, cfg.device)
        task.check_encoder(encoder, cfg.encoder_fingerprint, f"client {pid}")
    return cfg, pid, encoder


def local_round(cfg: FedConfig, pid: int, encoder: CodeEncoder | None,
                arrays: dict[str, np.ndarray], config: Mapping[str, Any], context: Context,
                callbacks: Sequence[Callback] = ()
                ) -> tuple[nn.Module, dict[str, np.ndarray], dict[str, Any]]:
    """One round of local training from the encoded global model ``arrays`` (with
    ``callbacks``, e.g. SCAFFOLD's): the trained model, its federated state and the reply's
    metrics."""
    train_xy, test_xy = task.client_tensors(cfg, pid, encoder, node_data(context))
    model = task.build_model(cfg, encoder)
    layout = Layout.of(model)
    received = decode(arrays, layout, downlink(cfg.encoding))
    state = received
    if downlink(cfg.encoding) == "1bit":
        # Magnitudes from this client's last round; a newcomer takes those of the seeded
        # initial model, which in round 1 rebuilds the server's model exactly.
        own = (from_record(context.state.array_records[LATENT]) if LATENT in context.state
               else model_state(model, layout))
        state = task.restore_latent(received, own, layout)
    load_state(model, state)
    mu = config.get("proximal-mu", 0.0)  # FedProx: the server's mu
    if not isinstance(mu, int | float) or not 0.0 <= float(mu) < float("inf"):
        raise DataError(f"proximal-mu must be a finite number >= 0, got {mu!r}")
    prox = [ProximalTerm(float(mu))] if mu else []
    rnd = config.get("server-round")
    if not isinstance(rnd, int | float):
        raise UpdateError(f"server-round must be a number, got {rnd!r}")
    extra = [*prox, *skew_callbacks(cfg, train_xy[1]), *callbacks]
    history = task.train_local(model, train_xy, cfg, int(rnd), pid, extra)
    local = model_state(model, layout)
    if downlink(cfg.encoding) == "1bit":
        context.state[LATENT] = to_record({k: local[k] for k, b in
                                           zip(layout.keys, layout.binary, strict=True) if b})
    loss, acc = task.evaluate(model, test_xy)
    metrics: dict[str, Any] = {
        "num-examples": len(train_xy[1]),
        "partition-id": pid,
        "train-loss": _finite(history.last("train_loss")),
        "train-acc": _finite(history.last("train_acc")),
        "local-loss": _finite(loss),
        "local-acc": _finite(acc),
    }
    return model, local, metrics


def global_scores(cfg: FedConfig, pid: int, encoder: CodeEncoder | None,
                  arrays: dict[str, np.ndarray], data: str = "") -> dict[str, Any]:
    """The encoded global model ``arrays`` on this client's held-out partition (of its own
    file ``data`` with node data)."""
    _, test_xy = task.client_tensors(cfg, pid, encoder, data)
    model = task.build_model(cfg, encoder)
    load_state(model, decode(arrays, Layout.of(model), downlink(cfg.encoding)))
    loss, acc = task.evaluate(model, test_xy)
    return {"num-examples": len(test_xy[1]), "partition-id": pid, "loss": _finite(loss),
            "acc": _finite(acc)}


def train(msg: Message, context: Context) -> Message:
    config = msg.content[CONFIG]
    cfg, pid, encoder = _setup(config, context)
    if cfg.secagg.enabled:
        raise DataError("this run uses --secagg: the client sends its update only masked, "
                        "through SecAgg+, never in the clear")
    received = from_record(arrays_of(msg.content))
    # SCAFFOLD's, if the server sent c (1bit and xor: packed like a 1bit model)
    control = client_control(msg.content, context.state, downlink(cfg.encoding) == "1bit")
    model, local, metrics = local_round(cfg, pid, encoder, received, config, context,
                                        [control] if control is not None else [])
    layout = Layout.of(model)
    # xor tells the signs that flipped against the global model received this round.
    reference = decode(received, layout, downlink(cfg.encoding))
    arrays: ArrayRecord = to_record(encode(local, layout, cfg.encoding, reference))
    content = RecordDict({ARRAYS: arrays, METRICS: MetricRecord(metrics)})
    if control is not None:
        content[CONTROL] = finish_control(control, context.state)
    return Message(content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    """The global model on this client's held-out partition."""
    cfg, pid, encoder = _setup(msg.content[CONFIG], context)
    metrics = global_scores(cfg, pid, encoder, from_record(arrays_of(msg.content)),
                            node_data(context))
    return Message(RecordDict({METRICS: MetricRecord(metrics)}), reply_to=msg)


def query(msg: Message, context: Context) -> Message:
    """The server's handshake: check the encoder and prepare this client's partition.

    A node that cannot take part (its data missing, corrupt, oversized or outside the label
    space, another encoder) says why in one ``hybnn: error:`` line on its own stderr, not a
    traceback, and answers with an error reply whose reason is that line's message: the
    server logs it and excludes the node."""
    try:
        cfg, pid, encoder = _setup(msg.content[CONFIG], context)
        train_xy, test_xy = task.client_tensors(cfg, pid, encoder, node_data(context))
    except HybnnError as exc:
        print(f"hybnn: error: {exc}", file=sys.stderr, flush=True)
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=str(exc)),
                       reply_to=msg)
    return Message(RecordDict({METRICS: MetricRecord({
        "partition-id": pid, "num-train": len(train_xy[1]), "num-test": len(test_xy[1])})}),
        reply_to=msg)


def _finite(x: float) -> float:
    """Metrics must be finite (the server rejects others): -1 stands for "none"."""
    return float(x) if np.isfinite(x) else -1.0


class SecAggClient(NumPyClient):
    """``--secagg``'s client: the same local round as :func:`train`, as the legacy
    NumPyClient that Flower's ``secaggplus_mod`` masks (:mod:`hybnn.federated.secagg`).

    Arrays travel as lists in :func:`~hybnn.federated.encoding.wire_keys` order. Down: the
    encoded global model; up: the trained state (``1bit``: decoded, ``scale · sign(w)``),
    each tensor divided by its bound (:func:`~hybnn.federated.secagg.to_transport`).
    """

    def __init__(self, context: Context) -> None:
        self.node = context

    def _arrays(self, cfg: FedConfig, encoder: CodeEncoder | None, parameters: list[np.ndarray]
                ) -> tuple[nn.Module, Layout, dict[str, np.ndarray]]:
        model = task.build_model(cfg, encoder)
        layout = Layout.of(model)
        keys = wire_keys(layout, cfg.encoding)
        if len(parameters) != len(keys):
            raise DataError(f"the server sent {len(parameters)} arrays, {cfg.encoding} "
                            f"carries {len(keys)}")
        return model, layout, dict(zip(keys, parameters, strict=True))

    def fit(self, parameters: list[np.ndarray], config: dict[str, Scalar]
            ) -> tuple[list[np.ndarray], int, dict[str, Scalar]]:
        cfg, pid, encoder = _setup(config, self.node)
        if not cfg.secagg.enabled:
            raise DataError("a SecAgg+ round in a run without --secagg")
        model, layout, arrays = self._arrays(cfg, encoder, parameters)
        _, local, metrics = local_round(cfg, pid, encoder, arrays, config, self.node)
        upload = decode(encode(local, layout, cfg.encoding), layout, cfg.encoding)
        up = to_transport(upload, layout, transport_bounds(model, layout),
                          cfg.secagg.clip)
        return up, int(metrics["num-examples"]), dict(metrics)

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Scalar]
                 ) -> tuple[float, int, dict[str, Scalar]]:
        cfg, pid, encoder = _setup(config, self.node)
        _, _, arrays = self._arrays(cfg, encoder, parameters)
        metrics = global_scores(cfg, pid, encoder, arrays, node_data(self.node))
        return (float(metrics["loss"]), int(metrics["num-examples"]),
                {k: v for k, v in metrics.items() if k not in ("loss", "num-examples")})


def secagg_client_app(mods: Sequence[Mod] = ()) -> ClientApp:
    """:class:`SecAggClient` behind ``secaggplus_mod``; ``mods`` run inside it, between the
    mod and the client: they see the plain update before it is masked (tests, drills)."""
    return ClientApp(client_fn=lambda context: SecAggClient(context).to_client(),
                     mods=[secaggplus_mod, *mods])


def make_client_app(mods: Sequence[Mod] = (), secagg_mods: Sequence[Mod] = ()) -> ClientApp:
    """A ClientApp running :func:`train`, :func:`evaluate` and :func:`query` (handshake),
    behind optional mods; training replies pass the DP mod the server's ``--dp`` asks for
    first, in transport coordinates (:func:`~hybnn.federated.privacy.client_dp_mod`).
    Messages of Flower's legacy path (no ``config`` record: the SecAgg+ stages and their
    evaluation) go to :func:`secagg_client_app` (``secagg_mods``)."""
    client = ClientApp(mods=list(mods))
    legacy = secagg_client_app(secagg_mods)

    def routed(handler: ClientAppCallable) -> ClientAppCallable:
        def route(msg: Message, context: Context) -> Message:
            if CONFIG in msg.content.config_records:
                return handler(msg, context)
            return legacy(msg, context)
        return route

    def private_train(msg: Message, context: Context) -> Message:
        def bounds(cfg: FedConfig) -> dict[str, float]:
            _, _, encoder = _setup(msg.content[CONFIG], context)
            model = task.build_model(cfg, encoder)
            return transport_bounds(model, Layout.of(model))

        return client_dp_mod(msg, context, train, bounds)

    client.train()(routed(private_train))
    client.evaluate()(routed(evaluate))
    client.query()(query)
    return client


app = make_client_app()
