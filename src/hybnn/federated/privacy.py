"""Differential privacy on request (``--dp``): Flower's DP wrappers, client mods and
privacy accountant, wired to the federation's config.

Central DP (the server adds Gaussian noise to the mean of the clipped updates, stddev
``noise_multiplier · C / n`` for ``n`` sampled clients and clipping norm ``C``):

- ``server-fixed`` / ``server-adaptive``: the server clips every decoded update
  (``reply - global``, float32; for ``1bit`` the decoded ``scale · sign``) to ``C``;
- ``client-fixed`` / ``client-adaptive``: Flower's ``fixedclipping_mod`` /
  ``adaptiveclipping_mod`` clip on the client (the wrapper sends ``C`` in the config, key
  ``clipping_norm``; the server rejects an update above it). ``fp32`` only;
- adaptive clipping (Andrew et al. 2019) moves ``C`` each round toward the median update
  norm, from a noised count of clipped updates. Flower 1.41 moves it the wrong way (it
  feeds the *clipped* fraction into the paper's update, which takes the unclipped one: with
  every update clipped, ``C`` shrinks, round after round); :class:`ServerSideAdaptiveClipping`
  and :class:`ClientSideAdaptiveClipping` are Flower's wrappers with that step corrected.
  Flower has no accountant for adaptive clipping: the spent epsilon is not reported (None).
- fixed clipping is accounted by Flower's :class:`~flwr.serverapp.RdpAccountant`
  (client-level, add-or-remove-one neighbours, no sampling amplification): the cumulative
  (epsilon, ``dp_delta``) after every round goes into the round ledger. Its conditions are
  Flower's: FedAvg's mean with equal client weights (:data:`UNIFORM_WEIGHT`, so every
  central mode averages the updates unweighted) and no sampling amplification; the wrapper
  is told how many valid updates it averages (:func:`set_sample_size`), so a client that
  failed or was rejected leaves a correctly noised mean of the others.

Local DP (``local``): each client runs Flower's :class:`~flwr.clientapp.mod.LocalDpMod`:
clip its update to ``C``, add Gaussian noise of stddev ``2C · sqrt(2 ln(1.25/δ)) / ε``
(sensitivity ``2C``: any two clipped updates lie within 2C; the classical Gaussian
mechanism, an (ε, δ) guarantee per round for ε <= 1). The server composes those releases,
one per round per client, with the same RDP accountant (valid for any ε), and projects each
noisy reply into the model's domain before validating it (post-processing). ``fp32`` only.

**Coordinates.** Every mode clips and noises the update in transport coordinates
(:mod:`hybnn.federated.transport_scale`): batch-norm running means divided by the fan-in K
of the layer before them, running variances by K², everything else as it is. In raw
coordinates the running variances (~K) are 99.96 % of an update's squared norm: a clipping
norm that covers them lets noise of that size onto the latent weights in [-1, 1]. The
server's :class:`~hybnn.federated.encoded_strategy.EncodedStrategy` hands Flower's wrapper the
global model and the decoded updates scaled, and maps its aggregate back before the model
is used; on the client :func:`in_transport` shows Flower's mod the global model and the
trained reply scaled, and unscales what it returns (the wire carries plain float32 state,
so the server validates it as usual). ``--clipping-norm`` is a norm in these coordinates.

Every client mod is chosen per training message from the server's config
(:func:`client_dp_mod`), so the same ClientApp serves simulation and deployment. The noise
is Flower's, drawn from numpy's global generator and never seeded: a seed in results.json
would let anyone subtract it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp.mod import LocalDpMod, adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.serverapp import (
    GaussianPrivacyEvent,
    Grid,
    NeighboringRelation,
    PrivacyConfig,
    PrivacySpent,
    RdpAccountant,
    SamplingMethod,
)
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.serverapp.strategy.dp_adaptive_clipping import DifferentialPrivacyAdaptiveBase
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, KEY_NORM_BIT

from hybnn.federated.config import FedConfig
from hybnn.federated.encoding import UpdateError
from hybnn.federated.flower_strategies import flower_strategy
from hybnn.federated.transport_scale import scaled, unscaled

UNIFORM_WEIGHT = "uniform-weight"  # the reply metric (always 1) central DP's FedAvg weights by
CLIP_TOLERANCE = 1e-4  # relative: float32 rounding of a client's clip (update + global)


def accountant(cfg: FedConfig, population: int) -> RdpAccountant:
    """Flower's RDP accountant reporting epsilon at ``cfg.dp.delta``."""
    return RdpAccountant(PrivacyConfig(
        target_delta=cfg.dp.delta, population_size=population,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION))


def private_strategy(cfg: FedConfig) -> Strategy:
    """The Flower strategy of ``cfg.strategy`` inside the DP wrapper ``cfg.dp.mode`` asks for
    (the plain strategy with ``--dp none``)."""
    if not cfg.dp.enabled:
        return flower_strategy(cfg)
    if cfg.dp.mode == "local":
        return LocalDpAccounting(flower_strategy(cfg), cfg)
    inner = flower_strategy(cfg, weighted_by_key=UNIFORM_WEIGHT)
    z, c, k = cfg.dp.noise_multiplier, cfg.dp.clipping_norm, cfg.sampled_per_round
    if cfg.dp.mode == "server-fixed":
        return DifferentialPrivacyServerSideFixedClipping(
            inner, z, c, k, accountant=accountant(cfg, cfg.clients))
    if cfg.dp.mode == "client-fixed":
        return DifferentialPrivacyClientSideFixedClipping(
            inner, z, c, k, accountant=accountant(cfg, cfg.clients))
    if cfg.dp.mode == "server-adaptive":
        return ServerSideAdaptiveClipping(inner, z, k, initial_clipping_norm=c)
    if cfg.dp.mode == "client-adaptive":
        return ClientSideAdaptiveClipping(inner, z, k, initial_clipping_norm=c)
    raise ValueError(f"unknown --dp {cfg.dp.mode!r}")


def _toward_the_quantile(wrapper: DifferentialPrivacyAdaptiveBase,
                         clipped_fraction: float) -> None:
    """Andrew et al.'s step, C <- C·exp(-lr·(unclipped fraction - target unclipped)), with
    Flower's target of *clipped* updates q: C grows when more than q were clipped."""
    wrapper.clipping_norm *= math.exp(
        wrapper.clip_norm_lr * (clipped_fraction - wrapper.target_clipped_quantile))


class ServerSideAdaptiveClipping(DifferentialPrivacyServerSideAdaptiveClipping):
    """Flower's wrapper, its clipping norm moved toward the target quantile."""

    def _geometric_update(self, clipped_fraction: float) -> None:
        _toward_the_quantile(self, clipped_fraction)


class ClientSideAdaptiveClipping(DifferentialPrivacyClientSideAdaptiveClipping):
    """Flower's wrapper, its clipping norm moved toward the target quantile."""

    def _geometric_update(self, clipped_fraction: float) -> None:
        _toward_the_quantile(self, clipped_fraction)


def spent(strategy: Strategy) -> PrivacySpent | None:
    """The privacy spent so far by ``strategy``'s accountant; None without one (no DP,
    adaptive clipping)."""
    report = getattr(strategy, "privacy_spent", None)
    return report() if callable(report) else None


def current_clipping_norm(strategy: Strategy) -> float | None:
    """The clipping norm a DP wrapper uses this round (it moves with adaptive clipping)."""
    norm = getattr(strategy, "clipping_norm", None)
    return float(norm) if isinstance(norm, int | float) else None


def set_sample_size(strategy: Strategy, k: int) -> None:
    """Calibrate a central DP wrapper to ``k`` clients: the nodes sampled when a round is
    configured (its accountant checks that count), the valid updates when it is aggregated
    (its noise, stddev z·C/k, is for the mean of k updates; without amplification the
    accounted cost of a round does not depend on k)."""
    if hasattr(strategy, "num_sampled_clients"):
        strategy.num_sampled_clients = k


def reply_metrics(cfg: FedConfig, n: int, metrics: dict[str, Any]) -> MetricRecord:
    """What the wrapped strategy sees of a valid reply: its sample count, plus the uniform
    weight of central DP and the norm bit of client-side adaptive clipping."""
    out: dict[str, Any] = {"num-examples": n}
    if cfg.dp.central:
        out[UNIFORM_WEIGHT] = 1
    if cfg.dp.mode == "client-adaptive":
        bit = metrics.get(KEY_NORM_BIT)
        if bit not in (0, 1):
            raise UpdateError(f"{KEY_NORM_BIT} must be 0 or 1 with --dp client-adaptive, "
                              f"got {bit!r}")
        out[KEY_NORM_BIT] = int(bit)
    return MetricRecord(out)


def update_norm(state: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray],
                bounds: Mapping[str, float]) -> float:
    """L2 norm of ``state - sent`` over every tensor in transport coordinates (what DP
    clips)."""
    a, b = scaled(state, bounds), scaled(sent, bounds)
    return math.sqrt(sum(float(np.sum((a[k] - b[k]) ** 2)) for k in b))


def sent_clipping_norm(config: ConfigRecord) -> float | None:
    """The clipping norm a client-side clipping wrapper put into a round's config."""
    norm = config.get(KEY_CLIPPING_NORM)
    return float(norm) if isinstance(norm, int | float) else None


def check_clipped(norm: float, bound: float) -> None:
    """A client-side clipped update must be within the clipping norm the server sent."""
    if norm > bound * (1 + CLIP_TOLERANCE) + 1e-6:
        raise UpdateError(f"update norm {norm:.4g} above the clipping norm {bound:.4g} "
                          "(the client did not clip)")


# -- clients -------------------------------------------------------------------------------
def local_noise_multiplier(cfg: FedConfig) -> float:
    """LocalDpMod's noise stddev over its sensitivity: sqrt(2 ln(1.25/δ)) / ε."""
    return math.sqrt(2 * math.log(1.25 / cfg.dp.delta)) / cfg.dp.local_epsilon


def client_mod(cfg: FedConfig) -> Mod | None:
    """The client mod ``cfg.dp.mode`` needs on training messages, or None."""
    if cfg.dp.mode == "client-fixed":
        return fixedclipping_mod
    if cfg.dp.mode == "client-adaptive":
        return adaptiveclipping_mod
    if cfg.dp.mode == "local":
        c = cfg.dp.clipping_norm
        return LocalDpMod(clipping_norm=c, sensitivity=2 * c, epsilon=cfg.dp.local_epsilon,
                          delta=cfg.dp.delta)
    return None


def client_dp_mod(msg: Message, context: Context, call_next: ClientAppCallable,
                  bounds: Callable[[FedConfig], Mapping[str, float]]) -> Message:
    """The ClientApp's training mod: Flower's DP mod for the run's ``--dp``, read from the
    server's config (one ConfigRecord, as Flower's DP mods expect), acting in transport
    coordinates (:func:`in_transport`, with ``bounds(cfg)``), or nothing."""
    records = list(msg.content.config_records.values())
    cfg = FedConfig.from_record(records[0]) if len(records) == 1 else None
    mod = client_mod(cfg) if cfg is not None else None
    if cfg is None or mod is None:
        return call_next(msg, context)
    return in_transport(mod, bounds(cfg))(msg, context, call_next)


def in_transport(mod: Mod, bounds: Mapping[str, float]) -> Mod:
    """``mod`` seeing the global model and the reply in transport coordinates (each tensor
    divided by its bound, :mod:`hybnn.federated.transport_scale`): it clips (and noises)
    the update there; the training in between and the reply on the wire are plain."""

    def rescale(msg: Message, to: Callable[..., dict[str, np.ndarray]]) -> Message:
        if not msg.has_error():
            for key, record in list(msg.content.array_records.items()):
                plain = {k: v.numpy() for k, v in record.items()}
                msg.content[key] = ArrayRecord({k: Array(v) for k, v in
                                                to(plain, bounds).items()})
        return msg

    def wrapped(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        def plain_inside(inner: Message, ctx: Context) -> Message:
            return rescale(call_next(rescale(inner, unscaled), ctx), scaled)

        return rescale(mod(rescale(msg, scaled), context, plain_inside), unscaled)

    return wrapped


# -- local DP's server side ----------------------------------------------------------------
class LocalDpAccounting(Strategy):
    """The server side of ``--dp local``: ``strategy`` unchanged, plus the accountant of the
    clients' noisy releases (one per round per sampled client: composed when the round is
    configured, whether or not the reply arrives)."""

    def __init__(self, strategy: Strategy, cfg: FedConfig) -> None:
        self.strategy = strategy
        self.clipping_norm = cfg.dp.clipping_norm
        self.noise_multiplier = local_noise_multiplier(cfg)
        self.accountant = accountant(cfg, 1)

    def privacy_spent(self) -> PrivacySpent:
        return self.accountant.get_privacy_spent()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        if messages:
            self.accountant.compose(GaussianPrivacyEvent(self.noise_multiplier, 1, 1))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()
