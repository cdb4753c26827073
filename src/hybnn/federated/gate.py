"""A closed door in front of Flower's owner-only APIs: the Control and Runtime APIs.

Flower 1.41 serves its Fleet, Control and Runtime APIs on one HTTP port of the SuperLink,
and a Runtime API on each SuperNode. Open Flower authenticates none but the Fleet API
(SuperNode keys): its Control API authentication is a no-op without the Enterprise OIDC
plugin, and any process that reaches a Runtime API port is trusted as an app process. So
any local process could list, stop or start runs (starting one runs the submitted app's
code on every SuperNode), or pose as a ServerApp or ClientApp.

:class:`OwnerGate` is an ASGI middleware that closes that door. A request to a path that
is not public (``/health`` and, on a SuperLink, ``/v1/fleet/...``) is served only if it
comes over a TCP connection from a socket of this machine owned by the server's own user
id, found in the kernel's socket table (``/proc/net/tcp`` and ``tcp6``, the uid column of
the peer's socket); every other request gets HTTP 403. Remote peers and other users are
refused; so is a request carrying ``X-Forwarded-For`` (uvicorn rewrites the client
address from it). The Fleet API stays open to the network, behind TLS and SuperNode
authentication as before.

``python -m hybnn.federated.gate superlink|supernode ARGS`` runs ``flower-superlink`` /
``flower-supernode`` with ARGS and the gate installed; :mod:`hybnn.federated.deploy` starts
its servers this way. The threat model is in docs/federated.md.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths anyone may reach: health checks, and on a SuperLink the Fleet API (SuperNodes).
SUPERLINK_PUBLIC = ("/health", "/v1/fleet/")
SUPERNODE_PUBLIC = ("/health",)
_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_ESTABLISHED = "01"


def _address(field: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """An address of ``/proc/net/tcp*``: hex address in host byte order per 32-bit word,
    then ``:PORT`` in hex."""
    host, port = field.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, int(port, 16)
    return ip, int(port, 16)


def socket_owner(client: tuple[str, int], server: tuple[str, int],
                 tables: tuple[str, ...] = _TCP_TABLES) -> int | None:
    """The uid that owns this machine's TCP socket connected from ``client`` to ``server``,
    or None when no such socket is here (the peer is on another machine)."""
    try:
        want = (ipaddress.ip_address(client[0]), int(client[1]),
                ipaddress.ip_address(server[0]), int(server[1]))
    except ValueError:
        return None
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != _ESTABLISHED:
                continue
            try:
                local, remote = _address(fields[1]), _address(fields[2])
            except ValueError:
                continue
            if (*local, *remote) == want:
                return int(fields[7])
    return None


class OwnerGate:
    """ASGI middleware: non-public paths only for local peers of the server's own uid."""

    def __init__(self, app: ASGIApp, public: tuple[str, ...] = SUPERLINK_PUBLIC,
                 owner: int | None = None) -> None:
        self.app = app
        self.public = public
        self.owner = os.getuid() if owner is None else owner

    def is_public(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p))
                   for p in self.public)

    def allowed(self, scope: Scope) -> bool:
        if self.is_public(str(scope.get("path", ""))):
            return True
        headers = dict(scope.get("headers") or [])
        if b"x-forwarded-for" in headers or b"forwarded" in headers:
            return False  # the client address may have been rewritten from them
        client, server = scope.get("client"), scope.get("server")
        if not client or not server:
            return False
        return socket_owner(tuple(client), tuple(server)) == self.owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket") or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = b"forbidden: this API is reserved to the server's owner on its own host\n"
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _install_superlink_gate() -> None:
    import flwr.superlink.main as link
    from starlette.middleware import Middleware

    flower_middleware = link._get_middleware

    def middleware() -> list[Middleware]:  # outermost first: the gate before all of Flower's
        return [Middleware(OwnerGate, public=SUPERLINK_PUBLIC), *flower_middleware()]

    link._get_middleware = middleware


def _install_supernode_gate() -> None:
    import flwr.supernode.main as node

    flower_create_app = node.create_app

    def create_app(*args: Any, **kwargs: Any) -> Any:
        app = flower_create_app(*args, **kwargs)
        app.add_middleware(OwnerGate, public=SUPERNODE_PUBLIC)  # added last: outermost
        return app

    node.create_app = create_app


def main(argv: list[str] | None = None) -> None:
    """``python -m hybnn.federated.gate superlink|supernode FLOWER_ARGS...``"""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("superlink", "supernode"):
        sys.exit("usage: python -m hybnn.federated.gate superlink|supernode [FLOWER ARGS]")
    if args[0] == "superlink":
        _install_superlink_gate()
        from flwr.superlink.cli.flower_superlink import flower_superlink as run
        sys.argv = ["flower-superlink", *args[1:]]
    else:
        _install_supernode_gate()
        from flwr.supernode.cli.flower_supernode import flower_supernode as run
        sys.argv = ["flower-supernode", *args[1:]]
    from hybnn.federated.flower_logs import plain_flower_logs

    plain_flower_logs()  # its log is a file of the deployment's directory
    run()


if __name__ == "__main__":
    main()
