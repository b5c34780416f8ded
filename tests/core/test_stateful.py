"""A hypothesis state machine drives three registries on one hub against a model.

Rules register and unregister connections, close, revoke and send by key (with and
without ``exclude``), and cut nodes off the hub and restore them. After every step the
invariants are checked: no connection is ever closed unless a close or revoke of one of
its keys was issued after it registered (or while it was registering cut off, when the
node cannot know the order); once every node is connected and the cluster is quiet,
exactly the doomed connections are closed, the registries' counts match the model, and
every connection received exactly the messages sent to it while it was open, in order
(unless a send was lost to an outage: sends are at-most-once across outages, closes are
not).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sessionws import Handle, MemoryHub, MemoryTransport, SessionRegistry
from tests.core.helpers import RecordingConnection

KEYS = ("a", "b", "c")
NODES = 3
T = TypeVar("T")


@dataclass
class ModelConnection:
    node: int
    keys: tuple[str, ...]
    connection: RecordingConnection
    handle: Handle
    registered_cut: bool
    left: bool = False
    doomed: bool = False
    #: Doomed by a close or revoke its node has not heard of (it is cut off): open, and
    #: served by its node, until the node reconnects and reconciles.
    doomed_later: bool = False
    maybe: bool = False
    expected: list[str] = field(default_factory=list)
    lossy: bool = False


@dataclass
class Deferred:
    op: str
    key: str
    exclude: str = ""
    data: str = ""


class ClusterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._portal_context = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal_context.__enter__()
        self.hub = MemoryHub()
        self.stop = anyio.Event()
        self.lifetime, self.nodes = self.portal.start_task(self._run_cluster)
        self.cut = [False] * NODES
        self.connections: list[ModelConnection] = []
        self.revoked: set[str] = set()
        #: The revocations each node has heard of (the one it issued, the ones published
        #: while it was connected, and on reconnect all of them).
        self.known_revoked: list[set[str]] = [set() for _ in range(NODES)]
        self.outbox: list[list[Deferred]] = [[] for _ in range(NODES)]
        self.messages = 0
        self.ever_closed: set[str] = set()

    def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.portal.call(function, *args)

    async def _run_cluster(self, *, task_status: anyio.abc.TaskStatus[list[SessionRegistry]]) -> None:
        # Registries own task groups: enter and leave them in one task.
        async with AsyncExitStack() as stack:
            nodes = []
            for index in range(NODES):
                registry = SessionRegistry(
                    MemoryTransport(self.hub),
                    node_id=f"n{index}",
                    heartbeat_interval=30.0,
                    linger=0.0,
                    close_timeout=1.0,
                )
                nodes.append(await stack.enter_async_context(registry))
            task_status.started(nodes)
            await self.stop.wait()

    def teardown(self) -> None:
        try:
            self.portal.call(self.stop.set)
            self.lifetime.result(timeout=10)
        finally:
            self._portal_context.__exit__(None, None, None)

    # ---------------------------------------------------------------- helpers
    def transport(self, node: int) -> MemoryTransport:
        transport = self.nodes[node].transport
        assert isinstance(transport, MemoryTransport)
        return transport

    async def _quiesce(self) -> None:
        quiet_rounds = 0
        with anyio.fail_after(5):
            while quiet_rounds < 3:
                await anyio.sleep(0.001)
                busy = any(
                    node._recovery.recovering
                    or node._table.subscribing
                    or any(handle.queued for handle in node._table.all_handles())
                    for node in self.nodes
                ) or any(
                    transport._send is not None and transport._send.statistics().current_buffer_used
                    for transport in map(self.transport, range(NODES))
                )
                quiet_rounds = 0 if busy else quiet_rounds + 1

    def quiesce(self) -> None:
        self.call(self._quiesce)

    def open_connections(self) -> Iterator[ModelConnection]:
        return (c for c in self.connections if not c.left and not c.doomed)

    def doom(self, key: str, exclude: str, *, on_cut_nodes: bool = True) -> None:
        for conn in self.open_connections():
            if key in conn.keys and conn.handle.id != exclude and (on_cut_nodes or not self.cut[conn.node]):
                if self.cut[conn.node]:
                    conn.doomed_later = True
                else:
                    conn.doomed = True

    def publish_revoke(self, key: str) -> None:
        self.revoked.add(key)
        for node in range(NODES):
            if not self.cut[node]:
                self.known_revoked[node].add(key)

    def deliver(self, key: str, data: str, exclude: str, origin: int, *, remote: bool) -> None:
        for conn in self.open_connections():
            if key not in conn.keys or conn.handle.id == exclude:
                continue
            if conn.node == origin and not remote:
                conn.expected.append(data)
            elif remote and conn.node != origin:
                if self.cut[conn.node]:
                    conn.lossy = True
                else:
                    conn.expected.append(data)

    # ---------------------------------------------------------------- rules
    @rule(node=st.integers(0, NODES - 1), keys=st.sets(st.sampled_from(KEYS), min_size=1, max_size=2))
    def register(self, node: int, keys: set[str]) -> None:
        ordered = tuple(sorted(keys))
        connection = RecordingConnection(f"{node}:{','.join(ordered)}")
        handle = self.call(self.nodes[node].register, connection, ordered)
        conn = ModelConnection(node, ordered, connection, handle, registered_cut=self.cut[node])
        if any(key in self.known_revoked[node] for key in ordered):
            conn.doomed = True
        elif conn.registered_cut:
            # Revoked elsewhere: the node learns it on reconnect.
            conn.doomed_later = any(key in self.revoked for key in ordered)
            # A node cut off cannot order this registration against closes of its keys
            # it has not heard of: on reconnect it may close it (never the reverse).
            conn.maybe = any(key in self.ever_closed for key in ordered)
        self.connections.append(conn)
        self.quiesce()

    @rule(data=st.data())
    def unregister(self, data: st.DataObject) -> None:
        candidates = [c for c in self.connections if not c.left]
        if not candidates:
            return
        conn = data.draw(st.sampled_from(candidates))
        self.call(self.nodes[conn.node].unregister, conn.handle)
        conn.left = True
        self.quiesce()

    def _exclude(self, data: st.DataObject, node: int) -> str:
        mine = [c.handle.id for c in self.connections if c.node == node and not c.left]
        return data.draw(st.one_of(st.just(""), st.sampled_from(mine))) if mine else ""

    @rule(node=st.integers(0, NODES - 1), key=st.sampled_from(KEYS), data=st.data())
    def close_all(self, node: int, key: str, data: st.DataObject) -> None:
        exclude = self._exclude(data, node)
        self.ever_closed.add(key)
        self.call(lambda: self.nodes[node].close_all(key, exclude=exclude or None))
        if self.cut[node]:
            for conn in self.open_connections():
                if conn.node == node and key in conn.keys and conn.handle.id != exclude:
                    conn.doomed = True
            self.outbox[node].append(Deferred("close", key, exclude))
        else:
            self.doom(key, exclude)
        self.quiesce()

    @rule(node=st.integers(0, NODES - 1), key=st.sampled_from(KEYS))
    def revoke(self, node: int, key: str) -> None:
        self.ever_closed.add(key)
        self.call(lambda: self.nodes[node].revoke(key, ttl=3600))
        self.known_revoked[node].add(key)
        if self.cut[node]:
            for conn in self.open_connections():
                if conn.node == node and key in conn.keys:
                    conn.doomed = True
            self.outbox[node].append(Deferred("revoke", key))
        else:
            self.publish_revoke(key)
            self.doom(key, "")
        self.quiesce()

    @rule(node=st.integers(0, NODES - 1), key=st.sampled_from(KEYS), data=st.data())
    def send_all(self, node: int, key: str, data: st.DataObject) -> None:
        exclude = self._exclude(data, node)
        self.messages += 1
        message = f"m{self.messages}"
        self.call(lambda: self.nodes[node].send_all(key, message, exclude=exclude or None))
        self.deliver(key, message, exclude, node, remote=False)
        if self.cut[node]:
            self.outbox[node].append(Deferred("send", key, exclude, message))
        else:
            self.deliver(key, message, exclude, node, remote=True)
        self.quiesce()

    @precondition(lambda self: not all(self.cut))
    @rule(node=st.integers(0, NODES - 1))
    def cut_off(self, node: int) -> None:
        if self.cut[node]:
            return
        self.call(self._cut, node)
        self.cut[node] = True
        self.quiesce()

    async def _cut(self, node: int) -> None:
        self.transport(node).cut()

    @rule(node=st.integers(0, NODES - 1))
    def restore(self, node: int) -> None:
        if not self.cut[node]:
            return
        self.call(self._restore, node)
        self.cut[node] = False
        # The node is back: what it registered while cut off is ordered again, and what
        # was closed or revoked meanwhile is closed by its reconcile.
        for conn in self.connections:
            if conn.node == node:
                conn.registered_cut = False
                if conn.doomed_later and not conn.left:
                    conn.doomed = True
                conn.doomed_later = False
        for deferred in self.outbox[node]:
            if deferred.op == "close":
                self.doom(deferred.key, deferred.exclude)
            elif deferred.op == "revoke":
                self.publish_revoke(deferred.key)
                self.doom(deferred.key, "")
            else:
                self.deliver(deferred.key, deferred.data, deferred.exclude, node, remote=True)
        self.outbox[node].clear()
        self.known_revoked[node] |= self.revoked  # its reconcile read the revoke markers
        self.quiesce()
        # Reconciled: a connection registered while cut off is now closed or open for good.
        for conn in self.connections:
            if conn.node == node and conn.maybe and not conn.left:
                conn.maybe = False
                conn.doomed = conn.doomed or conn.connection.close_code is not None

    async def _restore(self, node: int) -> None:
        self.transport(node).restore()

    # ---------------------------------------------------------------- invariants
    @invariant()
    def no_connection_is_closed_without_a_reason(self) -> None:
        for conn in self.connections:
            if conn.connection.close_code is not None:
                assert conn.doomed or conn.maybe, f"{conn.connection!r} closed without a close of its keys"

    @invariant()
    def a_quiet_connected_cluster_matches_the_model(self) -> None:
        if any(self.cut):
            return
        for conn in self.connections:
            actually_closed = conn.connection.close_code is not None
            if conn.doomed:
                # (one that left first may have left before its close was delivered)
                assert actually_closed or conn.left, f"{conn.connection!r} should have been closed"
            elif not conn.maybe:
                assert not actually_closed, f"{conn.connection!r} should be open"
            if not conn.lossy:
                assert conn.connection.sent == conn.expected, conn.connection
            else:
                sent = iter(conn.expected)
                assert all(message in sent for message in map(str, conn.connection.sent)), conn.connection
        for index, node in enumerate(self.nodes):
            for key in KEYS:
                expected = sum(
                    1
                    for conn in self.connections
                    if conn.node == index
                    and key in conn.keys
                    and not conn.left
                    and conn.connection.close_code is None
                )
                assert node.local_count(key) == expected, (index, key)
        for node in self.nodes:
            assert not node._outbound.outbox


ClusterMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.timeout(300)
class TestClusterMachine(ClusterMachine.TestCase):  # type: ignore[valid-type,misc]
    pass
