"""FedHyBNN ClientApp: check the encoder, train the head on local codes, send the head only.

Node config (``flower-supernode --node-config``, set automatically in simulation):
``partition-id``, ``num-partitions`` and optionally ``encoder`` (this node's encoder
directory; default: the path in the server's config, for runs on one machine).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from hybnn.errors import DataError
from hybnn.federated import task
from hybnn.federated.config import FedConfig
from hybnn.federated.encoding import Layout, decode, encode, load_state, model_state
from hybnn.federated.privacy import client_dp_mod
from hybnn.federated.strategies import ProximalTerm
from hybnn.federated.strategy import (
    ARRAYS,
    CONFIG,
    METRICS,
    arrays_of,
    from_record,
    server_round,
    to_record,
)
from hybnn.pipeline.encoder import Encoder

LATENT = "hybnn-latent"  # context.state key: this client's latent weights (1bit)


def _setup(msg: Message, context: Context) -> tuple[FedConfig, int, Encoder | None]:
    torch.set_num_threads(1)
    cfg = FedConfig.from_record(msg.content[CONFIG])
    node = context.node_config
    pid, n = int(node.get("partition-id", -1)), int(node.get("num-partitions", cfg.clients))
    if n != cfg.clients:
        raise DataError(f"this node was configured for {n} partitions but the federation "
                        f"has {cfg.clients} clients")
    encoder = None
    if cfg.model == "hybnn":
        encoder = task.encoder_at(str(node.get("encoder", "")) or cfg.encoder, cfg.device)
        task.check_encoder(encoder, cfg.encoder_fingerprint, f"client {pid}")
    return cfg, pid, encoder


def train(msg: Message, context: Context) -> Message:
    cfg, pid, encoder = _setup(msg, context)
    (train_xy, test_xy) = task.client_tensors(cfg, pid, encoder)
    model = task.build_model(cfg, encoder)
    layout = Layout.of(model)
    state = decode(from_record(arrays_of(msg.content)), layout, cfg.encoding)
    if cfg.encoding == "1bit":
        # Magnitudes from this client's last round; a newcomer takes those of the seeded
        # initial model, which in round 1 rebuilds the server's model exactly.
        own = (from_record(context.state.array_records[LATENT]) if LATENT in context.state
               else model_state(model, layout))
        state = task.restore_latent(state, own, layout)
    load_state(model, state)
    mu = msg.content[CONFIG].get("proximal-mu", 0.0)  # FedProx: the server's mu
    if not isinstance(mu, int | float) or not 0.0 <= float(mu) < float("inf"):
        raise DataError(f"proximal-mu must be a finite number >= 0, got {mu!r}")
    prox = [ProximalTerm(float(mu))] if mu else []
    history = task.train_local(model, train_xy, cfg, server_round(msg.content), pid, prox)
    local = model_state(model, layout)
    if cfg.encoding == "1bit":
        context.state[LATENT] = to_record({k: local[k] for k, b in
                                           zip(layout.keys, layout.binary, strict=True) if b})
    loss, acc = task.evaluate(model, test_xy)
    metrics = MetricRecord({
        "num-examples": len(train_xy[1]),
        "partition-id": pid,
        "train-loss": _finite(history.last("train_loss")),
        "train-acc": _finite(history.last("train_acc")),
        "local-loss": _finite(loss),
        "local-acc": _finite(acc),
    })
    arrays: ArrayRecord = to_record(encode(local, layout, cfg.encoding))
    return Message(RecordDict({ARRAYS: arrays, METRICS: metrics}), reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    """The global model on this client's held-out partition."""
    cfg, pid, encoder = _setup(msg, context)
    _, test_xy = task.client_tensors(cfg, pid, encoder)
    model = task.build_model(cfg, encoder)
    layout = Layout.of(model)
    load_state(model, decode(from_record(arrays_of(msg.content)), layout, cfg.encoding))
    loss, acc = task.evaluate(model, test_xy)
    metrics = MetricRecord({"num-examples": len(test_xy[1]), "partition-id": pid,
                            "loss": _finite(loss), "acc": _finite(acc)})
    return Message(RecordDict({METRICS: metrics}), reply_to=msg)


def query(msg: Message, context: Context) -> Message:
    """The server's handshake: check the encoder and prepare this client's partition."""
    cfg, pid, encoder = _setup(msg, context)
    train_xy, test_xy = task.client_tensors(cfg, pid, encoder)
    return Message(RecordDict({METRICS: MetricRecord({
        "partition-id": pid, "num-train": len(train_xy[1]), "num-test": len(test_xy[1])})}),
        reply_to=msg)


def _finite(x: float) -> float:
    """Metrics must be finite (the server rejects others): -1 stands for "none"."""
    return float(x) if np.isfinite(x) else -1.0


def make_client_app(mods: Sequence[Mod] = ()) -> ClientApp:
    """A ClientApp running :func:`train`, :func:`evaluate` and :func:`query` (handshake),
    behind optional mods. Training replies pass the DP mod the server's ``--dp`` asks for
    first (:func:`~hybnn.federated.privacy.client_dp_mod`), then ``mods``."""
    client = ClientApp(mods=list(mods))
    client.train(mods=[client_dp_mod])(train)
    client.evaluate()(evaluate)
    client.query()(query)
    return client


app = make_client_app()
