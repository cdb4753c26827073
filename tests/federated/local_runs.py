"""Small federations on the digits data through the LocalGrid, for tests."""

from __future__ import annotations

from typing import Any

from flwr.app import Context, RecordDict

from hybnn.federated.client_app import make_client_app
from hybnn.federated.config import FedConfig
from hybnn.federated.local_grid import LocalGrid
from hybnn.federated.server_app import run_server


def fed_config(encoder_dir: str, **kw: Any) -> FedConfig:
    """3 clients, 2 rounds of 1 local epoch on digits 0v1, no client evaluation."""
    base = {"data": "digits", "task": "0v1", "clients": 3, "rounds": 2, "local_epochs": 1,
            "encoder": encoder_dir, "fraction_evaluate": 0.0, "node_wait": 5.0}
    return FedConfig(**{**base, **kw})


def run_local(cfg: FedConfig, mods=()) -> tuple[dict[str, Any], LocalGrid]:
    """(the federation log, the grid) of ``cfg`` run on a LocalGrid behind ``mods``."""
    grid = LocalGrid(make_client_app(mods), cfg.clients)
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    return run_server(grid, ctx, cfg), grid
