"""The brokers the transport contract suite runs against.

Adding a backend is one class and one line: write a class that satisfies
:class:`Backend` (make a transport, kill the broker, bring it back without its
data) and add a factory to :data:`BACKENDS`. The factory gets pytest's ``request``,
so it can pull a session-scoped server fixture only when its backend is selected.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import pytest

from sessionws._memory import MemoryHub, MemoryTransport
from sessionws._protocols import Transport
from sessionws_nats import NatsTransport
from sessionws_redis import RedisClusterTransport, RedisSentinelTransport, RedisTransport

if TYPE_CHECKING:
    from tests._nats_servers import NatsServer
    from tests._redis_sentinel_servers import SentinelGroup
    from tests._redis_servers import RedisClusterServers, RedisServer

__all__ = ("BACKENDS", "Backend", "Node", "Recorder", "channel_name", "open_nodes")

# Fast reconnects keep the broker-restart tests short.
FAST_RECONNECT: dict[str, Any] = {
    "reconnect_min_delay": 0.01,
    "reconnect_max_delay": 0.1,
    "open_timeout": 5.0,
    "command_timeout": 5.0,
}


class Backend(Protocol):
    """One broker for the contract suite."""

    name: str
    #: Whether ``publish`` reports receivers (else the suite expects ``None``).
    counts_receivers: bool
    #: The shortest marker TTL the broker honours, in seconds.
    shortest_ttl: float

    def make_transport(self, **options: Any) -> Transport:
        """A new, unopened transport to this broker."""
        ...

    async def kill(self) -> None:
        """Make the broker vanish abruptly (SIGKILL), as seen by every transport."""
        ...

    async def restart(self) -> None:
        """Bring the broker back on the same address, without its data."""
        ...

    def cleanup(self) -> None:
        """After a test: leave the broker running for the next one."""
        ...


class MemoryBackend:
    """The in-process hub; kill/restart are ``cut()`` and ``lose_data()`` + ``restore()``."""

    name = "memory"
    counts_receivers = True
    shortest_ttl = 0.05

    def __init__(self) -> None:
        self.hub = MemoryHub()
        self._transports: list[MemoryTransport] = []

    def make_transport(self, **options: Any) -> Transport:
        transport = MemoryTransport(self.hub, max_payload=options.get("max_payload", 1 << 20))
        self._transports.append(transport)
        return transport

    async def kill(self) -> None:
        for transport in self._transports:
            transport.cut()

    async def restart(self) -> None:
        self.hub.lose_data()
        for transport in self._transports:
            transport.restore()

    def cleanup(self) -> None:
        pass


class RedisBackend:
    """A ``redis-server`` process of our own."""

    name = "redis"
    counts_receivers = True
    shortest_ttl = 0.05

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def make_transport(self, **options: Any) -> Transport:
        return RedisTransport.from_url(self.server.url, **{**FAST_RECONNECT, **options})

    async def kill(self) -> None:
        await anyio.to_thread.run_sync(self.server.kill)

    async def restart(self) -> None:
        await anyio.to_thread.run_sync(self.server.start)

    def cleanup(self) -> None:
        if not self.server.alive:
            self.server.start()


class RedisClusterBackend:
    """Three masters of our own; "the broker" dies and returns as a whole."""

    name = "redis-cluster"
    counts_receivers = True
    shortest_ttl = 0.05

    def __init__(self, cluster: RedisClusterServers) -> None:
        self.cluster = cluster

    def make_transport(self, **options: Any) -> Transport:
        return RedisClusterTransport.from_url(self.cluster.url, **{**FAST_RECONNECT, **options})

    async def kill(self) -> None:
        for server in self.cluster.servers:
            await anyio.to_thread.run_sync(server.kill)

    async def restart(self) -> None:
        await anyio.to_thread.run_sync(self._start_all)

    def _start_all(self) -> None:
        for server in self.cluster.servers:
            if not server.alive:
                server.start()
        self.cluster.wait_healthy()

    def cleanup(self) -> None:
        if not all(server.alive for server in self.cluster.servers):
            self._start_all()


class RedisSentinelBackend:
    """A master and a replica behind three sentinels; "the broker" (both data nodes)
    dies and returns empty. The sentinels wait a minute before failing over, so
    they never do here: failovers have tests of their own."""

    name = "redis-sentinel"
    counts_receivers = True
    shortest_ttl = 0.05

    def __init__(self, group: SentinelGroup) -> None:
        self.group = group

    def make_transport(self, **options: Any) -> Transport:
        return RedisSentinelTransport.from_url(self.group.url, **{**FAST_RECONNECT, **options})

    async def kill(self) -> None:
        await anyio.to_thread.run_sync(self.group.kill_data_nodes)

    async def restart(self) -> None:
        await anyio.to_thread.run_sync(self.group.restart_data_nodes)

    def cleanup(self) -> None:
        if not all(server.alive for server in self.group.servers):
            self.group.restart_data_nodes()


class NatsBackend:
    """A ``nats-server -js`` process of our own; a restart wipes its JetStream store."""

    name = "nats"
    counts_receivers = False  # core NATS does not report receivers
    shortest_ttl = 1.0  # Nats-TTL has whole seconds, 1 s at least

    def __init__(self, server: NatsServer) -> None:
        self.server = server

    def make_transport(self, **options: Any) -> Transport:
        fast = {"reconnect_time_wait": 0.05, "poll_interval": 0.05, "request_timeout": 5.0}
        return NatsTransport.from_url(self.server.url, **{**fast, **options})

    async def kill(self) -> None:
        self.server.kill()

    async def restart(self) -> None:
        self.server.wipe_store()
        await self.server.start()

    def cleanup(self) -> None:
        if not self.server.running:
            self.server.start_blocking()


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "memory": lambda request: MemoryBackend(),
    "redis": lambda request: RedisBackend(request.getfixturevalue("redis_server")),
    "redis-cluster": lambda request: RedisClusterBackend(request.getfixturevalue("redis_cluster")),
    "redis-sentinel": lambda request: RedisSentinelBackend(request.getfixturevalue("redis_sentinel")),
    "nats": lambda request: NatsBackend(request.getfixturevalue("nats_server_for_contract")),
}


class Recorder:
    """A :class:`~sessionws.transport.TransportHandler` that remembers what it was told."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.events: list[str] = []
        self._changed = anyio.Event()

    def message_received(self, channel: str, payload: bytes) -> None:
        self.messages.append((channel, payload))
        self._wake()

    def connection_lost(self) -> None:
        self.events.append("lost")
        self._wake()

    def connection_restored(self) -> None:
        self.events.append("restored")
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def received(self, channel: str) -> list[bytes]:
        """The payloads received on ``channel``, in order."""
        return [payload for name, payload in self.messages if name == channel]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (checked after every callback)."""
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    async def wait_for_messages(self, channel: str, count: int, timeout: float = 5.0) -> list[bytes]:
        """Wait until ``count`` payloads arrived on ``channel`` and return them."""
        await self.wait_for(lambda: len(self.received(channel)) >= count, timeout)
        return self.received(channel)

    async def wait_for_event(self, event: str, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``event`` ("lost" or "restored") was reported ``count`` times."""
        await self.wait_for(lambda: self.events.count(event) >= count, timeout)


@dataclass
class Node:
    """An open transport and what its handler heard."""

    transport: Transport
    recorder: Recorder = field(default_factory=Recorder)


@asynccontextmanager
async def open_nodes(backend: Backend, count: int, **options: Any) -> AsyncIterator[list[Node]]:
    """``count`` transports to ``backend``, each open with its own :class:`Recorder`."""
    async with AsyncExitStack() as stack:
        nodes = [Node(backend.make_transport(**options)) for _ in range(count)]
        for node in nodes:
            await stack.enter_async_context(node.transport.open(node.recorder))
        yield nodes


def channel_name(label: str = "c", *, tag: str | None = None) -> str:
    """A fresh channel name shaped like the registry's (``app.k.<hex>``).

    Channels with the same ``tag`` share a Redis Cluster hash slot, so messages
    on them keep their relative order there too.
    """
    unique = uuid.uuid4().hex
    return f"test.{label}.{{{tag}}}.{unique}" if tag is not None else f"test.{label}.{unique}"
