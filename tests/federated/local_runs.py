"""The config of the tests' small federations on the digits data (run them with
:func:`hybnn.federated.local_grid.run_local`)."""

from __future__ import annotations

from typing import Any

from hybnn.federated.config import FedConfig


def settings(**kw: Any) -> FedConfig:
    """A FedConfig from settings named as their flags, underscores for dashes
    (``noise_multiplier=0.3``, ``secagg_shares=4``), whatever group they belong to."""
    return FedConfig.from_record({k.replace("_", "-"): v for k, v in kw.items()}, strict=True)


def fed_config(encoder_dir: str, **kw: Any) -> FedConfig:
    """3 clients, 2 rounds of 1 local epoch on digits 0v1, no client evaluation."""
    base = {"data": "digits", "task": "0v1", "clients": 3, "rounds": 2, "local_epochs": 1,
            "encoder": encoder_dir, "fraction_evaluate": 0.0, "node_wait": 5.0}
    return settings(**{**base, **kw})
