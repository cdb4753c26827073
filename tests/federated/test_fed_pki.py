"""Real addresses and certificates: a SuperLink certificate names the address in use (an IP
address or a DNS name), ``hybnn pki`` makes the material for several machines, and a
deployment's SuperLink listens where its certificate says."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hybnn.cli import main
from hybnn.errors import CredentialError
from hybnn.federated import pki
from hybnn.federated.deploy import DeploymentError, parse_server_address

HAVE_FLOWER = shutil.which("flower-superlink") is not None
needs_flower = pytest.mark.skipif(not HAVE_FLOWER, reason="the fed extra is not installed")


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _can_listen(host: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def _cert_naming(*names: x509.GeneralName) -> x509.Certificate:
    """A self-signed certificate with exactly ``names`` as its SAN (wildcards included)."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
            .sign(key, hashes.SHA384()))


# -- names in certificates -------------------------------------------------------------
def test_san_takes_an_ip_address_and_a_dns_name(tmp_path):
    tls = pki.generate_tls(tmp_path, hosts=("10.0.0.7", "SuperLink.Example.org."))
    cert = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert san.get_values_for_type(x509.DNSName) == ["superlink.example.org"]
    assert pki.load_tls(tmp_path, "10.0.0.7") == tls
    assert pki.load_tls(tmp_path, "superlink.example.org") == tls
    if shutil.which("openssl"):  # an independent verifier agrees on both names
        for check in (["-verify_ip", "10.0.0.7"],
                      ["-verify_hostname", "superlink.example.org"]):
            res = subprocess.run(["openssl", "verify", "-CAfile", str(tls.ca_cert), *check,
                                  str(tls.server_cert)], capture_output=True, text=True)
            assert res.returncode == 0, res.stderr


def test_load_tls_refuses_a_certificate_that_does_not_name_the_address_in_use(tmp_path):
    pki.generate_tls(tmp_path, hosts=("127.0.0.3",))
    assert pki.load_tls(tmp_path, "127.0.0.3")
    for address in ("127.0.0.2", "127.0.0.1", "localhost"):
        with pytest.raises(CredentialError, match=f"does not name {address} .*has: 127.0.0.3"):
            pki.load_tls(tmp_path, address)


def test_an_address_matches_as_tls_clients_match_it():
    cert = _cert_naming(x509.DNSName("*.example.org"), x509.DNSName("10.0.0.9"),
                        x509.DNSName("*.org"), x509.DNSName("f*.example.net"))
    assert pki.names_address(cert, "a.example.org")
    assert pki.names_address(cert, "A.Example.ORG")
    assert not pki.names_address(cert, "example.org")  # a wildcard is exactly one label
    assert not pki.names_address(cert, "a.b.example.org")
    assert not pki.names_address(cert, "10.0.0.9")  # an IP only against IP entries
    assert not pki.names_address(cert, "x.org")  # too broad: refused, as OpenSSL does
    assert not pki.names_address(cert, "foo.example.net")  # partial-label wildcard
    cert = _cert_naming(x509.IPAddress(ipaddress.ip_address("10.0.0.9")))
    assert pki.names_address(cert, "10.0.0.9") and not pki.names_address(cert, "10.0.0.1")


@pytest.mark.parametrize("name, canonical", [
    ("127.0.0.2", "127.0.0.2"), ("::1", "::1"), ("0:0::1", "::1"),
    ("SuperLink.example.org", "superlink.example.org"), ("node-7.lab.", "node-7.lab"),
    ("localhost", "localhost")])
def test_check_host_takes_ips_and_rfc1123_names(name, canonical):
    assert pki.check_host(name) == canonical


@pytest.mark.parametrize("name, why", [
    ("https://superlink.example.org", "no scheme"), ("superlink.example.org/x", "no path"),
    ("superlink.example.org:9092", "no port"), ("*.example.org", "wildcards"),
    ("0.0.0.0", "no client can connect"), ("::", "no client can connect"),
    ("-bad.example.org", "RFC 1123"), ("under_score.org", "RFC 1123"), ("", "RFC 1123"),
    ("a..b", "RFC 1123"), ("10.0.0.300", "RFC 1123"), ("x" * 64 + ".org", "RFC 1123"),
    ("exämple.org", "RFC 1123"), ("two words", "RFC 1123")])
def test_check_host_refuses_what_no_certificate_should_name(name, why):
    with pytest.raises(CredentialError, match=why):
        pki.check_host(name)


@pytest.mark.parametrize("address, parsed", [
    ("127.0.0.2", ("127.0.0.2", 0)), ("127.0.0.2:9092", ("127.0.0.2", 9092)),
    ("superlink.example.org:443", ("superlink.example.org", 443)),
    ("::1", ("::1", 0)), ("[::1]", ("::1", 0)), ("[::1]:9092", ("::1", 9092))])
def test_server_address_is_host_and_optional_port(address, parsed):
    assert parse_server_address(address) == parsed


@pytest.mark.parametrize("address, why", [
    ("http://127.0.0.2:9092", "no scheme"), ("127.0.0.2:9092/path", "no path"),
    ("127.0.0.2:0", "1 to 65535"), ("127.0.0.2:70000", "1 to 65535"),
    ("127.0.0.2:", "1 to 65535"), ("127.0.0.2:http", "1 to 65535"),
    ("[::1]x", "not a server name"), ("0.0.0.0:9092", "no client can connect")])
def test_a_bad_server_address_is_refused_with_the_reason(address, why):
    with pytest.raises(DeploymentError, match=f"--server-address .*{why}"):
        parse_server_address(address)


# -- hybnn pki ---------------------------------------------------------------------------
def test_pki_writes_the_files_with_private_modes_and_prints_the_plan(tmp_path, capsys):
    out = tmp_path / "pki"
    rc = main(["pki", "--out", str(out), "--server-name", "127.0.0.2",
               "--server-name", "superlink.example.org", "--nodes", "2"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "ca.crt", "server.key", "server.pem",
        "supernode-0", "supernode-0.pub", "supernode-1", "supernode-1.pub"]
    assert _mode(out) == 0o700
    assert {p.name: _mode(p) for p in out.iterdir()} == {
        "ca.crt": 0o644, "server.pem": 0o644, "server.key": 0o600,
        "supernode-0": 0o600, "supernode-0.pub": 0o644,
        "supernode-1": 0o600, "supernode-1.pub": 0o644}
    cert = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    assert pki.san_names(cert) == ["127.0.0.2", "superlink.example.org"]  # both uses kept
    assert pki.load_tls(out, "127.0.0.2") and pki.load_tls(out, "superlink.example.org")
    assert len(pki.load_node_keys(out, 2)) == 2
    assert "PRIVATE KEY" not in (out / "ca.crt").read_text()  # the CA's key is not kept
    lines = printed.splitlines()
    link = next(line for line in lines if line.strip().startswith("SuperLink host:"))
    assert all(f in link for f in ("ca.crt", "server.pem", "server.key",
                                   "supernode-0.pub", "supernode-1.pub"))
    for i in range(2):
        node = next(line for line in lines if line.strip().startswith(f"SuperNode {i}:"))
        assert f"ca.crt, supernode-{i} " in node and "never copy it elsewhere" in node
        assert "server.key" not in node


@pytest.mark.parametrize("names", [["https://superlink"], ["superlink:9092"],
                                   ["*.example.org"], ["ok.example.org", "bad_name"],
                                   ["0.0.0.0"], []])
def test_pki_refuses_a_bad_server_name_with_one_line(tmp_path, capsys, names):
    argv = ["pki", "--out", str(tmp_path / "pki"), "--nodes", "1"]
    argv += ["--server-name", *names] if names else []
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("hybnn: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "pki").exists()  # checked before anything is written


def test_pki_never_writes_over_an_existing_directory(tmp_path, capsys):
    out = tmp_path / "pki"
    assert main(["pki", "--out", str(out), "--server-name", "10.0.0.7", "--nodes", "1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    rc = main(["pki", "--out", str(out), "--server-name", "10.0.0.8", "--nodes", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("hybnn: error: ") and err.count("\n") == 1, err
    assert "already exists" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "empty").mkdir()  # an empty directory is fine
    assert main(["pki", "--out", str(tmp_path / "empty"), "--server-name", "10.0.0.7"]) == 0


# -- the address in use ------------------------------------------------------------------
@needs_flower
@pytest.mark.skipif(not _can_listen("127.0.0.2"), reason="127.0.0.2 is not on this host")
def test_a_certificate_for_another_address_is_refused_before_anything_starts(tmp_path):
    from hybnn.federated.config import FedConfig
    from hybnn.federated.deploy import LocalFederation, deploy

    assert main(["pki", "--out", str(tmp_path / "pki"), "--server-name", "127.0.0.3",
                 "--nodes", "1"]) == 0
    tls = pki.load_tls(tmp_path / "pki", "127.0.0.3")
    creds = pki.Credentials(tls, pki.load_node_keys(tmp_path / "pki", 1))
    fed = LocalFederation(tmp_path / "fed", [{"partition-id": 0, "num-partitions": 1}],
                          30.0, creds, host="127.0.0.2")
    with pytest.raises(CredentialError, match=r"does not name 127\.0\.0\.2"), fed:
        pass
    assert fed.procs == [] and not (tmp_path / "fed").exists()
    cfg = FedConfig(data="digits", encoder="")  # no encoder: would pretrain first
    with pytest.raises(CredentialError, match=r"does not name 127\.0\.0\.2"):
        deploy(cfg, tmp_path / "run", certificates=tmp_path / "pki",
               supernode_keys=tmp_path / "pki", server_address="127.0.0.2")
    assert not (tmp_path / "run" / "encoder").exists()


# A SuperLink on 127.0.0.2 with a certificate for that name only, reached by nodes on other
# addresses: tests/federated/test_fed_node_data.py::test_several_hosts_each_on_its_own_file.
