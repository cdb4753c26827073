"""`hybnn partition`: a federation's partition written as one data file per node, and a
federation that runs on those files as a deployment's nodes would."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from local_runs import settings

from hybnn.cli import main
from hybnn.data import load_source
from hybnn.data.splits import stratified_split
from hybnn.errors import DataError
from hybnn.federated.config import FedConfig
from hybnn.federated.local_grid import run_local
from hybnn.federated.node_files import write_node_files
from hybnn.federated.partition import partition_indices, task_splits


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cfg = FedConfig(data="digits", task="all", clients=4, partition="dirichlet", alpha=0.5,
                    seed=3)
    return cfg, write_node_files(cfg, tmp_path_factory.mktemp("p") / "nodes")


def test_each_node_file_holds_exactly_its_partition_and_the_server_the_test_split(written):
    cfg, files = written
    train, test = task_splits(cfg.data, cfg.task)
    rows, _ = partition_indices(cfg)
    for i, path in enumerate(files.nodes):
        node = load_source(str(path))
        assert np.array_equal(node.x, train.x[rows[i]])  # float32 values exactly
        assert np.array_equal(node.y, train.y[rows[i]])
    server = load_source(str(files.server_test))
    assert np.array_equal(server.x, test.x) and np.array_equal(server.y, test.y)
    manifest = json.loads((files.root / "partitions.json").read_text())
    assert manifest == files.manifest
    for n in manifest["nodes"]:
        assert n["sha256"] == hashlib.sha256((files.root / n["file"]).read_bytes()).hexdigest()
    assert [n["samples"] for n in manifest["nodes"]] == [len(r) for r in rows]
    assert sum(np.array(n["classes"]) for n in manifest["nodes"]).tolist() == np.bincount(
        train.y, minlength=10).tolist()
    assert manifest["labels"] == files.labels == list(range(10))
    assert {k: manifest[k] for k in ("partition", "alpha", "seed", "clients")} == {
        "partition": "dirichlet", "alpha": 0.5, "seed": 3, "clients": 4}


def test_whole_steps_of_1_255_are_stored_as_uint8_and_read_back_exactly(tmp_path):
    cfg = FedConfig(data="mnist-5k", task="0v1", clients=2)
    files = write_node_files(cfg, tmp_path / "nodes")
    assert np.load(files.nodes[0])["x"].dtype == np.uint8
    train, _ = task_splits(cfg.data, cfg.task)
    assert np.array_equal(load_source(str(files.nodes[0])).x,
                          train.x[partition_indices(cfg)[0][0]])


def test_a_directory_that_is_not_empty_is_refused_and_left_as_it_was(tmp_path, capsys):
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "mine.txt").write_text("keep")
    assert main(["partition", "--data", "digits", "--out", str(tmp_path / "nodes")]) == 2
    assert capsys.readouterr().err.startswith("hybnn: error: ")
    assert [p.name for p in (tmp_path / "nodes").iterdir()] == ["mine.txt"]
    with pytest.raises(DataError, match="not an empty directory"):
        write_node_files(FedConfig(data="digits"), tmp_path / "nodes")
    assert main(["partition", "--data", "digits", "--alpha", "0", "--out",
                 str(tmp_path / "other")]) == 2
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["nodes"]  # no hidden half-written copy


def test_partition_command_says_where_each_file_goes(tmp_path, capsys):
    assert main(["partition", "--data", "digits", "--task", "0v1", "--clients", "3",
                 "--partition", "classes", "--out", str(tmp_path / "n")]) == 0
    out = capsys.readouterr().out
    assert "3 node files (classes" in out and "hybnn federate --encoder DIR --node-data" in out
    assert sorted(p.name for p in (tmp_path / "n").iterdir()) == [
        "node-0.npz", "node-1.npz", "node-2.npz", "partitions.json", "server-test.npz"]


def test_a_federation_on_the_node_files_trains_each_node_on_exactly_its_file(
        written, encoder_dir, tmp_path):
    """The simulation's virtual nodes read their own files, as SuperNodes on other
    machines would: the server's config holds no path of theirs."""
    cfg, _ = written
    files = write_node_files(cfg.with_(task="0v1", clients=3), tmp_path / "pair")
    run = settings(data="digits", task="0v1", rounds=2, local_epochs=1, encoder=encoder_dir,
                   node_data=True, labels="0,1", clients=3, min_clients=3, node_wait=5.0,
                   server_test=str(files.server_test))
    log, _ = run_local(run, node_data=[str(p) for p in files.nodes])
    assert log["status"] == "completed"
    want = {i: len(stratified_split(np.load(p)["y"], 0.2, 0)[0])
            for i, p in enumerate(files.nodes)}
    for r in log["rounds"]:
        assert {c["partition"]: c["num_examples"] for c in r["clients"]} == want
    assert log["rounds"][-1]["global_acc"] > 0.6  # on the server's own test file
    assert str(files.root) not in json.dumps(log.get("config", {})).replace(
        str(files.server_test), "")


def test_federate_node_files_writes_them_and_runs_on_them(encoder_dir, tmp_path, capsys):
    """`hybnn federate --node-files`: the partition of --data as node files in OUT/nodes,
    each node trained on its own; a second run replaces them, a foreign file is refused."""
    out = tmp_path / "run"
    argv = ["federate", "--engine", "local", "--data", "digits", "--task", "0v1",
            "--clients", "3", "--rounds", "1", "--local-epochs", "1", "--encoder",
            encoder_dir, "--node-files", "--no-centralized", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    files = sorted((out / "nodes").glob("node-*.npz"))
    want = {i: len(stratified_split(np.load(p)["y"], 0.2, 0)[0]) for i, p in enumerate(files)}
    assert {c["partition"]: c["num_examples"] for c in res["rounds"][0]["clients"]} == want
    assert res["config"]["local_data"]["server_test"] == str(out / "nodes" / "server-test.npz")
    assert main(argv) == 0  # the earlier run's node files are replaced
    (out / "nodes" / "mine.txt").write_text("keep")
    capsys.readouterr()
    assert main(argv) == 2
    assert "holds files that --node-files did not write" in capsys.readouterr().err
    assert (out / "nodes" / "mine.txt").read_text() == "keep"
    assert main([*argv, "--node-data", str(files[0])]) == 2


def test_a_relative_server_test_path_reaches_the_server_absolute(written, encoder_dir,
                                                                 tmp_path, monkeypatch):
    """The ServerApp of a deployment runs in its own working directory: the launcher hands
    it the server test file's absolute path, and refuses a missing one before starting."""
    from hybnn.api.commands import node_data_config
    from hybnn.federated.config import LocalDataConfig

    _, files = written
    monkeypatch.chdir(files.root)
    cfg = FedConfig(encoder=encoder_dir, local_data=LocalDataConfig(server_test="server-test.npz"))
    cfg = node_data_config(cfg, [str(p) for p in files.nodes])
    assert cfg.local_data.server_test == str(files.server_test)
    with pytest.raises(DataError, match=r"--server-test file not found: gone\.npz"):
        node_data_config(cfg.with_group("local_data", server_test="gone.npz"),
                         [str(p) for p in files.nodes])

