"""`hybnn federate` in Flower's simulation engine (Ray), and faults inside that runtime."""

from __future__ import annotations

import json

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
                    round_timeout=10.0, node_wait=120.0)
    mods = [faults.crash(0, rounds={1}), faults.corrupt(1, "nan", rounds={1}),
            faults.foreign_encoder(2, str(other)), faults.vanish(3, 13.0, rounds={1})]
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
