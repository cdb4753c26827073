"""FedHyBNN ServerApp: seed the global head, run the strategy, evaluate on held-out codes.

In a deployment the settings come from the Flower run config (``[tool.flwr.app.config]``
of ``flower_app/pyproject.toml``, overridden by ``flwr run --run-config``); in simulation
:func:`make_server_app` passes them directly. With ``out`` set, the server writes
``federation.json``: the round ledger (global accuracy, bytes, every client's status).
A federation in which no round aggregated a single valid update ends ``failed``.
With ``secagg`` the rounds run Flower's SecAgg+ workflow (:mod:`hybnn.federated.secagg`):
the server sees only the masked sum of the updates.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from hybnn.artifacts import atomic_write_json
from hybnn.errors import FingerprintMismatch
from hybnn.federated import task
from hybnn.federated.config import FedConfig
from hybnn.federated.encoded_strategy import (
    EncodedStrategy,
    FederationError,
    from_record,
    to_record,
)
from hybnn.federated.encoding import Layout, encode, load_state, model_state, payload_bytes
from hybnn.federated.secagg import SecAggFedAvg
from hybnn.federated.transport_scale import transport_bounds

FEDERATION_LOG = "federation.json"


def run_server(grid: Grid, context: Context, cfg: FedConfig | None = None,
               sink: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the whole federation; returns the federation log, also written to ``cfg.out``
    and copied into ``sink`` (even when the run fails)."""
    cfg = cfg or FedConfig.from_record(context.run_config)
    encoder = task.encoder_at(cfg.encoder, cfg.device) if cfg.model == "head" else None
    if encoder is not None:
        if cfg.encoder_fingerprint and cfg.encoder_fingerprint != encoder.fingerprint:
            raise FingerprintMismatch(
                f"the server's encoder {cfg.encoder} is {encoder.fingerprint[:12]}, "
                f"not the configured {cfg.encoder_fingerprint[:12]}")
        cfg = cfg.with_(encoder_fingerprint=encoder.fingerprint)
    # With node data the server holds none of it: its own test file if given, and the
    # clients' counts are bounded by their handshakes and max_examples alone.
    test_data = (task.server_dataset(cfg) if cfg.local_data.enabled
                 else task.task_splits(cfg.data, cfg.task)[1])
    test = task.as_tensors(cfg, test_data, encoder) if test_data is not None else None
    model = task.build_model(cfg, encoder)
    layout = Layout.of(model)
    initial = model_state(model, layout)
    # The server cuts the task as the clients do: their handshake counts must match.
    partitions = None if cfg.local_data.enabled else task.partition_sizes(cfg)
    bounds = transport_bounds(model, layout)
    strategy = EncodedStrategy(cfg, layout, partitions=partitions, bounds=bounds)
    evals: dict[int, dict[str, float]] = {}
    secure: SecAggFedAvg | None = None

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if test is None:
            evals[server_round] = {"time": time.perf_counter()}
            return None
        m = task.build_model(cfg, encoder)
        load_state(m, from_record(arrays))
        loss, acc = task.evaluate(m, test)
        evals[server_round] = {"global_acc": acc, "global_loss": loss,
                               "time": time.perf_counter()}
        return MetricRecord({"acc": acc, "loss": loss})

    def round_metrics(r: int) -> dict[str, float | None]:
        e, prev = evals.get(r, {}), evals.get(r - 1, {})
        secs = e["time"] - prev["time"] if "time" in e and "time" in prev else None
        return {"global_acc": e.get("global_acc"), "global_loss": e.get("global_loss"),
                "round_seconds": secs}

    log: dict[str, Any] = {
        "status": "running",
        "config": {**cfg.to_dict(), "strategy": cfg.resolved_strategy},
        "encoder_fingerprint": cfg.encoder_fingerprint,
        "partitions": partitions,
        "model_payload_bytes": {name: payload_bytes(encode(initial, layout, name))
                                for name in _encodings_for(cfg)},
    }
    if cfg.secagg.enabled:  # Flower's legacy path; the EncodedStrategy shakes hands and samples
        secure = SecAggFedAvg(cfg, layout, bounds, initial,
                              evaluate_fn, strategy,
                              max_weight=max(1, *(p["train"] for p in partitions))
                              if partitions else cfg.max_examples)
        log["secagg"] = secure.protocol()
    ledger = secure.ledger if secure else strategy.ledger
    try:
        log["handshake"] = strategy.handshake(grid, ConfigRecord(cfg.client_record()))
        if secure:
            secure.run(grid, context)
        else:
            strategy.start(grid=grid, initial_arrays=to_record(initial), num_rounds=cfg.rounds,
                           timeout=cfg.round_timeout,
                           train_config=ConfigRecord(cfg.client_record()),
                           evaluate_config=ConfigRecord(cfg.client_record()),
                           evaluate_fn=evaluate_fn)
        if not any(r.aggregated for r in ledger.rounds.values()):
            raise FederationError(
                f"no valid update in any of the {cfg.rounds} round(s): every sampled client "
                "failed, was rejected or went missing (see the round ledger)")
        log["status"] = "completed"
    except BaseException as exc:
        log.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        log["initial_acc"] = evals.get(0, {}).get("global_acc")
        log["rounds"] = ledger.rows(round_metrics)
        if cfg.out:
            atomic_write_json(Path(cfg.out) / FEDERATION_LOG, log)
        if sink is not None:
            sink.update(log)
    return log


def _encodings_for(cfg: FedConfig) -> tuple[str, ...]:
    return ("fp32",) if cfg.model == "fpcnn" else ("fp32", "1bit")


def make_server_app(cfg: FedConfig | None = None, sink: dict[str, Any] | None = None
                    ) -> ServerApp:
    """A ServerApp for ``cfg`` (None: read the run config); the log also lands in ``sink``."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, context, cfg, sink)

    return server


app = make_server_app()
