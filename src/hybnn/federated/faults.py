"""Fault injection for drills and tests: Flower client mods that make one client misbehave.

Pass them to :func:`hybnn.federated.simulation.federate` (``mods=[...]``) or to
:func:`hybnn.federated.client_app.make_client_app`. Each acts only on the given partition
and, when ``rounds`` is given, only in those rounds. The hostile ones (:func:`corrupt`,
:func:`poison`, :func:`tamper_metrics`) send what a malicious client could: the server must
drop their replies and carry on (see docs/hostile-inputs.md).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

import numpy as np
from flwr.app import Array, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod

from hybnn.federated import task
from hybnn.federated.config import FedConfig
from hybnn.federated.encoded_strategy import (
    ARRAYS,
    CONFIG,
    arrays_of,
    from_record,
    server_round,
    to_record,
)
from hybnn.federated.encoding import Layout, decode, downlink, encode

KINDS = (MessageType.TRAIN, MessageType.EVALUATE, MessageType.QUERY)


def _hit(msg: Message, context: Context, partition: int, rounds: Collection[int] | None,
         kind: str = MessageType.TRAIN) -> bool:
    if int(context.node_config.get("partition-id", -1)) != partition:
        return False
    if msg.metadata.message_type != kind:
        return False
    if rounds is None or kind == MessageType.QUERY:  # the handshake has no round
        return True
    return server_round(msg.content) in rounds


def _reply_state(msg: Message, reply: Message, context: Context
                 ) -> tuple[FedConfig, Layout, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(config, layout, global state received, decoded state replied) of a training reply."""
    cfg = FedConfig.from_record(msg.content[CONFIG])
    encoder = (task.encoder_at(str(context.node_config.get("encoder", "")) or cfg.encoder)
               if cfg.model == "head" else None)
    layout = Layout.of(task.build_model(cfg, encoder))
    received = decode(from_record(arrays_of(msg.content)), layout, downlink(cfg.encoding))
    return cfg, layout, received, decode(from_record(arrays_of(reply.content)), layout,
                                         cfg.encoding, received)


def crash(partition: int, rounds: Collection[int] | None = None) -> Mod:
    """The client raises during training (Flower turns it into an error reply)."""
    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if _hit(msg, context, partition, rounds):
            raise RuntimeError(f"injected crash on partition {partition}")
        return call_next(msg, context)
    return mod


def vanish(partition: int, seconds: float, rounds: Collection[int] | None = None) -> Mod:
    """The client goes silent for ``seconds`` (longer than the round timeout) then replies
    too late: the server must finish the round without it."""
    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if _hit(msg, context, partition, rounds):
            time.sleep(seconds)
        return call_next(msg, context)
    return mod


def corrupt(partition: int, kind: str = "nan", rounds: Collection[int] | None = None) -> Mod:
    """The client's update carries NaN (``nan``), inf (``inf``) or a truncated array
    (``shape``): the server must reject it."""
    if kind not in ("nan", "inf", "shape"):
        raise ValueError(f"unknown corruption {kind!r}; use nan, inf or shape")

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        if not _hit(msg, context, partition, rounds) or reply.has_error():
            return reply
        record = arrays_of(reply.content)
        key = next(k for k, a in record.items() if a.dtype.startswith("float"))
        a = record[key].numpy().copy()
        if kind == "shape":
            a = a.ravel()[:-1]
        else:
            a.ravel()[0] = np.nan if kind == "nan" else np.inf
        record[key] = Array(a)
        return reply
    return mod


def foreign_encoder(partition: int, encoder: str) -> Mod:
    """The node holds another encoder (its node config points at ``encoder``)."""
    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if int(context.node_config.get("partition-id", -1)) == partition:
            context.node_config["encoder"] = encoder
        return call_next(msg, context)
    return mod


def poison(partition: int, suffix: str, value: float, rounds: Collection[int] | None = None
           ) -> Mod:
    """The client's update has every tensor whose name ends with ``suffix`` filled with
    ``value``: finite, well formed, but outside the tensor's domain (e.g. ``running_var``
    = -1e6, or latent ``weight`` = 50 in fp32)."""
    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        if not _hit(msg, context, partition, rounds) or reply.has_error():
            return reply
        cfg, layout, received, state = _reply_state(msg, reply, context)
        hits = [k for k in layout.keys if k.endswith(suffix)]
        if not hits:
            raise ValueError(f"no tensor of the model ends with {suffix!r}")
        for k in hits:
            state[k] = np.full_like(state[k], value)
        reply.content[ARRAYS] = to_record(encode(state, layout, cfg.encoding, received))
        return reply
    return mod


def tamper_metrics(partition: int, values: Mapping[str, int | float],
                   kind: str = MessageType.TRAIN, rounds: Collection[int] | None = None
                   ) -> Mod:
    """The client's reply to a ``kind`` message (``train``, ``evaluate`` or ``query``, the
    handshake) carries ``values`` in its metrics, replacing or adding keys: e.g.
    ``{"num-examples": 10**15}`` in training, ``{"num-examples": inf}`` in evaluation,
    ``{"status": 1}`` or ``{"num-train": inf}`` at the handshake."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}; use {', '.join(KINDS)}")

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        if not _hit(msg, context, partition, rounds, kind) or reply.has_error():
            return reply
        record = next(iter(reply.content.metric_records.values()))
        for k, v in values.items():
            record[k] = v
        return reply
    return mod


ATTACKS = ("sign-flip", "random", "scaled")


def attack(partitions: Collection[int], kind: str, factor: float = 10.0,
           rounds: Collection[int] | None = None, seed: int = 0) -> Mod:
    """The clients ``partitions`` send well-formed hostile updates instead of their own:

    - ``sign-flip``: every binary weight's sign flipped, at the largest magnitude the
      domain allows (latent ``-sign(w)``, i.e. -1 or +1): the strongest attack on a BNN that
      stays inside every value's domain (at the honest clients' small magnitudes a minority
      flipping signs would not move the average's signs);
    - ``random``: binary latent weights drawn uniformly from [-1, 1] (seeded per round and
      client), the other tensors kept;
    - ``scaled``: the update scaled, ``g + factor · (w - g)`` for every tensor against the
      global model ``g`` the client received (out of the latent range for ``factor`` > 1,
      so the validating wrapper rejects it).
    """
    if kind not in ATTACKS:
        raise ValueError(f"unknown attack {kind!r}; use {', '.join(ATTACKS)}")
    hostile = {int(p) for p in partitions}

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        pid = int(context.node_config.get("partition-id", -1))
        if (pid not in hostile or msg.metadata.message_type != MessageType.TRAIN
                or reply.has_error()
                or (rounds is not None and server_round(msg.content) not in rounds)):
            return reply
        cfg, layout, sent, state = _reply_state(msg, reply, context)
        rng = np.random.default_rng([seed, pid, server_round(msg.content)])
        if kind == "scaled":
            state = {k: (sent[k] + factor * (state[k] - sent[k])).astype(np.float32)
                     for k in layout.keys}
        else:
            for k, is_binary in zip(layout.keys, layout.binary, strict=True):
                if is_binary:
                    state[k] = (np.where(state[k] >= 0, -1.0, 1.0) if kind == "sign-flip" else
                                rng.uniform(-1, 1, state[k].shape)).astype(np.float32)
        reply.content[ARRAYS] = to_record(encode(state, layout, cfg.encoding, sent))
        return reply
    return mod
