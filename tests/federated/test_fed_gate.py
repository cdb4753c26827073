"""Only the owner reaches a deployment's Control and Runtime APIs (hybnn.federated.gate).

Open Flower authenticates neither: without the gate, any local process could list, stop and
start runs and pose as an app process. The outsider here is a real process of another uid
(``setpriv`` to ``nobody``) with no key, no CA and TLS verification off."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess

import pytest

from hybnn.federated import pki
from hybnn.federated.gate import SUPERLINK_PUBLIC, SUPERNODE_PUBLIC, OwnerGate, socket_owner

HAVE_FLOWER = shutil.which("flower-superlink") is not None
CAN_SWITCH_UID = os.geteuid() == 0 and shutil.which("setpriv") and shutil.which("curl")
NOBODY = 65534


def _connected_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    return server, client, accepted


def test_socket_owner_finds_this_processes_uid_and_nothing_for_strangers():
    server, client, accepted = _connected_pair()
    with server, client, accepted:
        assert socket_owner(client.getsockname(), server.getsockname()) == os.getuid()
        assert socket_owner(("127.0.0.1", 1), server.getsockname()) is None  # no such socket
        assert socket_owner(("10.1.2.3", 4000), server.getsockname()) is None  # remote
        assert socket_owner(("not an address", 1), server.getsockname()) is None


def _call(gate: OwnerGate, path: str, client: tuple[str, int], server: tuple[str, int],
          headers: list[tuple[bytes, bytes]] | None = None) -> int:
    sent: list[dict] = []
    reached: list[str] = []

    async def app(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    gate.app = app
    scope = {"type": "http", "path": path, "client": client, "server": server,
             "headers": headers or []}
    asyncio.run(gate(scope, receive, send))
    assert (sent[0]["status"] == 200) == bool(reached)
    return int(sent[0]["status"])


def test_gate_serves_public_paths_to_anyone_and_the_rest_to_the_owner_only():
    server, client, accepted = _connected_pair()
    with server, client, accepted:
        me, there = client.getsockname(), server.getsockname()
        link = OwnerGate(None, SUPERLINK_PUBLIC)  # type: ignore[arg-type]
        stranger = OwnerGate(None, SUPERLINK_PUBLIC, owner=os.getuid() + 1)  # type: ignore
        for path in ("/health", "/v1/fleet/activate-node", "/v1/fleet/pull-messages"):
            assert _call(stranger, path, ("10.1.2.3", 4000), there) == 200
        for path in ("/v1/control/list-runs", "/v1/control/stop-run", "/v1/runtime/x",
                     "/docs", "/openapi.json", "/v1/fleet", "/healthz", "//v1/control/x"):
            assert _call(link, path, me, there) == 200
            assert _call(stranger, path, me, there) == 403, path
            assert _call(link, path, ("10.1.2.3", 4000), there) == 403, path
        forwarded = [(b"x-forwarded-for", b"127.0.0.1")]
        assert _call(link, "/v1/control/list-runs", me, there, forwarded) == 403
        node = OwnerGate(None, SUPERNODE_PUBLIC, owner=os.getuid() + 1)  # type: ignore
        assert _call(node, "/v1/fleet/activate-node", me, there) == 403  # no Fleet API there
        assert _call(node, "/health", me, there) == 200


def _curl(url: str, user: int | None) -> str:
    cmd = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
           "-X", "POST", "-H", "Content-Type: application/protobuf", "--data-binary", "",
           url]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FLOWER, reason="the fed extra is not installed")
@pytest.mark.skipif(not CAN_SWITCH_UID, reason="needs root, setpriv and curl to act as nobody")
def test_another_user_can_neither_drive_the_superlink_nor_pose_as_an_app(tmp_path):
    from hybnn.federated.deploy import LocalFederation

    creds = pki.credentials(tmp_path / "pki", 1)
    node = {"partition-id": 0, "num-partitions": 1}
    with LocalFederation(tmp_path / "fed", [node], 90.0, creds) as fed:
        link = f"https://127.0.0.1:{fed.superlink_port}"
        node_port = int(fed.procs[1][1].args[fed.procs[1][1].args.index("--port") + 1])
        supernode = f"https://127.0.0.1:{node_port}"
        closed = [f"{link}/v1/control/list-runs", f"{link}/v1/control/stop-run",
                  f"{link}/v1/control/start-run", f"{link}/v1/control/list-nodes",
                  f"{link}/v1/runtime/acquire-task", f"{link}/v1/runtime/pull-task-input",
                  f"{supernode}/v1/runtime/acquire-task"]
        outsider = {url: _curl(url, NOBODY) for url in closed}
        owner = {url: _curl(url, None) for url in closed[:1] + closed[4:5]}
        health = _curl(f"{link}/health", NOBODY)  # the port itself is open (405: POST)
        runs = fed.flwr("ls", "hybnn-local")  # the owner's own flwr CLI still works
    assert outsider == {url: "403" for url in closed}, outsider
    assert owner == {url: "200" for url in owner}, owner
    assert health == "405"
    assert runs["success"] and runs["runs"] == []
