"""The settings of a federated run, shared by the server, the clients and the commands.

The server is the single source of truth: it sends every field a client needs in the
ConfigRecord of each round (:meth:`FedConfig.to_record`). A client adds only what is its
own: its partition id (node config ``partition-id`` / ``num-partitions``) and, optionally,
the path of its local encoder (node config ``encoder``). In a deployment the server reads
its config from the Flower run config, whose keys are the field names with dashes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

from hybnn.errors import DataError
from hybnn.models.names import PAPER_MODELS, spec
from hybnn.pipeline.config import scheduled_lr
from hybnn.pipeline.limits import check_head, check_settings
from hybnn.settings import flatten, setting, unflatten

# Quiet, offline, loopback-only Flower and Ray, for simulations and deployments alike.
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}
# Flower's strategies (flwr.serverapp.strategy), by name; see hybnn.federated.flower_strategies
STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedmedian",
              "trimmed", "krum", "multikrum", "bulyan",
              "scaffold")  # hybnn's own: hybnn.federated.scaffold
SKEW_LOSSES = ("none", "fedrs", "fedlc")  # client losses for label skew, hybnn.federated.skew
STRATEGY_CHOICES = ("auto", *STRATEGIES)  # auto: FedConfig.resolved_strategy
ROBUST = ("fedmedian", "trimmed", "krum", "multikrum", "bulyan")  # for hostile clients
ENCODINGS = ("fp32", "1bit", "xor")  # see hybnn.federated.encoding
SCHEMES = ("iid", "dirichlet", "classes")  # see hybnn.federated.partition
# Differential privacy (--dp), see hybnn.federated.privacy: central DP (the server adds
# the noise, clipping on the server or on the clients, a fixed or an adaptive norm) or local
# DP (every client noises its own update).
DP_MODES = ("none", "server-fixed", "client-fixed", "server-adaptive", "client-adaptive",
            "local")
CENTRAL_DP = ("server-fixed", "client-fixed", "server-adaptive", "client-adaptive")
CLIENT_DP = ("client-fixed", "client-adaptive", "local")  # the client changes its update
MEAN_STRATEGIES = ("fedavg", "fedprox")  # FedAvg's aggregate_train: what central DP needs


# Settings only the server reads: kept out of the config sent to clients every round
# (min-clients stays: a client checks it against its clients when it rebuilds the config).
SERVER_ONLY = frozenset({"strategy", "trim-beta", "proximal-mu", "server-momentum", "server-lr",
                         "hostile", "fraction", "fraction-evaluate",
                         "secagg-shares", "secagg-threshold",
                         "round-timeout", "node-wait", "out", "server-test"})
# Settings a client reads only when the federation runs on node data (left at their
# defaults, they are not sent: every byte of the config travels with every message).
NODE_DATA_ONLY = frozenset({"node-data", "labels", "label-names", "local-test"})
# ... and settings a client reads only under a --skew-loss, sent only then for that reason
SKEW_ONLY = frozenset({"skew-loss", "restricted-alpha", "calibration-tau"})
SECAGG_STRATEGIES = ("fedavg", "fedprox")  # a masked sum admits no per-update rule


def _refuse_failed(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise DataError(message)


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy.

    Central or local DP on Flower's wrappers and mods: :mod:`hybnn.federated.privacy`.
    """

    mode: str = setting("none", "differential privacy: central (server-fixed, client-fixed, "
                        "server-adaptive, client-adaptive: where the update is clipped, and "
                        "whether the norm adapts) or local (each client noises its update)",
                        flag="--dp", choices=DP_MODES)
    noise_multiplier: float = setting(1.0, "central DP: Gaussian noise stddev / clipping norm "
                                      "(on the sum of the clipped updates)")
    clipping_norm: float = setting(3.0, "DP: L2 bound of a client's update in transport "
                                   "coordinates (batch-norm running means / fan-in K, "
                                   "variances / K²; the initial bound with adaptive "
                                   "clipping); about the median fp32 update of the default "
                                   "head without DP (docs/federated.md)")
    delta: float = setting(1e-5, "DP: the delta of the reported epsilon and of --dp local",
                           flag="--dp-delta")
    local_epsilon: float = setting(1.0, "--dp local: each client's epsilon per round "
                                   "(Flower's LocalDpMod)")

    def __post_init__(self) -> None:
        # NaN fails every comparison, so these also refuse NaN.
        _refuse_failed([
            (self.mode in DP_MODES, f"--dp must be one of {', '.join(DP_MODES)}"),
            (0.0 <= self.noise_multiplier < math.inf,
             "--noise-multiplier must be a finite number >= 0"),
            (0.0 < self.clipping_norm < math.inf, "--clipping-norm must be a finite number > 0"),
            (0.0 < self.delta < 1.0, "--dp-delta must be in (0, 1)"),
            (0.0 < self.local_epsilon < math.inf, "--local-epsilon must be a finite number > 0"),
            (self.mode not in CENTRAL_DP or self.noise_multiplier > 0,
             f"--dp {self.mode} needs --noise-multiplier > 0 (without noise there is no "
             "privacy)"),
        ])

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def central(self) -> bool:
        """The server adds the noise (to the sum of the clipped updates)."""
        return self.mode in CENTRAL_DP

    @property
    def on_client(self) -> bool:
        """The client changes its own update (clips it, or noises it)."""
        return self.mode in CLIENT_DP


@dataclass(frozen=True)
class SecAggConfig:
    """Secure aggregation (Flower's SecAgg+).

    The server side and the quantization: :mod:`hybnn.federated.secagg`.
    """

    enabled: bool = setting(False, "secure aggregation (Flower's SecAgg+): the server sees "
                            "only the masked sum of the updates, never one client's; fedavg "
                            "or fedprox, >= 3 clients, no per-update validation",
                            flag="--secagg")
    shares: int = setting(3, "--secagg: each client's secrets are split into this many "
                          "shares, one per neighbour (itself included); also the fewest "
                          "clients sampled per round", flag="--secagg-shares")
    threshold: int = setting(2, "--secagg: shares that rebuild a secret: the masks of up to "
                             "shares - threshold dropped neighbours can be removed; fewer "
                             "colluding clients learn nothing", flag="--secagg-threshold")
    clip: float = setting(8.0, "--secagg: quantizer range [-clip, clip] (2^22 levels) after "
                          "batch-norm running statistics are divided by their bound (fan-in, "
                          "fan-in²); a client refuses to send a value outside it",
                          flag="--secagg-clip")

    def __post_init__(self) -> None:
        if self.enabled:
            _refuse_failed([
                (self.shares >= 3, "--secagg-shares must be >= 3"),
                (2 <= self.threshold < self.shares,
                 "--secagg-threshold must be in 2..--secagg-shares - 1"),
                (0.0 < self.clip < math.inf, "--secagg-clip must be a finite number > 0"),
            ])


@dataclass(frozen=True)
class RobustConfig:
    """Robust aggregation (trimmed mean, Krum, Bulyan)."""

    hostile: int = setting(0, "krum, multikrum, bulyan: how many hostile clients per round "
                           "to tolerate (f)")
    trim_beta: float = setting(0.2, "fraction cut from each tail by --strategy trimmed")


@dataclass(frozen=True)
class LocalDataConfig:
    """Node-local data: each node trains on its own file, the server holds none."""

    enabled: bool = setting(False, "every node reads its own data file (its node config "
                            "'data'), not a partition of --data", flag="--node-data", cli=False)
    labels: str = setting("", "with node data: the federation's label space, the original "
                          "labels comma separated (e.g. 3,5,7); a node holding others is "
                          "refused (default with --node-data: every label the files hold)")
    label_names: str = setting("", "with node data: a name per label of --labels, comma "
                               "separated, in that order; a node's image folder may name its "
                               "class folders by them (else by the label, e.g. 3)")
    local_test: float = setting(0.2, "with node data: the fraction of each node's file it "
                                "holds out as its own test set (stratified, --seed)")
    server_test: str = setting("", "with node data: a data file the server evaluates the "
                               "global model on (default: none, the clients' own test sets "
                               "report)")

    def __post_init__(self) -> None:
        if self.enabled:
            self.named_labels()
            if not 0.0 < self.local_test < 1.0:
                raise DataError(f"local test fraction must be in (0, 1), got {self.local_test}")

    def label_list(self) -> list[int]:
        """The federation's labels (``labels``), in output order."""
        try:
            labels = [int(v) for v in self.labels.split(",") if v.strip()]
        except ValueError:
            raise DataError(f"labels must be integers, comma separated, got {self.labels!r}"
                            ) from None
        if len(labels) < 2 or len(set(labels)) != len(labels) or min(labels) < 0:
            raise DataError(f"labels must be at least two distinct integers >= 0, got "
                            f"{self.labels!r}")
        return labels

    def named_labels(self) -> dict[str, int]:
        """Each of ``label_names`` -> its label (empty without names)."""
        labels = self.label_list()
        if not self.label_names:
            return {}
        names = [n.strip() for n in self.label_names.split(",")]
        if len(names) != len(labels) or len(set(names)) != len(names) or not all(names):
            raise DataError(f"label names must be {len(labels)} distinct names, one per label "
                            f"of {self.labels!r}, comma separated; got {self.label_names!r}")
        return dict(zip(names, labels, strict=True))


@dataclass(frozen=True)
class FedConfig:
    data: str = setting("mnist-5k", "data source")
    task: str = setting("0v1", "all, or a pair such as 0v1")
    model: str = setting("head", "head: BNN head on codes; bcnn/fpcnn: FedAvg of the whole CNN",
                         choices=PAPER_MODELS)
    clients: int = setting(3, "number of clients (SuperNodes)")
    rounds: int = setting(20, "federated rounds")
    local_epochs: int = setting(5, "local epochs per round")
    partition: str = setting("iid", "iid, dirichlet (see --alpha) or classes "
                             "(see --classes-per-client)", choices=SCHEMES)
    alpha: float = setting(0.5, "Dirichlet alpha")
    classes_per_client: int = setting(1, "classes per client (--partition classes)")
    encoding: str = setting("fp32", "fp32: latent weights; 1bit: packed signs + per-tensor "
                            "scales; xor: 1bit down, up only the signs that flipped and "
                            "8-bit batch norm", choices=ENCODINGS)
    strategy: str = setting("auto", "aggregation rule; auto: the measured pick, fedavg "
                            "(BENCHMARKS.md, federated-default)",
                            choices=STRATEGY_CHOICES)
    skew_loss: str = setting("none", "client loss for label skew: fedrs (restricted softmax: "
                             "the logits of classes a client lacks x --restricted-alpha) or "
                             "fedlc (logits calibrated by the client's label counts, "
                             "--calibration-tau)", choices=SKEW_LOSSES)
    restricted_alpha: float = setting(0.5, "--skew-loss fedrs: scale of the logit of a class "
                                      "the client lacks")
    calibration_tau: float = setting(1.0, "--skew-loss fedlc: tau of the calibration "
                                     "tau·n_c^(-1/4)")
    proximal_mu: float = setting(0.1, "--strategy fedprox: weight mu of the proximal term "
                                 "(mu/2)·||w - w_global||² every client adds to its loss")
    server_momentum: float = setting(0.9, "--strategy fedavgm: server momentum")
    server_lr: float = setting(0.0, "server learning rate: fedavgm's (0: 1.0), fedadam/fedyogi/"
                               "fedadagrad's eta (0: 0.1)")
    robust: RobustConfig = setting(factory=RobustConfig)
    secagg: SecAggConfig = setting(factory=SecAggConfig)
    dp: PrivacyConfig = setting(factory=PrivacyConfig)
    fraction: float = setting(1.0, "fraction of clients sampled for training each round")
    fraction_evaluate: float = setting(1.0, "fraction asked to evaluate the global model "
                                       "on their own data")
    min_clients: int = setting(2, "nodes needed to start a round and valid updates to "
                               "aggregate (capped at --clients)")
    seed: int = setting(0, "random seed")
    lr: float = setting(0.0, "learning rate (0: the model's default, 1e-2 binary, 1e-3 float)")
    batch_size: int = setting(64, "local batch size")
    hidden: str = setting("128", "BNN head hidden widths, comma separated")
    prep: str = setting("centered", "CNN input preparation", choices=("unit", "centered"))
    encoder: str = setting("", "encoder directory (default: pretrain one); clients may "
                           "override it locally")
    encoder_fingerprint: str = setting("", "what every client's encoder must hash to", cli=False)
    local_data: LocalDataConfig = setting(factory=LocalDataConfig)
    round_timeout: float = setting(120.0, "seconds to wait for replies in a round")
    node_wait: float = setting(60.0, "seconds to wait for --min-clients nodes before a round")
    max_examples: int = setting(1_000_000, "most samples a client may claim (its FedAvg weight)")
    device: str = setting("cpu", "torch device of every client: cpu, cuda, cuda:1, ...")
    out: str = setting("", "directory for federation.json (server side)", cli=False)

    def __post_init__(self) -> None:
        _refuse_failed([
            (self.model in PAPER_MODELS, f"--model must be one of {', '.join(PAPER_MODELS)}"),
            (self.encoding in ENCODINGS, f"--encoding must be one of {', '.join(ENCODINGS)}"),
            (self.strategy in STRATEGY_CHOICES,
             f"--strategy must be auto or one of {', '.join(STRATEGIES)}"),
            (self.skew_loss in SKEW_LOSSES,
             f"--skew-loss must be one of {', '.join(SKEW_LOSSES)}"),
            (self.partition in SCHEMES, f"--partition must be one of {', '.join(SCHEMES)}"),
            (self.clients >= 1, "--clients must be >= 1"),
            (self.rounds >= 1, "--rounds must be >= 1"),
            (self.local_epochs >= 1, "--local-epochs must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.classes_per_client >= 1, "--classes-per-client must be >= 1"),
            (self.seed >= 0, "--seed must be >= 0"),
            (self.max_examples >= 1, "max examples must be >= 1"),
            # NaN fails every comparison below, so these also refuse NaN.
            (0.0 <= self.lr < math.inf, "--lr must be a finite number >= 0 (0: the default)"),
            (0.0 < self.alpha < math.inf, "--alpha must be a finite number > 0"),
            (0.0 < self.fraction <= 1.0, "--fraction must be in (0, 1]"),
            (0.0 <= self.fraction_evaluate <= 1.0, "--fraction-evaluate must be in [0, 1]"),
            (1 <= self.min_clients <= self.clients, "--min-clients must be in 1..--clients"),
            (0.0 <= self.robust.trim_beta < 0.5, "trim beta must be in [0, 0.5)"),
            (0.0 <= self.proximal_mu < math.inf, "--proximal-mu must be a finite number >= 0"),
            (0.0 <= self.server_momentum < 1.0, "--server-momentum must be in [0, 1)"),
            (0.0 <= self.server_lr < math.inf, "--server-lr must be a finite number >= 0"),
            (0 <= self.robust.hostile < self.clients, "--hostile must be in 0..--clients - 1"),
            (0.0 < self.round_timeout < math.inf and 0.0 < self.node_wait < math.inf,
             "timeouts must be finite numbers of seconds > 0"),
            (not (self.model == "fpcnn" and self.encoding in ("1bit", "xor")),
             f"--encoding {self.encoding} needs binary weights; the float CNN has none "
             "(use fp32)"),
            (not self.local_data.enabled or self.model == "head",
             "node data trains the HyBNN head (--model head): the CNN baselines take a "
             "partition of --data"),
        ])
        if self.secagg.enabled:
            _refuse_failed(self._secagg_checks())
        _refuse_failed(self._dp_checks())  # after the checks they build on
        check_settings(self)  # the range of every setting (hybnn.pipeline.limits)
        check_head(self.hidden_widths(), "--hidden")

    def _secagg_checks(self) -> list[tuple[bool, str]]:
        """What secure aggregation needs of the rest of the run (its own settings check
        themselves, :class:`SecAggConfig`)."""
        return [
            (self.clients >= 3, "--secagg needs --clients >= 3 (of a sum of two "
             "updates, each client can subtract its own and read the other)"),
            (self.resolved_strategy in SECAGG_STRATEGIES, "--secagg aggregates a masked "
             f"sum: --strategy must be {' or '.join(SECAGG_STRATEGIES)}, not "
             f"{self.strategy}"),
            (self.secagg.shares <= self.clients, "--secagg-shares must be in 3..--clients"),
            # 1023 quantized updates (< 2^22 each) sum below the masks' modulus 2^32.
            (self.clients <= 1023, "--secagg sums at most 1023 updates: --clients must "
             "be <= 1023"),
            (self.encoding != "xor", "--secagg sums the updates as numbers: xor's coded "
             "sign flips cannot be summed (use fp32 or 1bit)"),
        ]

    def _dp_checks(self) -> list[tuple[bool, str]]:
        """What differential privacy needs of the rest of the run (its own settings check
        themselves, :class:`PrivacyConfig`)."""
        dp, k = self.dp.mode, self.sampled_per_round
        return [
            (not self.dp.central or self.resolved_strategy in MEAN_STRATEGIES,
             f"--dp {dp} calibrates its noise to the mean of the clipped updates: use "
             f"--strategy {' or '.join(MEAN_STRATEGIES)}, not {self.strategy}"),
            (not self.dp.on_client or self.encoding == "fp32",
             f"--dp {dp} clips the update on the client, which a 1-bit update does not "
             "survive (it would no longer be signs and a scale): use --encoding fp32"),
            # Flower's adaptive clipping also noises the count of clipped updates (stddev
            # k/20) and needs the update noise below twice that.
            (dp not in ("server-adaptive", "client-adaptive")
             or self.dp.noise_multiplier < k / 10,
             f"--dp {dp} with {k} clients per round needs --noise-multiplier < {k / 10:g} "
             f"(Flower's adaptive clipping noises the clipped count with stddev {k / 20:g})"),
        ]

    @property
    def sampled_per_round(self) -> int:
        """How many nodes a training round samples when all ``clients`` are connected."""
        return min(self.clients, max(int(self.clients * self.fraction), self.min_clients))

    @property
    def resolved_strategy(self) -> str:
        """The strategy that runs: ``strategy``, or for ``auto`` what the federated-default
        table (``bench/federated.py --only default``: FedAvg and the server optimisers on
        IID, Dirichlet 0.5 and 0.1, 3 seeds) picks for the BNN head, FedAvg with fp32 and
        with binary updates (1bit; xor, unmeasured there, sends the same signs); FedAvg too
        where a mean is required (secure aggregation, differential privacy) or the model is
        a whole CNN."""
        if self.strategy != "auto":
            return self.strategy
        return "fedavg"

    @property
    def min_nodes(self) -> int:
        """The fewest nodes a round samples: ``min_clients``, and under ``secagg`` at least
        ``secagg_shares`` (each client masks with a neighbourhood of that size)."""
        return (max(self.min_clients, self.secagg.shares) if self.secagg.enabled
                else self.min_clients)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr > 0 else spec(self.model).lr

    def round_lr(self, server_round: int) -> float:
        """Cosine decay over the rounds (constant within a round's local epochs)."""
        return scheduled_lr(self.learning_rate, server_round - 1, self.rounds)

    def hidden_widths(self) -> tuple[int, ...]:
        try:
            widths = tuple(int(h) for h in str(self.hidden).split(",") if h.strip())
        except ValueError:
            raise DataError(f"hidden widths must be integers, got {self.hidden!r}") from None
        return widths

    def to_dict(self) -> dict[str, Any]:
        """The settings as nested dicts (the groups as their own dicts), for reports."""
        return asdict(self)

    def to_record(self) -> dict[str, Any]:
        """Flat values for a Flower ConfigRecord or run config, keyed by flag name without
        dashes in front (``rounds``, ``dp``, ``noise-multiplier``, ``secagg-shares``): one
        key per setting, the groups flattened (:func:`hybnn.settings.flatten`)."""
        return flatten(self)

    def client_record(self) -> dict[str, Any]:
        """:meth:`to_record` without the server's own settings: what a client needs, sent
        with every message (a client rebuilds its FedConfig from it; the rest default)."""
        skip = SERVER_ONLY if self.local_data.enabled else SERVER_ONLY | NODE_DATA_ONLY
        if self.skew_loss == "none":
            skip = skip | SKEW_ONLY
        return {k: v for k, v in self.to_record().items() if k not in skip}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], strict: bool = False) -> FedConfig:
        """Build from flat values keyed as in :meth:`to_record` (a ConfigRecord, a Flower run
        config, or a dict such as ``{"dp": "local", "local-epsilon": 0.5}``). Unknown keys are
        ignored (a newer server may send more), or refused with ``strict``."""
        known = {k: v for k, v in record.items() if strict or k in _RECORD_KEYS}
        return cast(FedConfig, unflatten(cls, known, strict=strict, convert=_coerce))

    def with_(self, **changes: Any) -> FedConfig:
        """A copy with top-level settings or whole groups changed; a group's own settings
        change with :meth:`with_group` (``cfg.with_group("dp", mode="local")``)."""
        return replace(self, **changes)

    def with_group(self, group: str, **changes: Any) -> FedConfig:
        """A copy with settings of one group changed: ``dp``, ``secagg``, ``robust`` or
        ``local_data``."""
        if group not in GROUPS:
            raise ValueError(f"no settings group {group!r}; groups: {', '.join(GROUPS)}")
        return replace(self, **{group: replace(getattr(self, group), **changes)})


GROUPS = ("robust", "secagg", "dp", "local_data")


_RECORD_KEYS = frozenset(flatten(FedConfig()))


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        return bool(value)
    if kind is int:
        return int(value)
    if kind is float:
        return float(value)
    return str(value)
