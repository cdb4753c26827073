"""The range of every numeric setting of every command, in one table (no torch import).

:data:`LIMITS` gives each setting (a field of an option or config dataclass, by name) the
values hybnn accepts; :func:`check_settings` refuses anything else before any data is read
or any tensor allocated, and ``hybnn CMD --help`` prints each range beside its flag. The
caps sit far above every recipe hybnn ships (the paper's head: 200 -> 128 -> 2, 100 epochs)
and below what would run for days or ask for more memory than a machine has: before them,
``--hidden 1000000000`` asked torch for 800 GB and ``--seed 99999999999999999999`` ended in
a traceback. Widths, bits and classes share the caps of the artifacts a run writes
(:data:`hybnn.data.limits.MAX_CONFIG_VALUE`), so whatever trains can be loaded again.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hybnn.data.limits import MAX_CONFIG_LIST, MAX_CONFIG_VALUE
from hybnn.errors import DataError

MAX_SEED = 2**32 - 1  # numpy's and torch's seeds alike
MAX_EPOCHS = 10_000  # epochs, rounds, local epochs of every command
MAX_CLIENTS = 1_000  # federated clients (each a process or a Ray actor)
MAX_WIDTH = MAX_CONFIG_VALUE  # a hidden width, latent bits, calibration images
MAX_WIDTHS = MAX_CONFIG_LIST  # hidden widths (layers) of one head, seeds of one run
# Binary weights between a head's layers (in·h1 + h1·h2 + ... + hk·out): 1 GiB of float32
# latent weights, about 10,000 times the paper's head (25,856).
MAX_HEAD_WEIGHTS = 2**28
# The settings that are hidden widths of a BNN head (checked together by check_head).
HEAD_WIDTHS = ("hidden", "hidden_multiclass")
# Devices a run may ask torch for (torch also knows meta, xla, ...: nothing to train on).
DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:\d{1,2})?")


@dataclass(frozen=True)
class Limit:
    """Values ``low..high`` (ends excluded where ``open_low``/``open_high``); ``integer``:
    int only. A list setting holds at most :data:`MAX_WIDTHS` such values."""

    low: float
    high: float
    integer: bool = True
    open_low: bool = False
    open_high: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        # NaN fails every comparison, so it is refused here too.
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return bool(above and below)

    def describe(self) -> str:
        """``an integer in 1..10,000``, ``a number in (0, 1]``."""
        if self.integer:
            return f"an integer in {self.low:,}..{self.high:,}"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"a number in {left}{_number_text(self.low)}, {_number_text(self.high)}{right}"

    def short(self) -> str:
        """The range for a flag's help: ``1..10,000``, ``(0, 1]``."""
        return self.describe().split(" in ", 1)[1]


def _number_text(x: float) -> str:
    """``0.5``, ``604,800``, ``1e9``."""
    if x != int(x):
        return f"{x:g}"
    return f"{int(x):,}" if x < 1e7 else f"{x:.0e}".replace("e+0", "e").replace("e+", "e")


def _number(low: float, high: float, open_low: bool = False, open_high: bool = False) -> Limit:
    return Limit(low, high, integer=False, open_low=open_low, open_high=open_high)


_EPOCHS = Limit(1, MAX_EPOCHS)
_SEED = Limit(0, MAX_SEED)
_WIDTH = Limit(1, MAX_WIDTH)
_BATCH = Limit(1, 65_536)
_SAMPLES = Limit(1, 10**9)
_RATE = _number(0, 10, open_low=True)  # a learning rate
_WEIGHT = _number(0, 1e6)  # a loss weight, a penalty
_POSITIVE = _number(0, 1e6, open_low=True)
_NOISE = _number(0, 0.5, open_high=True)  # a bit-flip probability
_SECONDS = _number(0, 7 * 24 * 3600, open_low=True)  # a timeout: up to a week

# Every numeric setting, by field name (a list setting: each of its values). A key
# ``Class.field`` overrides ``field`` for that dataclass alone.
LIMITS: dict[str, Limit] = {
    # sizes of models and data
    "latent_bits": _WIDTH, "hidden": _WIDTH, "hidden_multiclass": _WIDTH,
    "width": Limit(1, 1024),  # distilled encoder: width, 2x, 4x filters; ResNet: up to 8x
    "step": Limit(1, 2), "image_size": Limit(8, 1024), "workers": Limit(0, 64),
    "batch_size": _BATCH,
    "calibration_samples": Limit(1, MAX_WIDTH), "agreement_samples": Limit(0, MAX_WIDTH),
    "VaeStage.samples": _SAMPLES, "max_train": _SAMPLES, "max_examples": _SAMPLES,
    "generator_bits": Limit(1, 8),
    "threads": Limit(1, 256),
    # how long
    "epochs": _EPOCHS, "vae_epochs": _EPOCHS, "head_epochs": _EPOCHS,
    "local_epochs": _EPOCHS, "pretrain_epochs": _EPOCHS, "rounds": _EPOCHS,
    "round_timeout": _SECONDS, "node_wait": _SECONDS,
    # randomness
    "seed": _SEED, "seeds": _SEED, "calibration_seed": _SEED,
    # optimisation
    "lr": _RATE, "binary_lr": _RATE, "float_lr": _RATE,
    "FedConfig.lr": _number(0, 10), "server_lr": _number(0, 10),  # 0: the default
    "weight_decay": _number(0, 10), "server_momentum": _number(0, 1, open_high=True),
    "code_noise": _NOISE,
    # losses and augmentation
    "beta": _WEIGHT, "contrastive": _WEIGHT,
    "tau": _POSITIVE, "temperature": _POSITIVE, "ewc_lambda": _number(0, 1e9),
    "shift": Limit(0, 64),
    "rotation": _number(0, 180), "zoom": _number(0, 0.5),
    # continual learning
    "memory_fraction": _number(0, 1, open_low=True),
    "local_test": _number(0, 1, open_low=True, open_high=True),
    "generator_temperature": _POSITIVE, "generator_samples": _number(0, 100, open_low=True),
    # federated learning
    "clients": Limit(1, MAX_CLIENTS), "min_clients": Limit(1, MAX_CLIENTS),
    "nodes": Limit(1, MAX_CLIENTS),
    "hostile": Limit(0, MAX_CLIENTS - 1), "classes_per_client": Limit(1, MAX_WIDTH),
    "SecAggConfig.shares": Limit(1, MAX_CLIENTS),
    "SecAggConfig.threshold": Limit(1, MAX_CLIENTS),
    "alpha": _POSITIVE, "trim_beta": _number(0, 0.5, open_high=True),
    "proximal_mu": _WEIGHT, "fraction": _number(0, 1, open_low=True),
    "restricted_alpha": _number(0, 1), "calibration_tau": _WEIGHT,
    "fraction_evaluate": _number(0, 1), "noise_multiplier": _WEIGHT,
    "clipping_norm": _POSITIVE,
    "PrivacyConfig.delta": _number(0, 1, open_low=True, open_high=True),
    "local_epsilon": _POSITIVE, "SecAggConfig.clip": _POSITIVE,
}


def limit_of(cls: type, name: str) -> Limit | None:
    """The limit of field ``name`` of the dataclass ``cls``, if it has one."""
    return LIMITS.get(f"{cls.__name__}.{name}", LIMITS.get(name))


def flag_of(f: dataclasses.Field[Any]) -> str:
    """The command-line flag of a settings field (``--batch-size``, or its own ``flag``)."""
    return f.metadata.get("flag") or f"--{f.name.replace('_', '-')}"


def check_settings(settings: Any) -> None:
    """Refuse any field of the dataclass ``settings`` (nested ones included) outside its
    :data:`LIMITS` entry, and a ``device`` torch cannot train on; ``None`` means a default."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_settings(value)
        elif f.name == "device":
            check_device(value, flag_of(f))
        elif f.name in HEAD_WIDTHS:  # a string ("128,64", FedConfig) is its owner's to parse
            if isinstance(value, list | tuple):
                check_head(value, flag_of(f))
            elif value is not None and not isinstance(value, str):
                raise DataError(f"{flag_of(f)} must be a list of widths, got {value!r}")
        elif (limit := limit_of(type(settings), f.name)) is not None and value is not None:
            if isinstance(value, list | tuple):
                check_values(value, limit, flag_of(f))
            elif not limit.accepts(value):
                raise DataError(f"{flag_of(f)} must be {limit.describe()}, got {value!r}")


def check_values(values: Sequence[Any], limit: Limit, flag: str) -> None:
    """A list setting: at most :data:`MAX_WIDTHS` values, each within ``limit``."""
    if len(values) > MAX_WIDTHS:
        raise DataError(f"{flag} takes at most {MAX_WIDTHS} values, got {len(values)}")
    bad = [v for v in values if not limit.accepts(v)]
    if bad:
        raise DataError(f"{flag} values must each be {limit.describe()}, got {bad[0]!r}")


def check_device(name: Any, flag: str = "--device") -> None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``: the devices a run can train on."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise DataError(f"{flag} must be cpu, cuda, cuda:N or mps, got {name!r}")


def check_head(widths: Sequence[int], flag: str = "--hidden", in_bits: int | None = None,
               classes: int | None = None) -> None:
    """Hidden widths of a BNN head within :data:`LIMITS`, and the head's binary weights
    (between the hidden layers, and from ``in_bits`` / to ``classes`` where known) within
    :data:`MAX_HEAD_WEIGHTS`."""
    check_values(widths, LIMITS["hidden"], flag)
    sizes = [n for n in (in_bits, *widths, classes) if n is not None]
    weights = sum(a * b for a, b in itertools.pairwise(sizes))
    if weights > MAX_HEAD_WEIGHTS:
        raise DataError(f"{flag} {' '.join(map(str, widths))} makes a head of {weights:,} "
                        f"binary weights, above the limit of {MAX_HEAD_WEIGHTS:,} "
                        "(hybnn.pipeline.limits)")
