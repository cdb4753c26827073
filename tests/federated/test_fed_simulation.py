"""`hybnn federate` in Flower's simulation engine (Ray), and faults inside that runtime."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("ray", reason="the fed extra (flwr[simulation]) is not installed")

from hybnn.cli import main
from hybnn.federated import faults
from hybnn.federated.config import FedConfig
from hybnn.federated.simulation import federate
from hybnn.pipeline.config import PretrainConfig
from hybnn.pipeline.pretrain import pretrain

pytestmark = pytest.mark.slow


def test_federate_command_writes_results_plots_and_byte_counts(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["federate", "--data", "digits", "--task", "0v1", "--clients", "3",
               "--rounds", "2", "--local-epochs", "1", "--pretrain-epochs", "1",
               "--encoding", "1bit", "--seed", "3", "--out", str(out)])
    assert rc == 0
    assert "global accuracy" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["encoding"] == "1bit" and res["clients"] == 3
    assert isinstance(res["centralized_acc"], float)
    assert res["centralized"]["epochs"] == 2  # rounds x local epochs
    assert [r["round"] for r in res["rounds"]] == [1, 2]
    for r in res["rounds"]:
        assert isinstance(r["global_acc"], float)
        assert isinstance(r["bytes_up"], int) and isinstance(r["bytes_down"], int)
        assert 0 < r["bytes_up"] < 3 * 8000  # 1bit: ~5.3 kB of payload per client
        assert [c["status"] for c in r["clients"]] == ["ok"] * 3
    assert res["config"]["seed"] == 3 and res["seeds"]["partition"] == 3
    assert res["versions"]["flwr"] == "1.41.0"
    assert len(res["encoder_fingerprint"]) == 64
    assert (out / "encoder" / "meta.json").is_file()  # pretrained because no --encoder
    assert {"results.md", "accuracy.png", "bytes.png"} <= {p.name for p in out.iterdir()}
    assert "| round | global acc" in (out / "results.md").read_text()


def test_faults_inside_the_simulation_runtime(tmp_path, tiny_encoder):
    other = tmp_path / "other-encoder"
    pretrain(tiny_encoder[2], other, PretrainConfig(epochs=1, seed=1), {"source": "digits"},
             progress=False, plots=False)
    cfg = FedConfig(data="digits", task="0v1", clients=6, rounds=2, local_epochs=1,
                    encoder=str(tiny_encoder[0]), fraction_evaluate=0.0, min_clients=2,
                    round_timeout=30.0, node_wait=120.0)  # healthy replies: 1-10 s, loaded
    mods = [faults.crash(0, rounds={1}), faults.corrupt(1, "nan", rounds={1}),
            faults.foreign_encoder(2, str(other)), faults.vanish(3, 35.0, rounds={1})]
    res = federate(cfg, tmp_path / "run", centralized=False, mods=mods)
    assert res["status"] == "completed"
    refused = [h for h in res["handshake"] if h["status"] == "refused"]
    assert len(refused) == 1 and "same frozen encoder" in refused[0]["reason"]
    r1 = {c["partition"]: c for c in res["rounds"][0]["clients"]}
    assert r1[0]["status"] == "error" and "injected crash" in r1[0]["reason"]
    assert r1[1]["status"] == "rejected" and "NaN" in r1[1]["reason"]
    assert [c["status"] for c in res["rounds"][0]["clients"] if c["partition"] is None or
            c["partition"] == 3] == ["missing"]
    assert r1[4]["status"] == r1[5]["status"] == "ok"
    assert res["rounds"][0]["aggregated"] and res["rounds"][0]["valid_updates"] == 2
    assert all(c["status"] == "ok" for c in res["rounds"][1]["clients"])
    assert "injected crash" in (tmp_path / "run" / "results.md").read_text()


def test_a_hostile_client_is_rejected_inside_the_simulation_runtime(tmp_path, tiny_encoder):
    # Hostile clients end to end: a client claiming 10^15 samples (round 1), then
    # sending batch-norm variances of -1e6 (round 2), and an infinite evaluation count in
    # every round. Before validation the first took over FedAvg, the second made every
    # output NaN and the third stopped the server.
    cfg = FedConfig(data="digits", task="0v1", clients=2, rounds=3, local_epochs=3,
                    encoder=str(tiny_encoder[0]), min_clients=1, round_timeout=60.0,
                    node_wait=120.0, strategy="fedavg")
    mods = [faults.tamper_metrics(1, {"num-examples": 10**15}, rounds={1}),
            faults.poison(1, "running_var", -1e6, rounds={2}),
            faults.tamper_metrics(1, {"num-examples": float("inf")}, kind="evaluate")]
    res = federate(cfg, tmp_path / "run", mods=mods)
    assert res["status"] == "completed"
    hostile = [next(c for c in r["clients"] if c["partition"] == 1) for r in res["rounds"]]
    assert [c["status"] for c in hostile] == ["rejected", "rejected", "ok"]
    assert "num-examples" in hostile[0]["reason"] and "running_var" in hostile[1]["reason"]
    assert all(c["status_eval"] == "rejected" and "num-examples" in c["reason_eval"]
               for c in hostile)
    assert all(r["aggregated"] and math.isfinite(r["global_loss"]) for r in res["rounds"])
    assert abs(res["final_acc"] - res["centralized_acc"]) <= 0.05  # honest level
    assert "rejected" in (tmp_path / "run" / "results.md").read_text()
