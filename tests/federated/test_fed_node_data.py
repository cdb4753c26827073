"""Node-local data: every node trains on its own file (node config ``data``) and the server
holds none of it. Real ClientApps on a LocalGrid (in process); the deployment across hosts
runs the same client code."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from local_runs import settings

from hybnn.data import load_source
from hybnn.data.splits import stratified_split
from hybnn.errors import DataError
from hybnn.federated.config import LocalDataConfig
from hybnn.federated.local_grid import FIRST_NODE_ID, run_local


@pytest.fixture(scope="module")
def node_files(tmp_path_factory):
    """Real digits 0 and 1 (plus one file holding a 7) split over three node files."""
    d = load_source("digits")
    root = tmp_path_factory.mktemp("nodes")
    x = (d.x[:, 0] * 255).round().astype(np.uint8)
    keep = np.flatnonzero(np.isin(d.y, [0, 1]))
    rng = np.random.default_rng(0)
    rng.shuffle(keep)
    parts = np.array_split(keep[:300], 3)
    files = []
    for i, idx in enumerate(parts):
        files.append(root / f"site-{i}.npz")
        np.savez(files[-1], x=x[idx], y=d.y[idx])
    np.savez(root / "server-test.npz", x=x[keep[300:]], y=d.y[keep[300:]])
    sevens = np.flatnonzero(d.y == 7)[:20]
    np.savez(root / "has-7.npz", x=x[np.r_[parts[0][:40], sevens]],
             y=d.y[np.r_[parts[0][:40], sevens]])
    return root, files, [len(p) for p in parts]


def _cfg(encoder_dir, clients, **kw):
    return settings(data="digits", task="0v1", clients=clients, rounds=2, local_epochs=2,
                    encoder=encoder_dir, node_data=True, labels="0,1", min_clients=2,
                    node_wait=5.0, **kw)


def test_each_node_trains_on_exactly_its_file(encoder_dir, node_files):
    root, files, sizes = node_files
    log, _ = run_local(_cfg(encoder_dir, 3, server_test=str(root / "server-test.npz")),
                       node_data=[str(f) for f in files])
    assert log["status"] == "completed" and log["partitions"] is None
    trained = {c["partition"]: c["num_examples"] for c in log["rounds"][0]["clients"]}
    # each node holds out a stratified fifth of its file as its own test set
    want = {i: len(stratified_split(np.load(f)["y"], 0.2, 0)[0]) for i, f in enumerate(files)}
    assert trained == want and sum(sizes) == 300
    assert log["rounds"][-1]["global_acc"] > 0.6  # on the server's own test file


def test_without_a_server_test_set_the_clients_report(encoder_dir, node_files):
    _, files, _ = node_files
    log, _ = run_local(_cfg(encoder_dir, 3), node_data=[str(f) for f in files])
    assert log["status"] == "completed"
    assert log["rounds"][-1]["global_acc"] is None
    assert log["rounds"][-1]["clients_global_acc"] > 0.6


def test_a_node_with_foreign_labels_or_no_file_is_refused_and_the_rest_go_on(
        encoder_dir, node_files):
    root, files, _ = node_files
    nodes = [str(files[0]), str(files[1]), str(root / "has-7.npz"), str(root / "missing.npz")]
    log, _ = run_local(_cfg(encoder_dir, 4), node_data=nodes)
    assert log["status"] == "completed"
    refused = [c for c in log["handshake"] if c.get("status") != "ok"]
    assert len(refused) == 2, log["handshake"]
    assert "outside the federation's label space [0, 1]" in str(refused)
    assert "data file not found" in str(refused) and "missing.npz" in str(refused)
    trained = sorted(c["partition"] for c in log["rounds"][-1]["clients"]
                     if c["status"] == "ok")
    assert trained == [0, 1], log["rounds"][-1]["clients"]


def _refused(log):
    """Node index -> the reason of each node the handshake refused."""
    return {c["node_id"] - FIRST_NODE_ID: c["reason"] for c in log["handshake"]
            if c["status"] != "ok"}


@pytest.fixture(scope="module")
def png_folders(node_files):
    """Node files 0 and 1 written as folders of real 8x8 PNGs: one named by label numbers
    (0/, 1/), one by label names (zero/, one/)."""
    from PIL import Image

    root, files, _ = node_files
    folders = []
    for i, names in enumerate([("0", "1"), ("zero", "one")]):
        d = np.load(files[i])
        folder = root / f"site-{i}-png"
        for label, name in enumerate(names):
            (folder / name).mkdir(parents=True)
            for j in np.flatnonzero(d["y"] == label):
                Image.fromarray(d["x"][j]).save(folder / name / f"{j:04d}.png")
        folders.append(folder)
    return folders


def test_a_node_trains_on_a_folder_of_images_one_subfolder_per_class(encoder_dir, node_files,
                                                                     png_folders):
    root, files, _ = node_files
    nodes = [str(png_folders[0]), f"folder:{png_folders[1]}", str(files[2])]
    log, _ = run_local(_cfg(encoder_dir, 3, label_names="zero,one",
                            server_test=str(root / "server-test.npz")), node_data=nodes)
    assert log["status"] == "completed"
    # the same images as the node files, so the same stratified training counts
    want = {i: len(stratified_split(np.load(f)["y"], 0.2, 0)[0]) for i, f in enumerate(files)}
    for r in log["rounds"]:
        assert {c["partition"]: c["num_examples"] for c in r["clients"]} == want
    assert log["rounds"][-1]["global_acc"] > 0.6


def test_a_folder_of_unknown_class_names_or_unreadable_images_is_refused(
        encoder_dir, node_files, png_folders, tmp_path):
    _, files, _ = node_files
    broken = tmp_path / "broken"
    shutil.copytree(png_folders[0], broken)
    bad = sorted((broken / "1").iterdir())[0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    nodes = [str(files[0]), str(files[1]), str(png_folders[1]), str(broken)]
    log, _ = run_local(_cfg(encoder_dir, 4), node_data=nodes)  # no label names given
    assert log["status"] == "completed"
    refused = _refused(log)
    assert set(refused) == {2, 3}, log["handshake"]
    assert "zero: a class folder is named by its label" in refused[2] or \
        "one: a class folder is named by its label" in refused[2]
    assert str(bad) in refused[3] and "\n" not in refused[3]


@pytest.fixture(scope="module")
def other_encoder(tmp_path_factory, digits):
    """An encoder pretrained like the federation's, from another seed: other weights."""
    from hybnn.pipeline.config import PretrainConfig
    from hybnn.pipeline.pretrain import pretrain

    out = tmp_path_factory.mktemp("other-encoder")
    pretrain(np.ascontiguousarray(digits.x[:100]), out,
             PretrainConfig(latent_bits=200, epochs=1, batch_size=64, seed=1),
             {"source": "digits", "n": 100}, progress=False, plots=False)
    return out


def _oversized_npz(path):
    """An .npz whose x claims 2^34 pixels in its header (and holds 64 bytes)."""
    import io
    import zipfile

    from numpy.lib import format as npformat

    header, labels = io.BytesIO(), io.BytesIO()
    npformat.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                             "shape": (2**28, 8, 8)})
    np.save(labels, np.zeros(10, dtype=np.int64))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", header.getvalue() + bytes(64))
        zf.writestr("y.npy", labels.getvalue())


def _tree(folder):
    """Every file under ``folder``: its path, bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_another_encoder_a_corrupt_or_oversized_file_is_refused_and_left_as_it_was(
        encoder_dir, node_files, png_folders, other_encoder, tmp_path, monkeypatch):
    from hybnn.data import folder

    _, files, _ = node_files
    sites = {name: tmp_path / name for name in ("encoder", "corrupt", "oversized", "big-folder")}
    for site in sites.values():
        site.mkdir()
    shutil.copy(files[2], sites["encoder"] / "train.npz")
    shutil.copytree(other_encoder, sites["encoder"] / "encoder")
    (sites["corrupt"] / "train.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    _oversized_npz(sites["oversized"] / "train.npz")
    shutil.copytree(png_folders[0], sites["big-folder"] / "images")
    monkeypatch.setattr(folder, "MAX_LOADED_IMAGES", 50)  # site 0's folder holds 100
    nodes = [str(files[0]), str(files[1]), str(sites["encoder"] / "train.npz"),
             str(sites["corrupt"] / "train.npz"), str(sites["oversized"] / "train.npz"),
             str(sites["big-folder"] / "images")]
    before = {name: _tree(site) for name, site in sites.items()}
    log, _ = run_local(_cfg(encoder_dir, 6), node_data=nodes,
                       node_configs=[{}, {}, {"encoder": str(sites["encoder"] / "encoder")}])
    assert log["status"] == "completed"
    refused = _refused(log)
    assert set(refused) == {2, 3, 4, 5}, log["handshake"]
    assert "but the federation uses encoder" in refused[2]
    assert "train.npz: not a readable .npz file" in refused[3]
    assert "above the limit" in refused[4] and "oversized" in refused[4]
    assert "100 images, above the limit of 50" in refused[5]
    assert not any("\n" in r for r in refused.values())
    for r in log["rounds"]:
        assert sorted(c["partition"] for c in r["clients"] if c["status"] == "ok") == [0, 1]
    assert {name: _tree(site) for name, site in sites.items()} == before


def test_node_data_settings_are_checked():
    with pytest.raises(DataError, match="labels must be at least two"):
        LocalDataConfig(enabled=True, labels="3")
    with pytest.raises(DataError, match="labels must be integers"):
        LocalDataConfig(enabled=True, labels="a,b")
    with pytest.raises(DataError, match="--model head"):
        settings(node_data=True, labels="0,1", model="bcnn")


def test_federate_node_data_through_the_cli(encoder_dir, node_files, tmp_path, capsys):
    import json

    from hybnn.cli import main

    root, files, _ = node_files
    argv = ["federate", "--engine", "local", "--encoder", encoder_dir, "--rounds", "2",
            "--local-epochs", "2", "--server-test", str(root / "server-test.npz"),
            "--out", str(tmp_path / "run"), "--node-data", *map(str, files)]
    assert main(argv) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["config"]["local_data"] == {**res["config"]["local_data"], "enabled": True,
                                             "labels": "0,1"}
    assert res["config"]["clients"] == 3 and res["status"] == "completed"
    assert str(root) not in json.dumps(res["config"]).replace(str(root / "server-test.npz"), "")


@pytest.mark.slow
def test_the_ray_simulation_gives_each_virtual_node_its_own_file(encoder_dir, node_files,
                                                                 png_folders, tmp_path):
    """Flower's Ray engine, the same ClientApp: each virtual node's node config names its
    file (one of them a folder of PNGs), as a SuperNode's does."""
    import json

    from hybnn.cli import main

    _, files, _ = node_files
    nodes = [f"folder:{png_folders[0]}", str(files[1]), str(files[2])]
    argv = ["federate", "--engine", "ray", "--encoder", encoder_dir, "--rounds", "2",
            "--local-epochs", "1", "--out", str(tmp_path / "run"), "--node-data", *nodes]
    assert main(argv) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "completed" and res["runtime"] == "simulation"
    want = {i: len(stratified_split(np.load(f)["y"], 0.2, 0)[0]) for i, f in enumerate(files)}
    for r in res["rounds"]:
        assert {c["partition"]: c["num_examples"] for c in r["clients"]} == want, r["clients"]
    assert str(files[1].parent) not in json.dumps(res["config"])


def test_the_flower_app_ships_inside_the_package():
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-m", "hybnn.federated.app_path"], capture_output=True,
                         text=True, check=True, timeout=60).stdout.strip()
    app = Path(out) / "pyproject.toml"
    assert app.is_file() and "hybnn.federated.client_app:app" in app.read_text()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flower-superlink") is None,
                    reason="the fed extra is not installed")
def test_several_hosts_each_on_its_own_file(encoder_dir, node_files, other_encoder, tmp_path,
                                            spawned):
    """The SuperLink on 127.0.0.2 with a certificate for 127.0.0.2 only (`hybnn pki`, used
    read-only); SuperNodes on 127.0.0.3 and 127.0.0.4, each with its own working directory,
    FLWR_HOME and data file, and keys the deployment generates; TLS and node authentication
    on, 2 rounds. Three more nodes are hostile: a foreign label in the file, another
    encoder, a corrupt file. Each is refused in one line on that node and logged by the
    server; the run completes with the other two, and every node's folder is left as it
    was."""
    import json
    import stat

    from cryptography import x509

    from hybnn.cli import main
    from hybnn.federated import pki
    from hybnn.federated.deploy import deploy

    root, files, _ = node_files
    commands = spawned
    assert main(["pki", "--out", str(tmp_path / "pki"), "--server-name", "127.0.0.2",
                 "--nodes", "1"]) == 0
    mine = {p: p.read_bytes() for p in (tmp_path / "pki").iterdir()}
    server_cert = tmp_path / "pki" / "server.pem"
    assert pki.san_names(x509.load_pem_x509_certificate(server_cert.read_bytes())) == [
        "127.0.0.2"]
    sites = {name: tmp_path / name for name in ("encoder", "corrupt")}
    for site in sites.values():
        site.mkdir()
    shutil.copy(files[2], sites["encoder"] / "train.npz")
    shutil.copytree(other_encoder, sites["encoder"] / "encoder")
    (sites["corrupt"] / "train.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    nodes = [str(files[0]), str(files[1]), str(root / "has-7.npz"),
             str(sites["encoder"] / "train.npz"), str(sites["corrupt"] / "train.npz")]
    before = {name: _tree(site) for name, site in sites.items()}
    cfg = settings(data="digits", task="0v1", rounds=2, local_epochs=1, encoder=encoder_dir,
                   node_data=True, labels="0,1", clients=5, min_clients=2,
                   fraction_evaluate=1.0, round_timeout=120.0, node_wait=90.0)
    res = deploy(cfg, tmp_path / "run", centralized=False, run_timeout=600,
                 certificates=tmp_path / "pki", server_address="127.0.0.2", node_data=nodes,
                 node_hosts=["127.0.0.3", "127.0.0.4"],
                 node_configs=[{}, {}, {}, {"encoder": str(sites["encoder"] / "encoder")}])
    assert res["run_status"] == "finished:completed" and res["status"] == "completed"
    assert res["security"] == {"tls": True, "supernode_auth": True}
    want = {i: len(stratified_split(np.load(nodes[i])["y"], 0.2, 0)[0]) for i in (0, 1)}
    for r in res["rounds"]:
        got = {c["partition"]: c["num_examples"] for c in r["clients"] if c["status"] == "ok"}
        assert got == want, r["clients"]
    refused = {c["node_id"]: c["reason"] for c in res["handshake"] if c["status"] != "ok"}
    assert len(refused) == 3, res["handshake"]
    reasons = list(refused.values())
    for why in ("but the federation uses encoder", "outside the federation's label space",
                "train.npz: not a readable .npz file"):
        assert sum(why in r for r in reasons) == 1, reasons
    deployment = (tmp_path / "run" / "deployment").resolve()
    link_log = (deployment / "superlink.log").read_text()
    assert "Uvicorn running on https://127.0.0.2" in link_log
    assert link_log.count("Activated node_id=") >= 5
    for i in (2, 3, 4):  # the refused node says why in one line, not a traceback
        node_log = (deployment / f"supernode-{i}.log").read_text()
        errors = [ln for ln in node_log.splitlines() if ln.startswith("hybnn: error: ")]
        assert len(errors) == 1 and errors[0][len("hybnn: error: "):] in reasons, node_log
        assert "Traceback" not in node_log
    assert {name: _tree(site) for name, site in sites.items()} == before
    assert {p: p.read_bytes() for p in (tmp_path / "pki").iterdir()} == mine
    # the processes: who listens where, which files each was given
    link = commands["superlink"]
    assert link[link.index("--host") + 1] == "127.0.0.2"
    assert link[link.index("--ssl-certfile") + 1] == str(server_cert)
    assert "--enable-supernode-auth" in link and "--insecure" not in link
    for i, host in enumerate(["127.0.0.3", "127.0.0.4", "127.0.0.3", "127.0.0.4",
                              "127.0.0.3"]):
        node = commands[f"supernode-{i}"]
        assert node[node.index("--host") + 1] == host
        assert node[node.index("--superlink") + 1].startswith("127.0.0.2:")
        assert f'data="{nodes[i]}"' in node[node.index("--node-config") + 1]
        assert node[node.index("--root-certificates") + 1] == str(tmp_path / "pki" / "ca.crt")
        key = deployment / "pki" / f"supernode-{i}"
        assert node[node.index("--auth-supernode-private-key") + 1] == str(key)
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert str(tmp_path / "pki" / "server.key") not in node  # the SuperLink's key stays
    assert 'address = "127.0.0.2:' in (deployment / "flwr-cli" / "config.toml").read_text()
    server_side = json.dumps(link) + json.dumps(res["config"])
    assert not any(str(Path(f).parent) in server_side for f in nodes)
