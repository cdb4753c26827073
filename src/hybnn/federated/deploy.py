"""A real Flower deployment on this machine: a SuperLink, N SuperNodes and `flwr run`.

:class:`LocalFederation` starts ``flower-superlink`` and ``flower-supernode`` processes on
this machine (free ports, each in its own session and with its own ``FLWR_HOME``): the
SuperLink on its server address (127.0.0.1 unless given), which the nodes and the ``flwr``
CLI connect to, each node's own Runtime API on 127.0.0.1. It waits for their ``/health``
endpoints and for the nodes to be online, and stops every process group on exit (SIGTERM,
then SIGKILL). Secure by default: given :class:`~hybnn.federated.pki.Credentials`, the
SuperLink serves TLS with a certificate that names its address and admits only SuperNodes
whose public keys were registered with ``flwr supernode register``
(``--enable-supernode-auth``); every node verifies the SuperLink against the CA and signs in
with its private key; the nodes' own Runtime API (a certificate for 127.0.0.1 from a CA of
its own: the SuperLink's key never goes to a node) and the ``flwr`` CLI use TLS too.
Every server runs behind :class:`~hybnn.federated.gate.OwnerGate` (also with
``--insecure``): only this user's processes on this host reach the Control and Runtime
APIs. Without credentials everything runs ``--insecure``. :func:`deploy` runs the
FedHyBNN app (``flower_app/pyproject.toml``) on it, polls ``flwr ls --format json`` until
the run is ``finished:*`` and fails unless it is ``finished:completed`` — ``flwr run
--stream`` exits 0 even when a run fails. Every wait is bounded.

Command line: ``hybnn federate --deploy ...``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from hybnn.errors import CredentialError, HybnnError
from hybnn.federated.app_path import app_path
from hybnn.federated.config import FLOWER_ENV, FedConfig
from hybnn.federated.pki import (
    LOCAL_HOST,
    Credentials,
    NodeKey,
    TlsFiles,
    check_host,
    check_server_name,
    credentials,
    generate_tls,
)

APP_DIR = app_path()
CONNECTION = "hybnn-local"


class DeploymentError(HybnnError):
    """A process did not start, a run did not finish, or it finished other than completed."""


def free_port(host: str = LOCAL_HOST, port: int = 0) -> int:
    """A TCP port this machine can listen on at ``host`` now: ``port`` if given, else one
    the system picks."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, port))
            return int(s.getsockname()[1])
    except OSError as e:
        raise DeploymentError(f"cannot listen on {netloc(host, port)} here: "
                              f"{e.strerror or e}") from None


def netloc(host: str, port: int) -> str:
    """``HOST:PORT``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_server_address(address: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (an IPv6 address in brackets when a port follows) as (host, port),
    port 0 when not given; HOST an IP address or an RFC 1123 DNS name (no scheme or path)."""
    text = address.strip()
    host, port = text, None
    if "/" not in text:  # else a scheme or a path, which check_host names
        if bracketed := re.fullmatch(r"\[([^\]]+)\](?::([^:]*))?", text):
            host, port = bracketed[1], bracketed[2]
        elif text.count(":") == 1:  # several: an IPv6 address without a port
            host, port = text.split(":")
    try:
        host = check_host(host)
    except CredentialError as e:
        raise DeploymentError(f"--server-address {address!r}: {e}") from None
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise DeploymentError(f"--server-address {address!r}: the port must be a number "
                              "from 1 to 65535")
    return host, int(port or 0)


def wait_healthy(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float,
                 ca_cert: Path | None = None, host: str = LOCAL_HOST) -> None:
    """Poll host:port/health (HTTPS verified against ``ca_cert`` if given) until 200,
    the process dies, or ``timeout``."""
    url = f"{'https' if ca_cert else 'http'}://{netloc(host, port)}/health"
    context = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeploymentError(f"{what} exited with code {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise DeploymentError(f"{what} not healthy on {netloc(host, port)} after "
                          f"{timeout:g} s")


class LocalFederation:
    """SuperLink + SuperNodes on this machine; a context manager that always stops them.

    The SuperLink listens on ``host`` (an IP address or DNS name of this machine) and
    ``port`` (0: a free one); nodes and the ``flwr`` CLI connect there. ``credentials``
    None runs everything ``--insecure``; otherwise the server certificate must name
    ``host``, and node ``i`` signs in with ``credentials.node_keys[i]``, registered before
    it starts."""

    def __init__(self, root: str | os.PathLike[str], node_configs: list[dict[str, Any]],
                 startup_timeout: float = 90.0, credentials: Credentials | None = None,
                 host: str = LOCAL_HOST, port: int = 0, node_hosts: Sequence[str] = ()
                 ) -> None:
        self.root = Path(root).resolve()
        self.node_configs = node_configs
        # where node i's own Runtime API listens (its ClientApps connect there)
        self.node_hosts = [check_host(h) for h in node_hosts] or [LOCAL_HOST]
        self.startup_timeout = startup_timeout
        self.credentials = credentials
        self.host, self.port = host, port
        if credentials and len(credentials.node_keys) < len(node_configs):
            raise DeploymentError(f"{len(credentials.node_keys)} SuperNode keys for "
                                  f"{len(node_configs)} SuperNodes")
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.superlink_port = 0
        self.runtime_tls: TlsFiles | None = None  # the nodes' Runtime API, made by start()
        self.cli_home = self.root / "flwr-cli"

    # -- processes ---------------------------------------------------------------------
    def env(self, home: Path) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        return {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(home)}

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - owned by the process
        home = self.root / name  # each process its own working directory and FLWR_HOME
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=self.env(home), cwd=home,
                                start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    @property
    def ca_cert(self) -> Path | None:
        return self.credentials.tls.ca_cert if self.credentials else None

    @property
    def superlink_address(self) -> str:
        """Where the nodes and the ``flwr`` CLI reach the SuperLink: ``HOST:PORT``."""
        return netloc(self.host, self.superlink_port)

    def start(self) -> LocalFederation:
        tls = self.credentials.tls if self.credentials else None
        if tls:  # nodes would fail the handshake one by one: refuse before starting any
            check_server_name(tls.server_cert, self.host)
        self.root.mkdir(parents=True, exist_ok=True)
        self.superlink_port = free_port(self.host, self.port)
        if tls:
            self.runtime_tls = generate_tls(self.root / "runtime-pki",
                                            (LOCAL_HOST, "localhost", *self.node_hosts))
        security = ["--ssl-certfile", str(tls.server_cert), "--ssl-keyfile",
                    str(tls.server_key), "--ssl-ca-certfile", str(tls.ca_cert),
                    "--enable-supernode-auth"] if tls else ["--insecure"]
        link = self._spawn("superlink", [
            *_gated("superlink"), *security, "--host", self.host,
            "--port", str(self.superlink_port), "--database", str(self.root / "state.db"),
            "--disable-runtime-dependency-installation"])
        wait_healthy(self.superlink_port, link, "flower-superlink", self.startup_timeout,
                     self.ca_cert, self.host)
        self.cli_home.mkdir(parents=True, exist_ok=True)
        connection = (f'root-certificates = "{tls.ca_cert.resolve()}"' if tls
                      else "insecure = true")
        (self.cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.superlink_address}"\n{connection}\n')
        if self.credentials:  # a node may only start once its key is registered
            with ThreadPoolExecutor(len(self.node_configs)) as pool:
                list(pool.map(self.register,
                              self.credentials.node_keys[:len(self.node_configs)]))
        keys = self.credentials.node_keys if self.credentials else []
        nodes = [(i, *self.start_supernode(f"supernode-{i}", node_config,
                                           self.node_security(keys[i] if keys else None),
                                           self.node_host(i)))
                 for i, node_config in enumerate(self.node_configs)]
        runtime_ca = self.runtime_tls.ca_cert if self.runtime_tls else None
        for i, port, proc in nodes:  # all started, now wait for all
            wait_healthy(port, proc, f"flower-supernode {i}", self.startup_timeout,
                         runtime_ca, self.node_host(i))
        self.wait_nodes_online(len(self.node_configs))
        return self

    def register(self, key: NodeKey) -> int:
        """``flwr supernode register`` a node's public key; its node id."""
        return int(self.flwr("supernode", "register", str(key.public), CONNECTION)["node-id"])

    def node_security(self, key: NodeKey | None) -> list[str]:
        """``flower-supernode`` flags for this federation's security, signing in with ``key``.

        With TLS the node verifies the SuperLink against the CA, and its own Runtime API
        (for its ClientApp processes, on 127.0.0.1) serves the node-local certificate that
        :meth:`start` made: the SuperLink's private key stays with the SuperLink."""
        if not self.credentials:
            return ["--insecure"]
        if self.runtime_tls is None:
            raise DeploymentError("start the federation before its nodes")
        local = self.runtime_tls
        flags = ["--root-certificates", str(self.credentials.tls.ca_cert), "--ssl-certfile",
                 str(local.server_cert), "--ssl-keyfile", str(local.server_key),
                 "--ssl-ca-certfile", str(local.ca_cert)]
        return flags + (["--auth-supernode-private-key", str(key.private)] if key else [])

    def node_host(self, i: int) -> str:
        return self.node_hosts[i % len(self.node_hosts)]

    def start_supernode(self, name: str, node_config: dict[str, Any], security: list[str],
                        host: str = LOCAL_HOST) -> tuple[int, subprocess.Popen[bytes]]:
        """Spawn ``flower-supernode SECURITY ...`` (log ``name.log``) with its Runtime API on
        ``host``; its port and process."""
        port = free_port(host)
        return port, self._spawn(name, [
            *_gated("supernode"), *security,
            "--superlink", self.superlink_address,
            "--host", host, "--port", str(port),
            "--node-config", _toml_pairs(node_config)])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every process group (nodes first), then SIGKILL what is left."""
        for _, proc in reversed(self.procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _, proc in self.procs:
            _signal_group(proc, signal.SIGKILL)  # the group may hold app subprocesses
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()

    def __enter__(self) -> LocalFederation:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- flwr CLI ----------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run ``flwr ARGS --format json`` against this SuperLink; the parsed JSON."""
        cmd = [_bin("flwr"), *args, "--format", "json"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                 env=self.env(self.cli_home), cwd=self.root)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"`flwr {' '.join(args[:2])}` took over {timeout:g} s"
                                  ) from None
        try:
            out = json.loads(res.stdout[res.stdout.find("{"):])
        except ValueError:
            raise DeploymentError(f"`flwr {' '.join(args[:2])}` gave no JSON (exit "
                                  f"{res.returncode}): {(res.stdout + res.stderr)[-500:]}"
                                  ) from None
        if not out.get("success", False):
            raise DeploymentError(f"`flwr {' '.join(args[:2])}` failed: "
                                  f"{out.get('error-message', out)}")
        return out

    def wait_nodes_online(self, n: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            nodes = self.flwr("supernode", "list", CONNECTION).get("nodes", [])
            online = sum(1 for node in nodes if node.get("status") == "online")
            if online >= n:
                return
            if time.monotonic() > deadline:
                raise DeploymentError(f"{online} of {n} SuperNodes online after "
                                      f"{self.startup_timeout:g} s")
            time.sleep(1.0)

    def run(self, app: str | os.PathLike[str], run_config: dict[str, Any]) -> int:
        """Submit a run; its id."""
        out = self.flwr("run", str(app), CONNECTION, "--run-config", _toml_pairs(run_config))
        return int(out["run-id"])

    def status(self, run_id: int) -> dict[str, Any]:
        runs = self.flwr("ls", CONNECTION, "--run-id", str(run_id)).get("runs", [])
        if not runs:
            raise DeploymentError(f"run {run_id} is unknown to the SuperLink")
        return runs[0]

    def wait_run(self, run_id: int, timeout: float, poll: float = 2.0) -> dict[str, Any]:
        """Poll until the run is ``finished:*``; its last status record."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.status(run_id)
            if str(run.get("status", "")).startswith("finished"):
                return run
            if time.monotonic() > deadline:
                self.flwr("stop", str(run_id), CONNECTION)
                raise DeploymentError(f"run {run_id} still {run.get('status')} after "
                                      f"{timeout:g} s; stopped it")
            time.sleep(poll)


def deploy(cfg: FedConfig, out: str | os.PathLike[str], pretrain_epochs: int = 20,
           centralized: bool = True, run_timeout: float | None = None,
           startup_timeout: float = 90.0, keep_state: bool = False, insecure: bool = False,
           certificates: str | os.PathLike[str] | None = None,
           supernode_keys: str | os.PathLike[str] | None = None,
           server_address: str | None = None, node_data: Sequence[str] = (),
           node_hosts: Sequence[str] = (),
           node_configs: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Run ``cfg`` on a real local deployment; write and return results.json's content.
    ``node_data``: SuperNode i's own data file (its node config ``data``, ``cfg.local_data``);
    ``node_hosts``: the local addresses the nodes' Runtime APIs listen on, in turn;
    ``node_configs``: more node config for SuperNode i (e.g. its own ``encoder``).

    The SuperLink listens on ``server_address`` (``HOST[:PORT]``, default 127.0.0.1 and a
    free port). TLS and SuperNode authentication unless ``insecure``: with the CA and
    SuperLink certificate (its SAN naming HOST) in ``certificates`` and the node key pairs
    in ``supernode_keys`` (see :mod:`hybnn.federated.pki`), each generated into
    ``OUT/deployment/pki`` when not given.
    """
    host, port = parse_server_address(server_address) if server_address else (LOCAL_HOST, 0)
    if insecure and (certificates or supernode_keys):
        raise CredentialError("--insecure runs without certificates and keys: drop "
                              "--certificates / --supernode-keys, or --insecure")
    free_port(host, port)  # an address this machine cannot listen on fails now
    from hybnn.federated.report import build_results, centralized_baseline, write_report
    from hybnn.federated.simulation import ensure_encoder

    out = Path(out).resolve()
    root = out / "deployment"
    for given in (certificates, supernode_keys):
        if given and Path(given).resolve().is_relative_to(root):
            raise CredentialError(f"{given} is inside {root}, which every deployment "
                                  "replaces: copy it elsewhere first")
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    # Credentials before the encoder: a bad certificate fails in a second, not after pretraining.
    creds = None if insecure else credentials(root / "pki", cfg.clients, certificates,
                                                supernode_keys, host)
    cfg = ensure_encoder(cfg, out, pretrain_epochs).with_(out=str(out))
    log_path = out / "federation.json"
    log_path.unlink(missing_ok=True)
    nodes = [{"partition-id": i, "num-partitions": cfg.clients, "encoder": cfg.encoder}
             for i in range(cfg.clients)]
    for node, path in zip(nodes, node_data, strict=False):  # each node's own file
        node["data"] = str(Path(path).resolve())
    for node, extra in zip(nodes, node_configs, strict=False):
        node.update(extra)
    timeout = run_timeout or cfg.rounds * 2 * cfg.round_timeout + cfg.node_wait + 120
    t0 = time.perf_counter()
    with LocalFederation(root, nodes, startup_timeout, creds, host, port, node_hosts) as fed:
        app = root / "app"
        shutil.copytree(APP_DIR, app)
        run_id = fed.run(app, cfg.to_record())
        run = fed.wait_run(run_id, timeout)
    seconds = time.perf_counter() - t0
    if not keep_state:
        for name in ("state.db", "state.db-shm", "state.db-wal"):
            (root / name).unlink(missing_ok=True)
    if run.get("status") != "finished:completed" or not log_path.is_file():
        raise DeploymentError(f"run {run_id} ended {run.get('status')} "
                              f"({run.get('status-details')}); logs in {root}")
    log = json.loads(log_path.read_text())
    central = centralized_baseline(cfg) if centralized else None
    results = build_results(log, central, {
        "runtime": "deployment", "seconds": seconds, "run_id": run_id,
        "run_status": run.get("status"), "network_traffic": run.get("network-traffic"),
        "compute_time": run.get("compute-time"),
        "security": {"tls": creds is not None, "supernode_auth": creds is not None}})
    write_report(out, results)
    return results


def _bin(name: str) -> str:
    """The Flower executable next to this Python (a venv), else on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise DeploymentError(f"{name} not found: install the fed extra "
                              "(pip install 'hybnn[fed]')")
    return found


def _gated(server: str) -> list[str]:
    """The command that runs ``flower-SERVER`` behind :class:`~hybnn.federated.gate.OwnerGate`
    (only this user's local processes reach its Control and Runtime APIs)."""
    _bin(f"flower-{server}")  # the fed extra is installed
    return [sys.executable, "-m", "hybnn.federated.gate", server]


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string


def _toml_pairs(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={_toml_value(v)}" for k, v in values.items())
