"""Fault injection for drills and tests: Flower client mods that make one client misbehave.

Pass them to :func:`hybnn.federated.simulation.federate` (``mods=[...]``) or to
:func:`hybnn.federated.client_app.make_client_app`. Each acts only on the given partition
and, when ``rounds`` is given, only in those training rounds.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import numpy as np
from flwr.app import Array, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod

from hybnn.federated.strategy import ARRAYS, CONFIG


def _hit(msg: Message, context: Context, partition: int,
         rounds: Collection[int] | None) -> bool:
    if int(context.node_config.get("partition-id", -1)) != partition:
        return False
    if msg.metadata.message_type != MessageType.TRAIN:
        return False
    return rounds is None or int(msg.content[CONFIG]["server-round"]) in rounds


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
        record = reply.content[ARRAYS]
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
