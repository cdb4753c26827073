"""Certificates and keys for a TLS, SuperNode-authenticated Flower deployment.

:func:`generate_tls` makes a CA and a SuperLink certificate signed by it (SAN
``IP:127.0.0.1``, ``DNS:localhost``); :func:`generate_node_keys` makes one EC P-384 key
pair per SuperNode in OpenSSH format, the form ``flwr supernode register`` and
``flower-supernode --auth-supernode-private-key`` take. :func:`load_tls` and
:func:`load_node_keys` validate material a user brings (never written to). Private keys
we write are mode 0600; the CA's private key is never written: it signs once, here.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hybnn.errors import CredentialError

CA_CERT, SERVER_CERT, SERVER_KEY = "ca.crt", "server.pem", "server.key"
HOSTS = ("127.0.0.1", "localhost")
VALID_DAYS = 30  # a local deployment regenerates its material on every run


@dataclass(frozen=True)
class TlsFiles:
    """The SuperLink's TLS material: the CA certificate, its certificate and key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKey:
    """A SuperNode's authentication key pair (OpenSSH format)."""

    private: Path
    public: Path


@dataclass(frozen=True)
class Credentials:
    """What a secure local deployment runs with: TLS files and one key pair per node."""

    tls: TlsFiles
    node_keys: list[NodeKey]


def node_key_names(i: int) -> tuple[str, str]:
    """File names of SuperNode ``i``'s private and public key."""
    return f"supernode-{i}", f"supernode-{i}.pub"  # as ssh-keygen -f names them


# -- generation ------------------------------------------------------------------------
def generate_tls(directory: str | os.PathLike[str], hosts: tuple[str, ...] = HOSTS
                 ) -> TlsFiles:
    """A new CA and a server certificate for ``hosts`` (IPs and DNS names) in ``directory``."""
    d = _private_dir(directory)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hybnn local CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA384()))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA384()))
    files = TlsFiles(d / CA_CERT, d / SERVER_CERT, d / SERVER_KEY)
    _write(files.ca_cert, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.server_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.server_key, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), 0o600)
    return files


def generate_node_keys(directory: str | os.PathLike[str], n: int) -> list[NodeKey]:
    """``n`` EC P-384 OpenSSH key pairs ``supernode-<i>``/``.pub`` in ``directory``."""
    d = _private_dir(directory)
    keys = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP384R1())
        private, public = (d / name for name in node_key_names(i))
        _write(private, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()), 0o600)
        _write(public, key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            + f" hybnn-supernode-{i}\n".encode(), 0o644)
        keys.append(NodeKey(private, public))
    return keys


# -- validation of user material -------------------------------------------------------
def load_tls(directory: str | os.PathLike[str], host: str = HOSTS[0]) -> TlsFiles:
    """The TLS files in ``directory``, checked: they parse, the key is the certificate's,
    the CA signed the certificate, it is valid now and its SAN names ``host``."""
    d = Path(directory).resolve()
    files = TlsFiles(d / CA_CERT, d / SERVER_CERT, d / SERVER_KEY)
    ca, cert = _read_cert(files.ca_cert), _read_cert(files.server_cert)
    key = _read(files.server_key)
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise CredentialError(f"{files.server_key}: not an unencrypted PEM private key "
                              f"({e})") from None
    if _public_der(private.public_key()) != _public_der(cert.public_key()):
        raise CredentialError(f"{files.server_key} does not match {files.server_cert}: "
                              "the key is not the certificate's")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise CredentialError(f"{files.server_cert} is not signed by {files.ca_cert} ({e})"
                              ) from None
    now = datetime.datetime.now(datetime.timezone.utc)
    for path, c in ((files.ca_cert, ca), (files.server_cert, cert)):
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise CredentialError(f"{path} is not valid now (valid "
                                  f"{c.not_valid_before_utc:%Y-%m-%d} to "
                                  f"{c.not_valid_after_utc:%Y-%m-%d})")
    if host not in san_names(cert):
        raise CredentialError(f"{files.server_cert} does not name {host} in its subject "
                              f"alternative names (has: {', '.join(san_names(cert)) or 'none'})")
    return files


def load_node_keys(directory: str | os.PathLike[str], n: int) -> list[NodeKey]:
    """The ``n`` key pairs ``supernode-<i>``/``.pub`` in ``directory``, checked: EC on a
    NIST curve (what Flower accepts), OpenSSH format, each public key its private key's."""
    d = Path(directory).resolve()
    keys = []
    for i in range(n):
        pair = NodeKey(*(d / name for name in node_key_names(i)))
        try:
            private = serialization.load_ssh_private_key(_read(pair.private), password=None)
            public = serialization.load_ssh_public_key(_read(pair.public))
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise CredentialError(f"SuperNode {i}: {pair.private} / {pair.public} are not "
                                  f"an unencrypted OpenSSH key pair ({e})") from None
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise CredentialError(f"{pair.public}: SuperNode keys must be EC (P-384), e.g. "
                                  "ssh-keygen -t ecdsa -b 384 -N '' -f DIR/supernode-0")
        if _public_der(private.public_key()) != _public_der(public):
            raise CredentialError(f"{pair.public} is not the public key of {pair.private}")
        keys.append(pair)
    return keys


def san_names(cert: x509.Certificate) -> list[str]:
    """The IP addresses and DNS names in a certificate's subject alternative names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return ([str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
            + san.get_values_for_type(x509.DNSName))


# -- helpers ---------------------------------------------------------------------------
def _san(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def _private_dir(directory: str | os.PathLike[str]) -> Path:
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    return d


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode`` (no window with wider access)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(mode)  # the umask may have narrowed it further; be exact


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CredentialError(f"{path} not found") from None
    except OSError as e:
        raise CredentialError(f"{path}: {e.strerror}") from None


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError as e:
        raise CredentialError(f"{path}: not a PEM certificate ({e})") from None


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def credentials(directory: str | os.PathLike[str], nodes: int,
                certificates: str | os.PathLike[str] | None = None,
                supernode_keys: str | os.PathLike[str] | None = None) -> Credentials:
    """The user's ``certificates`` and ``supernode_keys`` directories where given
    (validated, used read-only), new material in ``directory`` for the rest."""
    tls = load_tls(certificates) if certificates else generate_tls(directory)
    keys = (load_node_keys(supernode_keys, nodes) if supernode_keys
            else generate_node_keys(directory, nodes))
    return Credentials(tls, keys)
