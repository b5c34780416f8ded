"""``SessionRegistry``: every rule of the registry contract, over any transport.

The registry keeps, per node, the connections registered under each key and one
broker channel per key. Commands (close, revoke, send) go to the key's channel, so
only nodes holding the key receive them; confirmed commands and counts go to the
namespace's control channel, which every node reads, so every live node answers.
See ``docs/guarantees.md`` for the contract and how each rule is kept, and
``docs/architecture.md`` for the parts this facade delegates to. The facade holds the
options, the lifetime, registration and the stats; its verbs are in
``sessionws._registry_verbs``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, NoReturn, Self

import anyio
import anyio.abc

from sessionws._codes import CLOSE_SHUTDOWN
from sessionws._commands import ClusterCommands
from sessionws._errors import NotConfiguredError, TransportError
from sessionws._handles import CLOSED_FLAG, PENDING_FLAG, QUEUED_FLAG, Handle, KeyState
from sessionws._inbound import Inbound
from sessionws._membership import Presence
from sessionws._node import Node
from sessionws._options import DEFAULT_MARKER_TTL, DEFAULT_REVOKE_TTL, RegistryOptions
from sessionws._outbound import Outbound
from sessionws._protocols import Connection, Transport
from sessionws._recovery import Recovery
from sessionws._registration import Registrations
from sessionws._registry_verbs import RegistryVerbs
from sessionws._reports import Event
from sessionws._urls import transport_from_url

__all__ = ("SessionRegistry",)

logger = logging.getLogger(__name__)

_new_object = object.__new__


class SessionRegistry(RegistryVerbs):
    """Connections by key, on this node and across the cluster.

    ``transport`` is a :class:`~sessionws.Transport` or a URL (``memory://``,
    ``redis://``, ``rediss://``, ``redis+cluster://``, ``nats://``). Use it as an async
    context manager (the adapters tie it to the app's lifetime). Options:

    * ``namespace`` separates apps on one broker; ``name_secret`` keys the hash that
      hides keys in broker names (default: derived from the namespace).
    * ``signing_keys``: HMAC keys; the first signs, all verify. With keys, unsigned
      or forged commands are dropped. Every node of a namespace needs the same list.
    * ``heartbeat_interval``: membership heartbeats; a node missing 3 is gone.
    * ``marker_ttl``: how long a close stays visible to nodes that missed it; a node
      cut off for longer closes its sockets with 1012. ``revoke_ttl``: default
      time a revoked key stays refused.
    * ``linger``: seconds a key's channel stays subscribed after its last socket left.
    * ``close_timeout`` / ``send_timeout``: bound each close and send to a client.
    * ``queue_size``: outbound items per connection; overflow closes it with 1013.
    * ``outbox_size``: commands kept while the broker is away; when full, verbs raise.
    * ``fail_closed_after``: seconds without the broker after which new
      registrations are refused (closed with 1012) and ``healthy`` is false.
      ``None`` (default) keeps serving.
    * ``confirm_timeout``: default wait for answers of ``confirm=True`` and ``count``.
    * ``on_event``: called with every :class:`~sessionws.Event` (keep it fast). A
      callback with an attribute ``socket_events = False`` is not called for
      ``registered`` / ``unregistered``, and registrations keep their fast path (the
      metrics exporters' callbacks do this).
    * ``interest_grace``: seconds after a new subscription when the keys' markers are
      read once more, for brokers that spread interest asynchronously (a NATS
      cluster). Default: the transport's ``interest_grace`` attribute, else 0.
    * ``publish_only``: a registry that holds no sockets and sends no heartbeats, for
      tools that close, revoke and count from outside the web app (the admin CLI).
    * ``accept_unbound_commands``: with signing keys, also accept signed commands
      that do not name their key and broker epoch (sent by sessionws 0.1).
      Only for the length of a rolling upgrade: such a command can be replayed on
      another key's channel.
    """

    def __init__(
        self,
        transport: Transport | str = "memory://",
        *,
        namespace: str = "sessionws",
        name_secret: str | bytes | None = None,
        signing_keys: Sequence[str | bytes] = (),
        heartbeat_interval: float = 2.0,
        marker_ttl: float = DEFAULT_MARKER_TTL,
        revoke_ttl: float = DEFAULT_REVOKE_TTL,
        linger: float = 2.0,
        close_timeout: float = 5.0,
        send_timeout: float = 10.0,
        queue_size: int = 256,
        outbox_size: int = 10_000,
        fail_closed_after: float | None = None,
        confirm_timeout: float = 2.0,
        on_event: Callable[[Event], object] | None = None,
        node_id: str | None = None,
        publish_only: bool = False,
        interest_grace: float | None = None,
        accept_unbound_commands: bool = False,
    ) -> None:
        options = RegistryOptions(
            namespace=namespace,
            name_secret=name_secret,
            signing_keys=signing_keys,
            heartbeat_interval=heartbeat_interval,
            marker_ttl=marker_ttl,
            revoke_ttl=revoke_ttl,
            linger=linger,
            close_timeout=close_timeout,
            send_timeout=send_timeout,
            queue_size=queue_size,
            outbox_size=outbox_size,
            fail_closed_after=fail_closed_after,
            confirm_timeout=confirm_timeout,
            on_event=on_event,
            node_id=node_id,
            publish_only=publish_only,
            interest_grace=interest_grace,
            accept_unbound_commands=accept_unbound_commands,
        )
        self.transport: Transport = transport_from_url(transport) if isinstance(transport, str) else transport
        node = self._node = Node(self.transport, options, forget=self.unregister)
        self.names = node.names
        self.node_id = node.node_id
        self.publish_only = publish_only
        self._fail_closed_after = fail_closed_after
        self._close_timeout = close_timeout
        self._socket_events = options.socket_events
        self._running = False
        self._closing = False
        self._stack: AsyncExitStack | None = None
        self._refused: dict[str, int] = {}
        self._delivery = node.delivery
        self._table = node.table
        # An alias of the table's dict: the registering path is hot.
        self._keys = node.table.by_key
        self._queries = node.queries
        self._outbound = outbound = Outbound(node)
        self._presence = presence = Presence(node, outbound.publish)
        self._recovery = Recovery(node, outbound, presence, options.grace_for(self.transport))
        self._handle_class = Handle.for_node(f"{self.node_id}.")
        self._handle_counter = 0
        self._inbound = Inbound(node, outbound, presence, self._handle_class.prefix)
        self._commands = ClusterCommands(node, outbound, presence)
        self._registrations = Registrations(
            node,
            handle_class=self._handle_class,
            next_number=self._next_number,
            accepting=self._accepts,
            unregister=self.unregister,
            is_revoked=self.is_revoked,
        )
        #: The key table while registering, connected, with no fail-closed policy and no
        #: event callback (else empty): a registration under a key of it that is
        #: ``ready`` takes the short path.
        self._short_keys: dict[str, KeyState] = {}
        self.__registering = False
        node.on_connected_change = self._update_short

    @property
    def _registering(self) -> bool:
        return self.__registering

    @_registering.setter
    def _registering(self, value: bool) -> None:
        self.__registering = value
        self._update_short()

    def _update_short(self) -> None:
        short = (
            self.__registering
            and self._node.connected
            and self._fail_closed_after is None
            and not self._socket_events
        )
        self._short_keys = self._keys if short else {}

    def _next_number(self) -> int:
        self._handle_counter += 1
        return self._handle_counter

    # ------------------------------------------------------------------ lifetime
    async def __aenter__(self) -> Self:
        if self._running or self._stack is not None:
            raise RuntimeError("this SessionRegistry is already running; make one per app")
        node = self._node
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            tasks = node.tasks = await stack.enter_async_context(anyio.create_task_group())
            await stack.enter_async_context(self.transport.open(self))
            self._outbound.choose_path()
            self._stack = stack
            self._running = True
            self._registering = not self.publish_only
            node.connected = self.transport.connected
            # A publish-only registry (the admin CLI) reads the control channel too: it
            # learns the membership from heartbeats, and answers queries with 0.
            channels = [node.inbox, self.names.control]
            try:
                await self.transport.subscribe(channels)
                await self._recovery.learn_broker()
            except TransportError:
                logger.warning("the broker is unreachable at start; serving locally until it returns")
                node.broker_lost()
            self._delivery.tasks = tasks
            tasks.start_soon(self._table.run_batches)
            tasks.start_soon(self._outbound.run_outbox)
            if not self.publish_only:
                tasks.start_soon(self._presence.run_heartbeat)
                tasks.start_soon(self._table.run_linger)
        except BaseException:
            self._running = False
            self._stack = None
            if node.tasks is not None:
                node.tasks.cancel_scope.cancel()
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack, tasks = self._stack, self._node.tasks
        if stack is None or tasks is None:
            return
        self._closing = True
        self._registering = False
        try:
            await self.close_local(code=CLOSE_SHUTDOWN, reason="server shutting down")
            with anyio.move_on_after(self._close_timeout, shield=True):
                channels = [state.channel for state in self._keys.values() if state.subscribed]
                try:
                    if channels:
                        await self.transport.unsubscribe(channels)
                    if not self.publish_only:
                        await self._presence.leave()
                except TransportError:
                    pass
        finally:
            if self._outbound.outbox:
                logger.warning(
                    "shutting down with %d commands never sent to the broker (the outbox)",
                    len(self._outbound.outbox),
                )
            self._running = False
            self._queries.release_all()
            tasks.cancel_scope.cancel()
            self._table.clear()
            self._delivery.tasks = None
            self._stack = self._node.tasks = None
            await stack.aclose()
            self._closing = False

    @property
    def running(self) -> bool:
        return self._running

    @property
    def healthy(self) -> bool:
        """True when the broker is connected and reconciled and every command issued
        here has reached it (the outbox is empty): for readiness probes."""
        return (
            self._running
            and self._node.connected
            and not self._recovery.recovering
            and not self._outbound.outbox
        )

    @property
    def accepting(self) -> bool:
        """False when the fail-closed policy refuses new registrations."""
        return self._accepts()

    def _accepts(self) -> bool:
        if not self._running or self._closing:
            return False
        node = self._node
        if self._fail_closed_after is None or node.connected or node.lost_at is None:
            return True
        return time.monotonic() - node.lost_at < self._fail_closed_after

    # ------------------------------------------------------------------ registering
    async def register(
        self, connection: Connection, keys: str | Iterable[str], data: Mapping[str, Any] | None = None
    ) -> Handle:
        """Register ``connection`` under ``keys``; return once the node is subscribed
        and the keys' markers are checked.

        A key that is revoked, or closed while this registration was under way, ends
        with the connection closed (check ``handle.closing``); under the fail-closed
        policy the connection is closed with 1012. At most 256 keys (``ValueError``);
        ``data``, a JSON object of at most 4 KiB, is ``handle.data`` (see ``members``).
        """
        # The commonest case, a second socket of a session on this node, kept short.
        # The table's keys are valid key strings: any other ``keys`` misses it (an
        # unhashable one raises) and takes the general path, which checks it.
        try:
            state = self._short_keys.get(keys)  # type: ignore[arg-type]
        except TypeError:
            state = None
        if state is not None and state.ready and data is None:
            # Handle.__init__ inlined: calling a Python __init__ costs a third of this path.
            handle = _new_object(self._handle_class)
            self._handle_counter += 1
            handle.number = self._handle_counter
            handle.connection = connection
            handle.state = state
            handle.others = ()
            handle.registration_sequence = self._node.known_sequence
            handle._flags = 0
            state.handles.add(handle)
            return handle
        if not self._registering:
            self._refuse_registration()
        return await self._registrations.register(connection, keys, data)

    def _refuse_registration(self) -> NoReturn:
        if self.publish_only:
            raise NotConfiguredError("a publish-only registry (the admin CLI's) holds no sockets")
        if self._running:
            raise NotConfiguredError("the registry is shutting down; no new registrations")
        self._require_running()
        raise AssertionError("unreachable")

    async def unregister(self, handle: Handle) -> None:
        """Forget ``handle`` (idempotent). Safe in ``finally`` blocks, even when cancelled:
        it never suspends, so a cancellation cannot interrupt it."""
        # On every socket's way out: kept flat (no helper calls on the common path).
        flags = handle._flags
        if flags & CLOSED_FLAG:
            return
        handle._flags = (flags | CLOSED_FLAG) & ~PENDING_FLAG
        if flags & QUEUED_FLAG:
            handle.drop_queue()
        state = handle.state
        members = state.handles
        members.discard(handle)
        if not members:
            self._table.start_linger(state)
        if handle.others:
            for state in handle.others:
                members = state.handles
                members.discard(handle)
                if state.added is not None:
                    state.added.pop(handle, None)
                if not members:
                    self._table.start_linger(state)
        if handle.data_table:
            handle.data_table.pop(handle, None)
        if self._socket_events:
            self._node.emit("unregistered", handle=handle.id)

    @asynccontextmanager
    async def connection(
        self, connection: Connection, keys: str | Iterable[str], data: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Handle]:
        """``register`` on entry, ``unregister`` on exit, whatever happens inside."""
        handle = await self.register(connection, keys, data)
        try:
            yield handle
        finally:
            await self.unregister(handle)

    # ------------------------------------------------------------------ local
    def note_refused(self, reason: str) -> None:
        """Count a websocket an adapter refused before the upgrade (``refused_by_reason``)."""
        self._refused[reason] = self._refused.get(reason, 0) + 1
        self._node.emit("websocket_refused", reason=reason)

    def stats(self) -> dict[str, Any]:
        """Counters and gauges for metrics and debugging."""
        node = self._node
        sockets = len(self._table.all_handles())
        return {
            "registered": self._handle_counter,
            "unregistered": self._handle_counter - sockets,
            **node.stats,
            "node": self.node_id,
            "sockets": sockets,
            "keys": sum(1 for state in self._keys.values() if state.handles),
            "subscriptions": sum(1 for state in self._keys.values() if state.subscribed),
            "dropped_by_reason": dict(node.drops.counts),
            "refused_by_reason": dict(self._refused),
            "outbox": len(self._outbound.outbox),
            "members": len(self._presence.membership.live()),
            "silent_members": len(self._presence.membership.expected() - self._presence.membership.live()),
            "broker": "connected" if node.connected else "disconnected",
            "healthy": self.healthy,
            "sequence": node.known_sequence,
        }
