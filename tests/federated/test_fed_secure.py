"""Secure by default: TLS and SuperNode authentication on a real loopback deployment, and
the certificates and keys that make them (hybnn.federated.pki)."""

from __future__ import annotations

import shutil
import stat
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hybnn.errors import CredentialError
from hybnn.federated import pki

HAVE_FLOWER = shutil.which("flower-superlink") is not None
needs_flower = pytest.mark.skipif(not HAVE_FLOWER, reason="the fed extra is not installed")


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the PKI module (fast) -------------------------------------------------------------
def test_generated_certificate_chains_to_the_ca_and_names_loopback(tmp_path):
    tls = pki.generate_tls(tmp_path / "pki")
    cert = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert set(pki.san_names(cert)) == {"127.0.0.1", "localhost"}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    if shutil.which("openssl"):  # and an independent verifier agrees
        res = subprocess.run(["openssl", "verify", "-CAfile", str(tls.ca_cert),
                              str(tls.server_cert)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    assert pki.load_tls(tmp_path / "pki") == tls


def test_private_keys_are_0600_and_the_ca_key_is_not_kept(tmp_path):
    tls = pki.generate_tls(tmp_path / "pki")
    keys = pki.generate_node_keys(tmp_path / "pki", 2)
    assert _mode(tls.server_key) == 0o600
    assert all(_mode(k.private) == 0o600 for k in keys)
    assert _mode(tmp_path / "pki") == 0o700
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == [
        "ca.crt", "server.key", "server.pem",
        "supernode-0", "supernode-0.pub", "supernode-1", "supernode-1.pub"]


def test_node_keys_are_p384_openssh_pairs(tmp_path):
    keys = pki.generate_node_keys(tmp_path, 2)
    assert keys[0].public.read_text().startswith("ecdsa-sha2-nistp384 ")
    private = serialization.load_ssh_private_key(keys[0].private.read_bytes(), None)
    assert private.curve.name == "secp384r1"  # type: ignore[union-attr]
    assert keys[0].public.read_bytes() != keys[1].public.read_bytes()
    assert pki.load_node_keys(tmp_path, 2) == keys
    if shutil.which("ssh-keygen"):  # OpenSSH reads them as its own
        res = subprocess.run(["ssh-keygen", "-y", "-f", str(keys[0].private)],
                             capture_output=True, text=True)
        assert res.returncode == 0 and res.stdout.split()[:2] == \
            keys[0].public.read_text().split()[:2]


@pytest.mark.parametrize("missing", ["ca.crt", "server.pem", "server.key"])
def test_user_tls_directory_missing_a_file(tmp_path, missing):
    pki.generate_tls(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(CredentialError, match=f"{missing} not found"):
        pki.load_tls(tmp_path)


def test_user_key_that_is_not_the_certificates(tmp_path):
    pki.generate_tls(tmp_path / "a")
    pki.generate_tls(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "server.key", tmp_path / "a" / "server.key")
    with pytest.raises(CredentialError, match="does not match"):
        pki.load_tls(tmp_path / "a")


def test_user_certificate_from_another_ca(tmp_path):
    pki.generate_tls(tmp_path / "a")
    pki.generate_tls(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "ca.crt", tmp_path / "a" / "ca.crt")
    with pytest.raises(CredentialError, match="not signed by"):
        pki.load_tls(tmp_path / "a")


def test_user_certificate_without_loopback_in_its_san(tmp_path):
    pki.generate_tls(tmp_path, hosts=("10.0.0.7", "example.org"))
    with pytest.raises(CredentialError, match=r"does not name 127\.0\.0\.1"):
        pki.load_tls(tmp_path)


def test_garbage_certificate(tmp_path):
    pki.generate_tls(tmp_path)
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(CredentialError, match="not a PEM certificate"):
        pki.load_tls(tmp_path)


def test_user_node_keys_missing_mismatched_or_not_ec(tmp_path):
    pki.generate_node_keys(tmp_path / "a", 2)
    with pytest.raises(CredentialError, match="supernode-2 not found"):
        pki.load_node_keys(tmp_path / "a", 3)
    pki.generate_node_keys(tmp_path / "b", 1)
    shutil.copy(tmp_path / "b" / "supernode-0.pub", tmp_path / "a" / "supernode-0.pub")
    with pytest.raises(CredentialError, match="is not the public key of"):
        pki.load_node_keys(tmp_path / "a", 1)
    (tmp_path / "c").mkdir()  # an Ed25519 pair: OpenSSH, but not what Flower takes
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "c" / "supernode-0").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    (tmp_path / "c" / "supernode-0.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    with pytest.raises(CredentialError, match="must be EC"):
        pki.load_node_keys(tmp_path / "c", 1)


def test_credentials_take_the_users_material_and_generate_the_rest(tmp_path):
    mine = pki.generate_tls(tmp_path / "mine")
    before = {p.name: p.read_bytes() for p in (tmp_path / "mine").iterdir()}
    creds = pki.credentials(tmp_path / "pki", 2, certificates=tmp_path / "mine")
    assert creds.tls == mine
    assert [k.private.parent for k in creds.node_keys] == [(tmp_path / "pki").resolve()] * 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "mine").iterdir()} == before
    assert not (tmp_path / "pki" / "ca.crt").exists()


def test_insecure_with_certificates_is_refused(tmp_path):
    from hybnn.federated.config import FedConfig
    from hybnn.federated.deploy import deploy

    with pytest.raises(CredentialError, match="--insecure"):
        deploy(FedConfig(model="fpcnn"), tmp_path, insecure=True, certificates=tmp_path)


def test_bad_user_material_fails_before_anything_runs(tmp_path):
    from hybnn.federated.config import FedConfig
    from hybnn.federated.deploy import deploy

    pki.generate_tls(tmp_path / "mine")
    (tmp_path / "mine" / "server.key").unlink()
    cfg = FedConfig(data="digits", encoder="")  # no encoder: would pretrain first
    with pytest.raises(CredentialError, match=r"server\.key not found"):
        deploy(cfg, tmp_path / "run", certificates=tmp_path / "mine")
    assert not (tmp_path / "run" / "encoder").exists()
    with pytest.raises(CredentialError, match="every deployment replaces"):
        deploy(cfg, tmp_path / "run", supernode_keys=tmp_path / "run" / "deployment" / "pki")


def test_security_flags_need_deploy(tmp_path):
    from hybnn.api import FederateOptions, federate

    with pytest.raises(CredentialError, match="--deploy only"):
        federate(FederateOptions(out=str(tmp_path), insecure=True))


# -- the secure deployment itself (TLS, SuperNode authentication, the user's certificates
# used read-only, generated node keys) runs in
# tests/federated/test_fed_node_data.py::test_several_hosts_each_on_its_own_file --------


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    return proc.poll()


@needs_flower
@pytest.mark.slow
def test_unregistered_key_and_missing_or_wrong_ca_are_refused(tmp_path):
    from hybnn.federated.deploy import LocalFederation

    creds = pki.credentials(tmp_path / "pki", 2)
    rogue = pki.generate_node_keys(tmp_path / "rogue", 1)[0]
    other_ca = pki.generate_tls(tmp_path / "other").ca_cert
    node = {"partition-id": 0, "num-partitions": 1}
    with LocalFederation(tmp_path / "fed", [node], 60.0, creds) as fed:  # node 0 online
        flags = fed.node_security(creds.node_keys[1])  # registered below: key 1 is good
        ca_at = flags.index("--root-certificates")
        no_ca = flags[:ca_at] + flags[ca_at + 2:]
        wrong_ca = [*flags[:ca_at + 1], str(other_ca), *flags[ca_at + 2:]]
        fed.register(creds.node_keys[1])
        procs = {name: fed.start_supernode(name, node, security)[1] for name, security in {
            "unregistered": fed.node_security(rogue), "no-ca": no_ca,
            "wrong-ca": wrong_ca}.items()}
        codes = {name: _wait_exit(proc, 60.0) for name, proc in procs.items()}
        nodes = fed.flwr("supernode", "list", "hybnn-local")["nodes"]
    logs = {name: (tmp_path / "fed" / f"{name}.log").read_text() for name in procs}
    # Flower's answer to each: the node logs exit code 305 ("could not establish a
    # connection to the SuperLink") and its process ends with status 1.
    assert codes == {name: 1 for name in procs}, codes
    assert all("Exit Code: 305" in log for log in logs.values())
    assert "[code: 2004] Failed to activate SuperNode" in logs["unregistered"]
    assert "CERTIFICATE_VERIFY_FAILED" in logs["no-ca"]
    assert "CERTIFICATE_VERIFY_FAILED" in logs["wrong-ca"]
    link_log = (tmp_path / "fed" / "superlink.log").read_text()
    assert "[/v1/fleet/activate-node][ApiError:2004]" in link_log
    # Only the registered node ever came online; key 1 stayed registered, never activated.
    assert sorted(n["status"] for n in nodes) == ["online", "registered"], nodes
