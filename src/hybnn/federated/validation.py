"""What the server accepts from a client: every value of a reply is checked against what
the server knows before anything uses it.

- **Handshake** (:func:`handshake_reply`): ``partition-id`` an integer in 0..clients-1 that
  no other node holds (the first claim, in node order, wins: two nodes on one partition
  would give its data twice its weight); ``num-train`` and ``num-test`` integers in
  0..``max_examples`` and, where the server knows the partition sizes (it cuts the same task
  with the same seed), equal to them.
- **Sample counts** (``num-examples``): integers, at least 1 in training (0 is allowed in
  evaluation: an empty test partition), at most the node's handshake count and
  ``max_examples``. A count is the weight FedAvg gives an update: unbounded, it hands the
  global model to its sender.
- **Model states** (:func:`check_state`, after :func:`~hybnn.federated.encoding.decode`
  checked names, shapes, dtypes and finiteness): latent weights of binary layers within
  [-1, 1] (training clips them there; ``LATENT_TOLERANCE`` for rounding), and so a 1bit
  or xor scale (a decoded binary weight is ``scale · sign``); batch-norm running variances in
  (0, ``VAR_LIMIT``], running means within ``ACTIVATION_LIMIT``; every other float within
  ``FLOAT_LIMIT``. A negative variance makes every normalized output NaN. With ``--dp
  local`` a state is first projected into that domain (:func:`project`): the clients' noise
  leaves it, and projecting is post-processing.
- **Metrics** (:func:`check_metrics`): finite numbers or lists of them; accuracies in
  [0, 1] and losses >= 0 (-1 means "none", what a client sends for an empty set); no key
  naming a field the server writes in its ledger (``status``, ``reason``, ``node_id``...;
  dashes and underscores count as the same); ``partition-id`` that of the handshake.

Each check raises :class:`~hybnn.federated.encoding.UpdateError` with the reason: the
strategy drops the reply, writes the reason in the round ledger and carries on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from hybnn.federated.encoding import Layout, UpdateError, decode

LATENT_TOLERANCE = 1e-3  # latent weights are clipped to [-1, 1]; averages stay inside
ACTIVATION_LIMIT = 1e4  # |batch-norm input| assumed below this (a binary layer: its fan-in)
VAR_LIMIT = ACTIVATION_LIMIT**2
FLOAT_LIMIT = 1e6  # any other float tensor: batch-norm affines, learned scales, CNN weights

# Every field the strategy writes in a ledger row itself (handshake and rounds).
SERVER_KEYS = frozenset({
    "node_id", "partition", "status", "status_eval", "reason", "reason_eval",
    "train_bytes_down", "train_bytes_up", "eval_bytes_down", "eval_bytes_up",
    "train_sampled", "eval_sampled", "global_acc_local", "update_norm"})
ACCURACIES = ("train-acc", "local-acc", "acc")
LOSSES = ("train-loss", "local-loss", "loss")
HANDSHAKE_KEYS = ("partition-id", "num-train", "num-test")

Metrics = dict[str, Any]


def check_count(value: Any, name: str, low: int, high: int, why: str = "") -> int:
    """``value`` if it is an integer in ``low..high``; ``why`` says where ``high`` comes from."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UpdateError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise UpdateError(f"{name} = {value} is outside {low}..{high}{why}")
    return value


def check_metrics(content: RecordDict) -> Metrics:
    """The reply's one MetricRecord, every value finite and in range, no server key."""
    if len(content.metric_records) != 1:
        raise UpdateError("a reply needs exactly one MetricRecord")
    metrics = dict(next(iter(content.metric_records.values())))
    for key, value in metrics.items():
        if key.replace("-", "_") in SERVER_KEYS:
            raise UpdateError(f"metric {key!r} collides with a field of the server's ledger")
        values = value if isinstance(value, list) else [value]
        if not all(_finite(v) for v in values):
            raise UpdateError(f"metric {key!r} is not a finite number: {value!r}")
        if isinstance(value, list):
            if key in (*ACCURACIES, *LOSSES):
                raise UpdateError(f"metric {key!r} must be a number, got a list")
            continue
        if key in ACCURACIES and not (0.0 <= value <= 1.0 or value == -1):
            raise UpdateError(f"metric {key!r} = {value!r} is not an accuracy in [0, 1]")
        if key in LOSSES and not (value >= 0.0 or value == -1):
            raise UpdateError(f"metric {key!r} = {value!r} is a negative loss")
    return metrics


def _finite(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return isinstance(v, int) or math.isfinite(v)


def handshake_reply(content: RecordDict, clients: int, cap: int,
                    partitions: Sequence[Mapping[str, Any]] | None = None,
                    owners: Mapping[int, int] | None = None) -> dict[str, int]:
    """``partition-id``, ``num-train`` and ``num-test`` of a node's handshake reply;
    ``owners``: the node that already holds each claimed partition id."""
    metrics = check_metrics(content)
    missing = [k for k in HANDSHAKE_KEYS if k not in metrics]
    if missing:
        raise UpdateError(f"handshake without {', '.join(missing)}")
    pid = check_count(metrics["partition-id"], "partition-id", 0, clients - 1)
    if owners is not None and pid in owners:
        raise UpdateError(f"partition-id = {pid} is already claimed by node {owners[pid]}")
    info = {"partition-id": pid}
    for key, split in (("num-train", "train"), ("num-test", "test")):
        info[key] = check_count(metrics[key], key, 0, cap, " (max_examples)")
        if partitions is not None and info[key] != partitions[pid][split]:
            raise UpdateError(f"{key} = {info[key]} but partition {pid} holds "
                              f"{partitions[pid][split]} {split} samples")
    return info


def sample_count(metrics: Metrics, low: int, known: int | None, cap: int, what: str) -> int:
    """``num-examples`` of a reply, bounded by the node's handshake count ``known``
    (``what``: ``num-train`` or ``num-test``) and ``cap``."""
    if known is None:
        return check_count(metrics.get("num-examples"), "num-examples", low, cap,
                           " (max_examples; this node gave no handshake count)")
    return check_count(metrics.get("num-examples"), "num-examples", low, min(known, cap),
                       f" (this node's handshake {what} {known})")


def check_partition(metrics: Metrics, known: int | None, clients: int) -> None:
    """A reply's ``partition-id``, if any, is the node's own (its handshake's)."""
    if "partition-id" not in metrics:
        return
    pid = check_count(metrics["partition-id"], "partition-id", 0, clients - 1)
    if known is not None and pid != known:
        raise UpdateError(f"partition-id = {pid} but this node is partition {known}")


def read_arrays(content: RecordDict) -> dict[str, np.ndarray]:
    """The reply's one ArrayRecord as numpy arrays; unreadable bytes raise UpdateError."""
    if len(content.array_records) != 1:
        raise UpdateError("a reply needs exactly one ArrayRecord")
    record: ArrayRecord = next(iter(content.array_records.values()))
    arrays = {}
    for key, array in record.items():
        try:
            arrays[key] = array.numpy()
        except (ValueError, TypeError, EOFError, OSError) as exc:
            raise UpdateError(f"{key}: unreadable array ({exc})") from None
    return arrays


def train_update(content: RecordDict, layout: Layout, encoding: str,
                 reference: Mapping[str, np.ndarray] | None = None, projected: bool = False
                 ) -> tuple[dict[str, np.ndarray], Metrics]:
    """The float32 state and the checked metrics of a training reply; ``reference``: the
    global state sent for this round (``xor`` replies are coded against it); ``projected``:
    the state is first projected into the model's domain (a noised update, ``--dp local``)."""
    metrics = check_metrics(content)
    state = decode(read_arrays(content), layout, encoding, reference)
    if projected:
        state = project(state, layout)
    check_state(state, layout)
    return state, metrics


VAR_FLOOR = 1e-5  # batch norm's eps: a projected running variance stays above it


def project(state: dict[str, np.ndarray], layout: Layout) -> dict[str, np.ndarray]:
    """``state`` inside the domain :func:`check_state` accepts: latent weights in [-1, 1]
    (where clients clip them after every step), batch-norm running variances in
    [VAR_FLOOR, VAR_LIMIT], running means within ACTIVATION_LIMIT, other floats within
    FLOAT_LIMIT."""
    out = dict(state)
    for k, is_binary in zip(layout.keys, layout.binary, strict=True):
        low, high = ((-1.0, 1.0) if is_binary
                     else (VAR_FLOOR, VAR_LIMIT) if k.endswith("running_var")
                     else (-ACTIVATION_LIMIT, ACTIVATION_LIMIT) if k.endswith("running_mean")
                     else (-FLOAT_LIMIT, FLOAT_LIMIT))
        out[k] = np.clip(out[k], low, high).astype(np.float32)
    return out


def check_state(state: Mapping[str, np.ndarray], layout: Layout) -> None:
    """Every tensor of a decoded, finite ``state`` within its domain."""
    for key, is_binary in zip(layout.keys, layout.binary, strict=True):
        a = np.asarray(state[key], dtype=np.float64)
        if is_binary:
            _within(a, key, 1.0 + LATENT_TOLERANCE,
                    "latent weights, and so a 1bit or xor scale, are clipped to [-1, 1]")
        elif key.endswith("running_var"):
            if a.size and not (a > 0).all():
                raise UpdateError(f"{key}: variance {a.min():.3g} is not positive")
            _within(a, key, VAR_LIMIT, "batch-norm variance limit")
        elif key.endswith("running_mean"):
            _within(a, key, ACTIVATION_LIMIT, "batch-norm mean limit")
        else:
            _within(a, key, FLOAT_LIMIT, "float limit")


def _within(a: np.ndarray, key: str, limit: float, what: str) -> None:
    if a.size and np.abs(a).max() > limit:
        raise UpdateError(f"{key}: |value| {np.abs(a).max():.3g} above {limit:g} ({what})")
