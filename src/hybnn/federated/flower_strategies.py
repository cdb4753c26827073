"""Flower's own strategies by name, and the grid through which the wrapper drives them.

:class:`hybnn.federated.encoded_strategy.EncodedStrategy` samples the nodes itself (seeded, with a
bounded wait), then lets the Flower strategy configure the round for exactly those nodes
through a :class:`SampledGrid`. So whatever a strategy does when it configures a round runs
unchanged: FedProx puts ``proximal-mu`` into the config, FedOpt (FedAdam, FedYogi,
FedAdagrad) and FedAvgM keep the current global arrays to compute the server step, and the
differential-privacy wrappers keep the arrays they clip against.

Strategies (``--strategy``), all from ``flwr.serverapp.strategy``:

- ``fedavg``, ``fedmedian``, ``trimmed`` (FedTrimmedAvg, ``--trim-beta``);
- ``fedprox``: FedAvg plus ``proximal-mu`` sent to the clients, which add the proximal term
  on the head's latent weights (:class:`ProximalTerm`);
- ``fedavgm`` (``--server-momentum``, ``--server-lr``); ``fedadam``, ``fedyogi``,
  ``fedadagrad`` (``--server-lr`` = eta; eta_l is only logged by Flower);
- ``krum``, ``multikrum``, ``bulyan``: robust to ``--hostile`` f clients per round (MultiKrum
  averages the ``sampled - f`` best-scored updates; Bulyan needs ``4f + 3`` updates).

and hybnn's own ``scaffold`` (:mod:`hybnn.federated.scaffold`: FedAvg plus control variates).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)
from torch import nn

from hybnn.federated.config import FedConfig
from hybnn.federated.scaffold import Scaffold
from hybnn.hooks import Callback

DEFAULT_ETA = 0.1  # FedOpt's server learning rate when --server-lr is 0 (FedAdam's default)


def flower_strategy(cfg: FedConfig, weighted_by_key: str = "num-examples") -> Strategy:
    """The Flower strategy named by ``cfg.strategy``, configured to take every node it is
    offered (the wrapper has sampled them already); ``weighted_by_key``: the reply metric
    FedAvg weights an update by."""
    common: dict[str, Any] = {"fraction_train": 1.0, "fraction_evaluate": 1.0,
                              "min_train_nodes": 1, "min_evaluate_nodes": 1,
                              "min_available_nodes": 1, "weighted_by_key": weighted_by_key}
    name, f = cfg.resolved_strategy, cfg.robust.hostile
    eta = cfg.server_lr or DEFAULT_ETA
    if name == "fedavg":
        return FedAvg(**common)
    if name == "fedprox":
        return FedProx(**common, proximal_mu=cfg.proximal_mu)
    if name == "fedavgm":
        return FedAvgM(**common, server_learning_rate=cfg.server_lr or 1.0,
                       server_momentum=cfg.server_momentum)
    if name == "fedadam":
        return FedAdam(**common, eta=eta)
    if name == "fedyogi":
        return FedYogi(**common, eta=eta)
    if name == "fedadagrad":
        return FedAdagrad(**common, eta=eta)
    if name == "fedmedian":
        return FedMedian(**common)
    if name == "trimmed":
        return FedTrimmedAvg(**common, beta=cfg.robust.trim_beta)
    if name == "krum":
        return Krum(**common, num_malicious_nodes=f)
    if name == "multikrum":
        return MultiKrum(**common, num_malicious_nodes=f,
                         num_nodes_to_select=max(1, cfg.sampled_per_round - f))
    if name == "bulyan":
        return Bulyan(**common, num_malicious_nodes=f)
    if name == "scaffold":  # not in Flower: hybnn's, on FedAvg
        return Scaffold(**common, num_clients=cfg.clients, binary=cfg.encoding != "fp32")
    raise ValueError(f"unknown strategy {name!r}")


class SampledGrid(Grid):
    """A view of the real grid offering only the nodes already sampled for this round.

    A strategy's ``configure_train`` / ``configure_evaluate`` asks it for node ids and
    builds its messages; sending them is the wrapper's job, so nothing else is offered.
    """

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._nodes = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def set_run(self, run: Any) -> None:
        raise NotImplementedError("a SampledGrid only offers node ids")

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError("a SampledGrid only offers node ids")

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("a SampledGrid only offers node ids")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("a SampledGrid only offers node ids")

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        raise NotImplementedError("a SampledGrid only offers node ids")


class ProximalTerm(Callback):
    """FedProx's client side: adds (mu/2)·||w - w_global||² over every trainable parameter
    (a binary layer's latent weights included) to the local loss."""

    def __init__(self, mu: float) -> None:
        self.mu = float(mu)
        self.anchor: list[tuple[nn.Parameter, torch.Tensor]] = []

    def on_train_begin(self, model: nn.Module) -> None:
        self.anchor = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        if self.mu == 0 or not self.anchor:
            return None
        term = sum((p - w0).pow(2).sum() for p, w0 in self.anchor)
        return 0.5 * self.mu * term  # type: ignore[return-value]
