"""`hybnn federate`: FedHyBNN in Flower's simulation engine on this machine.

The ServerApp and ClientApp objects run in-process through ``flwr.simulation.run_simulation``
(Ray backend, one CPU per virtual client): no SuperLink left behind, and the server's round
ledger comes back directly. Without ``encoder`` a VAE is pretrained on the source's training
split (all classes) first, as phase 1 of the centralized pipeline.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybnn.encoders.shipped import resolve
from hybnn.errors import DataError
from hybnn.federated.config import FLOWER_ENV, FedConfig
from hybnn.federated.encoded_strategy import FederationError


def ensure_encoder(cfg: FedConfig, out: Path, pretrain_epochs: int = 20,
                   progress: bool = False) -> FedConfig:
    """``cfg`` with an encoder: the given one, or one pretrained into ``out/encoder``."""
    if cfg.model != "head":
        return cfg
    if cfg.encoder:
        path = resolve(cfg.encoder)  # a directory, or a shipped name such as general
        if not path.is_dir():
            raise DataError(f"encoder directory not found: {path}")
        return cfg.with_(encoder=str(path.resolve()))
    from hybnn.data import load_source, train_test
    from hybnn.pipeline.config import PretrainConfig
    from hybnn.pipeline.pretrain import pretrain

    train, _ = train_test(load_source(cfg.data))
    target = out / "encoder"
    pretrain(train.x, target, PretrainConfig(epochs=pretrain_epochs, seed=cfg.seed,
                                                   device=cfg.device),
             {"source": cfg.data, "split": "train", "for": "hybnn federate"}, progress=progress)
    return cfg.with_(encoder=str(target.resolve()))


ENGINES = ("ray", "local")


def federate(
    cfg: FedConfig,
    out: str | os.PathLike[str],
    pretrain_epochs: int = 20,
    centralized: bool = True,
    mods: Sequence[Any] = (),
    num_cpus: float = 1.0,
    progress: bool = False,
    engine: str = "ray",
    node_data: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``cfg`` in Flower's simulation engine (``engine="ray"``) or on a
    :class:`~hybnn.federated.local_grid.LocalGrid` in this process (``"local"``: the same
    apps, sequential, no Ray); write and return results.json's content.

    ``mods`` are Flower client mods wrapped around every client (e.g. the fault injectors
    of :mod:`hybnn.federated.faults`). ``node_data``: node i trains on its own file
    ``node_data[i]`` (``cfg.local_data``), given as its node config ``data`` on either
    engine (Ray's virtual nodes get it from
    :func:`~hybnn.federated.client_app.node_data_mod`).
    """
    if engine not in ENGINES:
        raise DataError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    for k, v in FLOWER_ENV.items():  # explicit user settings win
        os.environ.setdefault(k, v)
    from flwr.simulation import run_simulation

    from hybnn.federated.client_app import make_client_app, node_data_mod
    from hybnn.federated.flower_logs import plain_flower_logs
    from hybnn.federated.report import build_results, centralized_baseline, write_report
    from hybnn.federated.server_app import make_server_app

    plain_flower_logs()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = ensure_encoder(cfg, out, pretrain_epochs, progress)
    cfg = cfg.with_(out=str(out.resolve()))
    sink: dict[str, Any] = {}
    t0 = time.perf_counter()
    if engine == "local":
        from hybnn.federated.local_grid import run_local

        with contextlib.suppress(FederationError):  # the sink says why; raised below
            run_local(cfg, mods, sink, node_data)
    else:
        if node_data:  # outermost, so every other mod sees the node's config
            mods = (node_data_mod(node_data), *mods)
        run_simulation(
            server_app=make_server_app(cfg, sink),
            client_app=make_client_app(mods),
            num_supernodes=cfg.clients,
            backend_config={"client_resources": {"num_cpus": num_cpus, "num_gpus": 0.0}},
        )
    seconds = time.perf_counter() - t0
    if sink.get("status") != "completed":
        raise FederationError(f"the federation did not complete: "
                              f"{sink.get('error') or 'the ServerApp stopped early'}")
    central = centralized_baseline(cfg) if centralized else None
    results = build_results(sink, central, {"runtime": "simulation" if engine == "ray"
                                            else "local grid", "seconds": seconds})
    write_report(out, results)
    return results
