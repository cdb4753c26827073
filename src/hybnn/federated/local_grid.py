"""A Flower Grid that runs every node's ClientApp in this process, one message at a time.

The ServerApp, the strategies, the ClientApp and its mods are Flower's and hybnn's own; only
the transport is replaced. Each message goes through Flower's protobuf serialization both
ways (:func:`flwr.common.serde.message_to_proto`), as it would over the wire, so a client
never shares an object with the server or another client; each node keeps one
:class:`~flwr.app.Context` for the whole run, as a SuperNode does. A ClientApp that raises
becomes an error reply, as in Flower's runtimes.

What it is for: many federations (strategy tables, hostile-client drills) and many clients
(1,000) on one machine, without Ray's start-up and per-message scheduling. It is sequential:
seconds per round are the sum of the sampled clients' work. ``hybnn federate --engine ray``
(the default) and ``--deploy`` run the same apps through Flower's own runtimes.

:func:`run_local` is the one way to run a federation on it (benchmarks, tests, and
:func:`hybnn.federated.simulation.federate` with ``engine="local"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from hybnn.federated.client_app import make_client_app
from hybnn.federated.config import FedConfig
from hybnn.federated.server_app import run_server

FIRST_NODE_ID = 2**63 + 1  # node ids are uint64 in Flower: beyond int64 on purpose
SERVER_NODE_ID = 0


class LocalGrid(Grid):
    """``clients`` nodes with partition ids 0..clients-1 running ``app``; with
    ``node_data``, node i's config names its own data file ``node_data[i]``, and
    ``node_configs[i]`` adds to it (e.g. the node's own ``encoder``)."""

    def __init__(self, app: ClientApp, clients: int, run_id: int = 1,
                 run_config: dict[str, Any] | None = None,
                 node_data: Sequence[str] = (),
                 node_configs: Sequence[Mapping[str, Any]] = ()) -> None:
        self.app = app
        self.run_id = run_id
        configs: list[dict[str, Any]] = [{"partition-id": i, "num-partitions": clients}
                                         for i in range(clients)]
        for config, path in zip(configs, node_data, strict=False):
            config["data"] = str(path)
        for config, extra in zip(configs, node_configs, strict=False):
            config.update(extra)
        self.contexts = {
            FIRST_NODE_ID + i: Context(run_id=run_id, node_id=FIRST_NODE_ID + i,
                                       node_config=configs[i],
                                       state=RecordDict(), run_config=dict(run_config or {}))
            for i in range(clients)}
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SERVER_NODE_ID

    # -- what a ServerApp uses -----------------------------------------------------------
    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        """Each message's reply, in order (there is no network to time out)."""
        return [self._deliver(m) for m in messages]

    def _deliver(self, msg: Message) -> Message:
        msg.metadata.__dict__["_message_id"] = str(uuid4())
        msg.metadata.__dict__["_run_id"] = self.run_id
        inbound = message_from_proto(message_to_proto(msg))  # a copy, as over the wire
        context = self.contexts[int(msg.metadata.dst_node_id)]
        try:
            reply = self.app(message=inbound, context=context)
        except Exception as exc:  # what Flower's runtimes do with a failing ClientApp
            error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                          reason=f"{type(exc).__name__}: {exc}")
            reply = Message(error, reply_to=inbound)
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        return message_from_proto(message_to_proto(reply))

    # -- the rest of the Grid interface ----------------------------------------------------
    def set_run(self, run: Any) -> None:
        self.run_id = int(run.run_id)

    @property
    def run(self) -> Run:
        return Run.create_empty(self.run_id)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("LocalGrid delivers with send_and_receive only")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("LocalGrid delivers with send_and_receive only")


def run_local(cfg: FedConfig, mods: Sequence[Mod] = (), sink: dict[str, Any] | None = None,
              node_data: Sequence[str] = (), node_configs: Sequence[Mapping[str, Any]] = ()
              ) -> tuple[dict[str, Any], LocalGrid]:
    """Run ``cfg``'s federation on a :class:`LocalGrid` of ``cfg.clients`` nodes, each
    ClientApp behind ``mods``: (the federation log of
    :func:`~hybnn.federated.server_app.run_server`, the grid). Raises as ``run_server``
    does; ``sink`` receives the log even then. ``node_data``: each node's own data file;
    ``node_configs``: more of each node's config (``{"encoder": DIR}``)."""
    grid = LocalGrid(make_client_app(mods), cfg.clients, node_data=node_data,
                     node_configs=node_configs)
    context = Context(run_id=grid.run_id, node_id=SERVER_NODE_ID, node_config={},
                      state=RecordDict(), run_config={})
    return run_server(grid, context, cfg, sink), grid
