"""A cluster of registries inside one process, on one in-memory broker (a ``MemoryHub``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from sessionws._handles import Handle
from sessionws._memory import MemoryHub, MemoryTransport
from sessionws._registry import SessionRegistry
from sessionws.testing._connection import RecordingConnection
from sessionws.testing._waiting import DEFAULT_TIMEOUT, wait_until

__all__ = ("TEST_OPTIONS", "MemoryCluster", "memory_cluster")

#: Registry options for tests: short heartbeats and linger, so membership and
#: unsubscriptions settle quickly, with deadlines still generous for a loaded machine.
TEST_OPTIONS: Mapping[str, Any] = {
    "heartbeat_interval": 0.25,
    "linger": 0.05,
    "close_timeout": 2.0,
    "confirm_timeout": 5.0,
}


class MemoryCluster:
    """Running registries (nodes) sharing one :class:`~sessionws.MemoryHub`.

    ``cluster[0]`` is the first node, a :class:`~sessionws.SessionRegistry`. What a
    test can do to the broker: :meth:`cut` a node off and :meth:`restore` it (its
    registry sees the connection drop and, on return, reconciles what it missed),
    :meth:`cut_off` for a block, and ``cluster.hub.lose_data()`` for a broker that
    restarted without its data (nodes close their sockets with 1012).
    """

    def __init__(self, hub: MemoryHub, nodes: list[SessionRegistry]) -> None:
        self.hub = hub
        self.nodes = nodes

    def __getitem__(self, index: int) -> SessionRegistry:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[SessionRegistry]:
        return iter(self.nodes)

    def __repr__(self) -> str:
        return f"<MemoryCluster {[node.node_id for node in self.nodes]}>"

    def transport(self, index: int) -> MemoryTransport:
        """Node ``index``'s connection to the hub."""
        transport = self.nodes[index].transport
        if not isinstance(transport, MemoryTransport):  # only if a test swapped it
            raise TypeError(f"node {index} does not use a MemoryTransport")
        return transport

    def cut(self, index: int) -> None:
        """Cut node ``index`` off the broker: it keeps serving its own sockets, its
        subscriptions vanish, its closes wait in its outbox, and it is not ``healthy``."""
        self.transport(index).cut()

    def restore(self, index: int) -> None:
        """Reconnect node ``index``: it resubscribes, reconciles what it missed (closing
        sockets whose keys were closed meanwhile) and sends its outbox. Wait for it with
        :meth:`wait_healthy`."""
        self.transport(index).restore()

    @asynccontextmanager
    async def cut_off(self, index: int, *, timeout: float = DEFAULT_TIMEOUT) -> AsyncIterator[None]:
        """Node ``index`` is off the broker inside the block; after it, the node is back
        and has reconciled (the block waits for ``healthy``)."""
        self.cut(index)
        await wait_until(
            lambda: not self.nodes[index].healthy,
            timeout=timeout,
            message=f"node {index} did not notice the cut",
        )
        try:
            yield
        finally:
            self.restore(index)
        await self.wait_healthy(index, timeout=timeout)

    async def wait_healthy(self, index: int | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until node ``index`` (default: every node) is connected and reconciled."""
        nodes = self.nodes if index is None else [self.nodes[index]]
        await wait_until(
            lambda: all(node.healthy for node in nodes),
            timeout=timeout,
            message=lambda: "not healthy: " + ", ".join(node.node_id for node in nodes if not node.healthy),
        )

    async def wait_ready(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until every node knows every other as live (confirmed closes and
        counts then expect an answer from each)."""
        ids = {node.node_id for node in self.nodes}
        await wait_until(
            lambda: all(ids - {node.node_id} <= node.live_nodes() for node in self.nodes),
            timeout=timeout,
            message="the nodes did not all hear each other's heartbeats",
        )

    async def connect(
        self, index: int, keys: str | Iterable[str], *, name: str = ""
    ) -> tuple[RecordingConnection, Handle]:
        """Register a new :class:`RecordingConnection` on node ``index`` under ``keys``."""
        connection = RecordingConnection(name)
        handle = await self.nodes[index].register(connection, keys)
        return connection, handle


@asynccontextmanager
async def memory_cluster(
    size: int = 3,
    *,
    hub: MemoryHub | None = None,
    node_prefix: str = "node",
    **options: Any,
) -> AsyncIterator[MemoryCluster]:
    """Run ``size`` registries on one hub for the block; yield once they know each other.

    ``options`` go to every :class:`~sessionws.SessionRegistry` (over
    :data:`TEST_OPTIONS`), e.g. ``signing_keys=[...]``. Nodes are named
    ``node0``, ``node1``...; give ``hub`` (e.g. ``MemoryHub.named("app")``, which
    ``memory://app`` URLs share) to put them beside your app's own registry.
    """
    if size < 1:
        raise ValueError("a cluster needs at least one node")
    hub = MemoryHub() if hub is None else hub
    settings = {**TEST_OPTIONS, **options}
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                SessionRegistry(MemoryTransport(hub), node_id=f"{node_prefix}{index}", **settings)
            )
            for index in range(size)
        ]
        cluster = MemoryCluster(hub, nodes)
        await cluster.wait_ready()
        yield cluster
