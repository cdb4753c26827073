"""Certificates and keys for a TLS, SuperNode-authenticated Flower deployment.

:func:`generate_tls` makes a CA and a SuperLink certificate signed by it, its SAN the
given IP addresses and DNS names (default ``IP:127.0.0.1``, ``DNS:localhost``);
:func:`generate_node_keys` makes one EC P-384 key pair per SuperNode in OpenSSH format,
the form ``flwr supernode register`` and ``flower-supernode --auth-supernode-private-key``
take; :func:`generate_deployment` makes both into a new directory (``hybnn pki``).
:func:`load_tls` and :func:`load_node_keys` validate material a user brings (never written
to). Private keys we write are mode 0600; the CA's private key is never written: it signs
once, here.

Server names: an address in use is matched against the certificate's SAN as TLS clients do
(RFC 6125): an IP address only against IP entries, a DNS name against DNS entries, case-
insensitively, where a user's certificate may carry a wildcard as its whole left-most label
(``*.example.org`` names ``a.example.org``, not ``example.org`` or ``a.b.example.org``). The
certificates made here name exact hosts only: :func:`check_host` refuses wildcards.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
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
LOCAL_HOST = "127.0.0.1"  # the SuperLink's address in a local deployment
HOSTS = (LOCAL_HOST, "localhost")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.ASCII)  # RFC 1123 host name label
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


# -- server names ----------------------------------------------------------------------
def check_host(name: str) -> str:
    """``name`` as a certificate names it: an IP address (its canonical form) or a DNS name
    per RFC 1123 (lower case, no trailing dot). Refuses anything else, with the reason: a
    scheme, a port, a path, a wildcard, an address no client can connect to."""
    def refuse(why: str) -> CredentialError:
        return CredentialError(f"{name!r} is not a server name: {why} (give an IP address "
                               "or a DNS name such as superlink.example.org)")

    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_unspecified or ip.is_multicast:
            raise refuse("no client can connect to it")
        if getattr(ip, "scope_id", None):
            raise refuse("a certificate cannot name an IPv6 zone")
        return str(ip)
    if "://" in name:
        raise refuse("no scheme")
    if "/" in name:
        raise refuse("no path")
    if ":" in name:
        raise refuse("no port; a certificate names hosts, not ports")
    if "*" in name:
        raise refuse("wildcards are not made here; name each host")
    host = name.lower().removesuffix(".")
    labels = host.split(".")
    if (len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels)
            or labels[-1].isdigit()):
        raise refuse("a DNS name is dot-separated labels of 1 to 63 letters, digits and "
                     "inner hyphens (RFC 1123), not all-numeric at the end")
    return host


def names_address(cert: x509.Certificate, address: str) -> bool:
    """Whether ``cert``'s SAN names ``address`` as a TLS client checks it (RFC 6125)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        host = address.lower().removesuffix(".")
        return any(_dns_matches(p, host) for p in san.get_values_for_type(x509.DNSName))
    return ip in san.get_values_for_type(x509.IPAddress)


def _dns_matches(pattern: str, host: str) -> bool:
    """RFC 6125 6.4.3: a wildcard only as the whole left-most label of a pattern with at
    least two labels after it, standing for exactly one label of ``host``."""
    pattern = pattern.lower().removesuffix(".")
    if pattern == host:
        return True
    first, _, rest = pattern.partition(".")
    label, _, host_rest = host.partition(".")
    return (first == "*" and "*" not in rest and "." in rest and bool(label)
            and host_rest == rest)


def check_server_name(server_cert: Path, address: str) -> None:
    """Refuse ``server_cert`` unless its SAN names ``address``, where clients will reach it."""
    cert = _read_cert(server_cert)
    if not names_address(cert, address):
        raise CredentialError(f"{server_cert} does not name {address} in its subject "
                              f"alternative names (has: {', '.join(san_names(cert)) or 'none'})")


# -- generation ------------------------------------------------------------------------
def generate_tls(directory: str | os.PathLike[str], hosts: tuple[str, ...] = HOSTS
                 ) -> TlsFiles:
    """A new CA and a server certificate for ``hosts`` (IPs and DNS names, checked by
    :func:`check_host`) in ``directory``."""
    hosts = tuple(dict.fromkeys(check_host(h) for h in hosts))
    if not hosts:
        raise CredentialError("a server certificate needs at least one name")
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
            .subject_name(x509.Name([x509.NameAttribute(  # a CN holds 64 characters
                NameOID.COMMON_NAME, hosts[0] if len(hosts[0]) <= 64 else "hybnn SuperLink")]))
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


def generate_deployment(directory: str | os.PathLike[str], server_names: list[str],
                        nodes: int) -> Credentials:
    """A CA, a SuperLink certificate for ``server_names`` and ``nodes`` SuperNode key pairs
    in the new (or empty) ``directory``; never over material already there."""
    names = tuple(check_host(name) for name in server_names)  # all checked before writing
    if not names:
        raise CredentialError("name the SuperLink's host: --server-name NAME")
    if nodes < 1:
        raise CredentialError(f"at least one SuperNode key pair, got {nodes}")
    d = Path(directory)
    try:
        d.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not d.is_dir() or any(d.iterdir()):
            raise CredentialError(f"{d} already exists and is not an empty directory: "
                                  "choose a new one (existing keys are never replaced)"
                                  ) from None
    return Credentials(generate_tls(d, names), generate_node_keys(d, nodes))


# -- validation of user material -------------------------------------------------------
def load_tls(directory: str | os.PathLike[str], address: str = LOCAL_HOST) -> TlsFiles:
    """The TLS files in ``directory``, checked: they parse, the key is the certificate's,
    the CA signed the certificate, it is valid now and its SAN names ``address``, the
    SuperLink's address in use (see :func:`names_address`)."""
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
    check_server_name(files.server_cert, address)
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
                supernode_keys: str | os.PathLike[str] | None = None,
                address: str = LOCAL_HOST) -> Credentials:
    """The user's ``certificates`` and ``supernode_keys`` directories where given
    (validated for the SuperLink's ``address``, used read-only), new material in
    ``directory`` for the rest (a certificate naming ``address`` and this host)."""
    tls = (load_tls(certificates, address) if certificates
           else generate_tls(directory, (address, *HOSTS)))
    keys = (load_node_keys(supernode_keys, nodes) if supernode_keys
            else generate_node_keys(directory, nodes))
    return Credentials(tls, keys)
