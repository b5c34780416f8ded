"""``SessionRegistry``: every rule of the registry contract, over any transport.

The registry keeps, per node, the connections registered under each key and one
broker channel per key. Commands (close, revoke, send) go to the key's channel, so
only nodes holding the key receive them; confirmed commands and counts go to the
namespace's control channel, which every node reads, so every live node answers.
See ``docs/guarantees.md`` for the contract and how each rule is kept.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal, NoReturn, Self

import anyio
import anyio.abc

from sessionws._codes import (
    CLOSE_DEFAULT,
    CLOSE_REVOKED,
    CLOSE_SHUTDOWN,
    CLOSE_UNKNOWN_STATE,
    validate_close,
)
from sessionws._data import check_data
from sessionws._delivery import Delivery
from sessionws._droplog import DropLog
from sessionws._errors import BrokerUnavailableError, KeyRevokedError, NotConfiguredError, TransportError
from sessionws._handles import CLOSED_FLAG, PENDING_FLAG, QUEUED_FLAG, Completion, Handle, KeyState
from sessionws._keys import Batch, KeyTable
from sessionws._markers import CloseMarker, KeyMarkers, encode_marker, read_key_markers
from sessionws._membership import Membership, ReplayGuard, decode_silent, encode_silent
from sessionws._protocols import Connection, Transport
from sessionws._queries import Queries, Query
from sessionws._reports import CloseReport, Count, Delivered, Event, Member, Members, SendReport
from sessionws._urls import transport_from_url
from sessionws._wire import DIRECT_OPS, EFFECTFUL_OPS, Command, DropReason, Names, WireCodec, WireError

__all__ = ("SessionRegistry",)

logger = logging.getLogger(__name__)

_new_object = object.__new__

DEFAULT_MARKER_TTL = 24 * 3600.0
DEFAULT_REVOKE_TTL = 14 * 24 * 3600.0
_REVOKED_CACHE_SIZE = 100_000
#: A command whose sequence is this far past the newest this node knows is checked
#: against the broker's counter before it is applied: one message must not push the
#: replay guard past what the broker can have issued.
_SEQUENCE_LEAP = 10_000
#: Commands that may wait for one such check, and how long a check's answer is fresh.
_FAR_AHEAD_WAITING = 1000
_SEQUENCE_CHECK_FRESH = 1.0
#: The outbox retries with a jittered, capped exponential backoff.
_OUTBOX_MIN_DELAY = 0.05
_OUTBOX_MAX_DELAY = 2.0
#: A node that fell silent without a goodbye is expected to answer confirmed
#: commands (reported missing) for this many heartbeat intervals.
_SILENCE_HEARTBEATS = 30
#: How long a node that just (re)joined listens before it trusts its membership: the
#: others answer its hello at once, so a fraction of a second is plenty.
_SETTLE_MAX = 0.5


@dataclass(slots=True)
class _Outgoing:
    """The remote part of a command issued while the broker was away."""

    op: Literal["close", "revoke", "send", "broadcast", "send_to", "close_to"]
    key_hash: str
    code: int = 0
    reason: str = ""
    exclude: str = ""
    ttl: float = 0.0
    data: str | bytes | None = None
    #: ``send_to`` / ``close_to``: the handle id (its node's inbox is the channel).
    target: str = ""


class SessionRegistry:
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
        for name, value in (
            ("heartbeat_interval", heartbeat_interval),
            ("marker_ttl", marker_ttl),
            ("revoke_ttl", revoke_ttl),
            ("close_timeout", close_timeout),
            ("send_timeout", send_timeout),
            ("confirm_timeout", confirm_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if linger < 0:
            raise ValueError("linger must be zero or positive")
        if queue_size < 1 or outbox_size < 0:
            raise ValueError("queue_size must be at least 1 and outbox_size at least 0")
        if fail_closed_after is not None and fail_closed_after < 0:
            raise ValueError("fail_closed_after must be None or a number of seconds")
        self.transport: Transport = transport_from_url(transport) if isinstance(transport, str) else transport
        self.names = Names(namespace, name_secret)
        self.node_id = node_id or secrets.token_hex(6)
        if "." in self.node_id or not self.node_id.isprintable():
            raise ValueError("node_id must be printable and contain no '.'")
        # The origin field as it appears in this node's own commands. A JSON object of
        # sessionws has one level and escapes quotes inside strings, so these bytes occur
        # in a payload only as its origin: this node's own commands (which come back on
        # the channels it holds) are dropped without decoding.
        self._own_origin = b'"o":' + json.dumps(self.node_id, ensure_ascii=False).encode("utf-8")
        self._inbox = self.names.inbox(self.node_id)
        self.publish_only = publish_only
        grace = getattr(self.transport, "interest_grace", 0.0) if interest_grace is None else interest_grace
        if not isinstance(grace, (int, float)) or grace < 0:
            raise ValueError("interest_grace must be zero or a positive number of seconds")
        self._interest_grace = float(grace)
        self._codec = WireCodec(signing_keys, max_size=self.transport.max_payload)
        self._accept_unbound = accept_unbound_commands
        self._heartbeat_interval = heartbeat_interval
        self._marker_ttl = marker_ttl
        self._revoke_ttl = revoke_ttl
        self._close_timeout = close_timeout
        self._outbox_size = outbox_size
        self._fail_closed_after = fail_closed_after
        self._confirm_timeout = confirm_timeout
        self._on_event = on_event
        # Per-socket events cost the registration's short path; a callback that does
        # not want them says so with ``socket_events = False``.
        self._socket_events = on_event is not None and bool(getattr(on_event, "socket_events", True))

        self._table = KeyTable(
            self.transport,
            self.names,
            linger=linger,
            apply_markers=self._apply_markers,
            note_sequence=self._note_sequence,
            after_subscribe=self._after_subscribe,
            check_marker=self._check_marker if self._codec.signed else None,
        )
        # Aliases of the table's dicts: the registering path is hot.
        self._keys = self._table.by_key
        self._channels = self._table.by_channel
        self._hashes = self._table.by_hash
        self._handle_class = Handle.for_node(f"{self.node_id}.")
        self._handle_counter = 0
        self._revoked: OrderedDict[str, tuple[float, int, str]] = OrderedDict()
        self._outbox: deque[_Outgoing] = deque()
        #: Wakes the outbox's sender: something was queued, or the broker came back.
        self._outbox_kick = anyio.Event()
        self._queries = Queries(keep=max(confirm_timeout, 60.0))
        self._membership = Membership(silence=_SILENCE_HEARTBEATS * heartbeat_interval)
        self._replay = ReplayGuard()
        self._known_sequence = 0
        self._far_ahead: list[tuple[str, Command]] | None = None
        self._sequence_checked_at = -_SEQUENCE_CHECK_FRESH
        self._identity: str | None = None
        #: The key table while registering, connected, with no fail-closed policy and no
        #: event callback (else empty): a registration under a key of it that is
        #: ``ready`` takes the short path.
        self._short_keys: dict[str, KeyState] = {}
        self.__connected = False
        self.__registering = False
        self._recovering = False
        self._recover_again = False
        self._reassert_pending = False
        #: Set once the membership has been heard (see ``_new_query``).
        self._settled = anyio.Event()
        self._lost_at: float | None = None
        self._running = False
        self._closing = False
        self._tasks: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "closed",
                "sends_delivered",
                "overflows",
                "commands_sent",
                "commands_received",
                "commands_dropped",
                "outbox_sent",
                "reconciles",
                "closed_unknown_state",
                "broker_losses",
            ),
            0,
        )
        self._drops = DropLog(logger)
        self._refused: dict[str, int] = {}
        self._delivery = Delivery(
            queue_size=queue_size,
            close_timeout=close_timeout,
            send_timeout=send_timeout,
            forget=self.unregister,
            emit=self._emit,
            stats=self._stats,
        )

    @property
    def _connected(self) -> bool:
        return self.__connected

    @_connected.setter
    def _connected(self, value: bool) -> None:
        self.__connected = value
        self._update_short()

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
            and self.__connected
            and self._fail_closed_after is None
            and not self._socket_events
        )
        self._short_keys = self._keys if short else {}

    # ------------------------------------------------------------------ lifetime
    async def __aenter__(self) -> Self:
        if self._running or self._stack is not None:
            raise RuntimeError("this SessionRegistry is already running; make one per app")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self._tasks = await stack.enter_async_context(anyio.create_task_group())
            await stack.enter_async_context(self.transport.open(self))
            self._stack = stack
            self._running = True
            self._registering = not self.publish_only
            self._connected = self.transport.connected
            # A publish-only registry (the admin CLI) reads the control channel too: it
            # learns the membership from heartbeats, and answers queries with 0.
            channels = [self._inbox, self.names.control]
            try:
                await self.transport.subscribe(channels)
                await self._learn_broker()
            except TransportError:
                logger.warning("the broker is unreachable at start; serving locally until it returns")
                self._connected = False
                self._lost_at = time.monotonic()
            self._delivery.tasks = self._tasks
            self._tasks.start_soon(self._table.run_batches)
            self._tasks.start_soon(self._send_outbox)
            if not self.publish_only:
                self._tasks.start_soon(self._heartbeat)
                self._tasks.start_soon(self._table.run_linger)
        except BaseException:
            self._running = False
            self._stack = None
            if self._tasks is not None:
                self._tasks.cancel_scope.cancel()
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack, tasks = self._stack, self._tasks
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
                        await self._publish(self.names.control, Command("leave", self.node_id))
                except TransportError:
                    pass
        finally:
            if self._outbox:
                logger.warning(
                    "shutting down with %d commands never sent to the broker (the outbox)", len(self._outbox)
                )
            self._running = False
            self._queries.release_all()
            tasks.cancel_scope.cancel()
            self._table.clear()
            self._delivery.tasks = None
            self._stack = self._tasks = None
            await stack.aclose()
            self._closing = False

    @property
    def running(self) -> bool:
        return self._running

    @property
    def healthy(self) -> bool:
        """True when the broker is connected and reconciled and every command issued
        here has reached it (the outbox is empty): for readiness probes."""
        return self._running and self._connected and not self._recovering and not self._outbox

    @property
    def accepting(self) -> bool:
        """False when the fail-closed policy refuses new registrations."""
        if not self._running or self._closing:
            return False
        if self._fail_closed_after is None or self._connected or self._lost_at is None:
            return True
        return time.monotonic() - self._lost_at < self._fail_closed_after

    def _require_running(self) -> anyio.abc.TaskGroup:
        if not self._running or self._tasks is None:
            raise NotConfiguredError(
                "the registry is not running: use `async with registry:` "
                "(the adapters' setup does this for you)"
            )
        return self._tasks

    # ------------------------------------------------------------------ registering
    async def register(
        self, connection: Connection, keys: str | Iterable[str], data: Mapping[str, Any] | None = None
    ) -> Handle:
        """Register ``connection`` under ``keys``; return once the node is subscribed
        and the keys' markers are checked.

        A key that is revoked, or closed while this registration was under way, ends
        with the connection closed (check ``handle.closing``); under the fail-closed
        policy the connection is closed with 1012. ``data``, a small JSON object
        (at most 4 KiB encoded), is kept as ``handle.data`` and shown by ``members``.
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
            handle.registration_sequence = self._known_sequence
            handle._flags = 0
            state.handles.add(handle)
            return handle
        return await self._register(connection, keys, data)

    async def _register(
        self, connection: Connection, keys: str | Iterable[str], data: Mapping[str, Any] | None = None
    ) -> Handle:
        """The general path: new keys, lingering keys, keys with closes remembered, the
        broker away, a policy or an event callback. (Apart from ``register`` so that the
        short path's coroutine stays small: its frame is made for every socket.)"""
        if not self._registering:
            self._refuse_registration()
        key_tuple = (keys,) if type(keys) is str and keys else _normalize_keys(keys)
        checked_data = None if data is None else check_data(data)
        table = self._keys
        states = tuple(table.get(key) or self._table.create(key) for key in key_tuple)
        self._handle_counter += 1
        handle = self._handle_class(
            self._handle_counter, connection, states[0], states[1:], self._known_sequence
        )
        if checked_data is not None:
            handle.data_table[handle] = checked_data
        new_states: list[KeyState] | None = None
        waiting: list[Batch] | None = None
        # A key this node holds knows whether it was closed or revoked; a new key is
        # checked after its subscription anyway.
        check = False
        for state in states:
            state.handles.add(handle)
            if state.linger_until is not None:
                self._table.keep(state)
            if state.closed_before:
                check = True
            if not state.subscribed:
                batch = state.subscribing
                if isinstance(batch, Batch):
                    waiting = [batch] if waiting is None else [*waiting, batch]
                else:
                    new_states = [state] if new_states is None else [*new_states, state]
        if self._fail_closed_after is not None and not self.accepting:
            self._delivery.close(handle, CLOSE_UNKNOWN_STATE, "the broker is unreachable")
            return handle
        # Fast path (every key subscribed, the broker connected): every later close
        # reaches this node as a message; the handle took effect at the newest sequence
        # this node has seen (given to it above). Otherwise wait for the subscription.
        if new_states is not None or waiting is not None or not self._connected:
            handle.mark_pending()
            try:
                await self._await_subscriptions(handle, new_states, waiting)
            except BaseException:
                await self.unregister(handle)  # cancelled while subscribing: leave nothing behind
                raise
            handle.registered()
            check = True
        if check:
            self._check_registration(handle)
        if self._socket_events:
            self._emit("registered", handle=handle.id)
        return handle

    def _refuse_registration(self) -> NoReturn:
        if self.publish_only:
            raise NotConfiguredError("a publish-only registry (the admin CLI's) holds no sockets")
        if self._running:
            raise NotConfiguredError("the registry is shutting down; no new registrations")
        self._require_running()
        raise AssertionError("unreachable")

    async def _await_subscriptions(
        self, handle: Handle, new_states: list[KeyState] | None, waiting: list[Batch] | None
    ) -> None:
        batches = list(waiting or ())
        if new_states:
            batches.append(self._table.join_batch(new_states))
        for batch in batches:
            await batch.done.wait()
        if not batches or any(batch.failed for batch in batches):
            # Cut off: the newest sequence this node knows is the best bound; the
            # reconcile after reconnect closes the socket if its keys were closed.
            handle.registration_sequence = self._known_sequence
        else:
            handle.registration_sequence = min(batch.sequence for batch in batches)

    def _check_registration(self, handle: Handle) -> None:
        """Close the new connection if a key is revoked or was closed since it registered."""
        if handle.closing:
            return
        now = time.monotonic()
        for state in handle.states:
            revoked = self._revoked.get(state.hash)
            if revoked is not None and revoked[0] > now:
                self._delivery.close(handle, revoked[1], revoked[2])
                return
            close = state.close_for(handle)
            if close is not None:
                self._delivery.close(handle, close.code, close.reason)
                return

    def _apply_markers(self, state: KeyState, markers: KeyMarkers) -> None:
        for close in (markers.close, markers.partial):
            if close is not None:
                state.note_close(close)
                self._note_sequence(close.sequence)
        if markers.revoke is not None:
            revoke = markers.revoke
            self._note_sequence(revoke.sequence)
            self._remember_revoked(
                state.hash, self._revoke_ttl_left(revoke.expires), revoke.code, revoke.reason
            )

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
            self._emit("unregistered", handle=handle.id)

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

    def _own_handle(self, handle: object) -> Handle:
        if not isinstance(handle, self._handle_class):
            raise TypeError(f"expected a Handle this registry returned from register(), not {handle!r}")
        if handle.closing:
            raise ValueError(f"{handle!r} is closed or closing")
        return handle

    async def set_data(self, handle: Handle, data: Mapping[str, Any] | None) -> None:
        """Replace ``handle.data`` (``None`` removes it); a JSON object of at most 4 KiB."""
        handle = self._own_handle(handle)
        if data is None:
            handle.data_table.pop(handle, None)
        else:
            handle.data_table[handle] = check_data(data)

    async def add_keys(self, handle: Handle, keys: str | Iterable[str]) -> None:
        """Register ``handle`` under more ``keys`` (a room it joins, a user it logged in
        as); idempotent. Returns once the keys are subscribed and their markers read,
        as for ``register``: a close of a key racing the add closes the connection.
        A revoked key raises :class:`KeyRevokedError` and adds nothing.
        """
        handle = self._own_handle(handle)
        new_keys = [key for key in _normalize_keys(keys) if key not in handle.keys]
        for key in new_keys:
            if await self.is_revoked(key):
                raise KeyRevokedError("a revoked key cannot be added; authenticate again first")
        handle = self._own_handle(handle)  # still open after the checks
        new_keys = [key for key in new_keys if key not in handle.keys]
        if not new_keys:
            return
        states = [self._keys.get(key) or self._table.create(key) for key in new_keys]
        new_states: list[KeyState] = []
        waiting: list[Batch] = []
        for state in states:
            state.handles.add(handle)
            if state.added is None:
                state.added = {}
            state.added[handle] = self._known_sequence
            if state.linger_until is not None:
                self._table.keep(state)
            if not state.subscribed:
                batch = state.subscribing
                if isinstance(batch, Batch):
                    waiting.append(batch)
                else:
                    new_states.append(state)
        handle.others = (*handle.others, *states)
        if new_states or waiting or not self._connected:
            batches = [*waiting, *([self._table.join_batch(new_states)] if new_states else [])]
            for batch in batches:
                await batch.done.wait()
            sequence = (
                min(batch.sequence for batch in batches)
                if batches and not any(batch.failed for batch in batches)
                else self._known_sequence
            )
            for state in states:
                if state.added is not None and handle in state.added:
                    state.added[handle] = min(state.added[handle], sequence)
        self._check_registration(handle)

    async def remove_keys(self, handle: Handle, keys: str | Iterable[str]) -> None:
        """Stop holding ``handle`` under ``keys`` (a room it leaves); idempotent. The
        first key (the session's id, in the adapters) cannot be removed."""
        handle = self._own_handle(handle)
        removed = set(_normalize_keys(keys))
        if handle.state.key in removed:
            raise ValueError("the first key of a connection (its session's id) cannot be removed")
        kept: list[KeyState] = []
        for state in handle.others:
            if state.key not in removed:
                kept.append(state)
                continue
            state.handles.discard(handle)
            if state.added is not None:
                state.added.pop(handle, None)
            if not state.handles:
                self._table.start_linger(state)
        handle.others = tuple(kept)

    # ------------------------------------------------------------------ verbs
    async def is_revoked(self, key: str) -> bool:
        """True while ``key`` is revoked: refuse its websocket before the upgrade (403).

        A key this node holds, subscribed and with no close remembered, is answered
        here: it read the key's markers when it subscribed and hears every revoke on
        the key's channel since (one in flight closes the socket when it arrives). Other
        keys are asked of the broker. While the broker is unreachable, answers from what
        this node knows.
        """
        self._require_running()
        key_hash = self.names.key_hash(_check_key(key))
        revoked = self._revoked.get(key_hash)
        if revoked is not None and revoked[0] > time.monotonic():
            return True
        if not self._connected:
            return False
        state = self._hashes.get(key_hash)
        if state is not None and state.ready and state.handles:
            return False
        try:
            markers = await self._read_markers([key_hash])
        except TransportError:
            return False
        revoke = markers[key_hash].revoke
        if revoke is None:
            return False
        self._remember_revoked(key_hash, self._revoke_ttl_left(revoke.expires), revoke.code, revoke.reason)
        return True

    async def close_all(
        self,
        key: str,
        *,
        code: int = CLOSE_DEFAULT,
        reason: str = "",
        exclude: Handle | str | None = None,
        confirm: bool = False,
        timeout: float | None = None,
        strict: bool = False,
    ) -> CloseReport:
        """Close every socket of ``key`` on every node (``exclude`` spares one).

        Local sockets are closed at once. The remote part writes a marker, then
        publishes. With ``confirm=True``, waits up to ``timeout`` for every live node
        to report how many sockets it closed. While the broker is unreachable the
        remote part waits in the outbox (``queued=True``), or with ``strict=True``
        :class:`BrokerUnavailableError` is raised (local sockets are closed anyway).
        """
        validate_close(code, reason)
        return await self._close_command("close", key, code, reason, exclude, confirm, timeout, strict, 0.0)

    async def revoke(
        self,
        key: str,
        *,
        ttl: float | None = None,
        code: int = CLOSE_REVOKED,
        reason: str = "session revoked",
        confirm: bool = False,
        timeout: float | None = None,
        strict: bool = False,
    ) -> CloseReport:
        """Close every socket of ``key`` everywhere and refuse the key for ``ttl`` seconds.

        The default code 4401 tells clients not to reconnect until they have
        authenticated again. Registrations racing the revoke end closed.
        """
        validate_close(code, reason)
        ttl = self._revoke_ttl if ttl is None else ttl
        if not ttl > 0:
            raise ValueError("ttl must be a positive number of seconds")
        return await self._close_command("revoke", key, code, reason, None, confirm, timeout, strict, ttl)

    async def _close_command(
        self,
        op: Literal["close", "revoke"],
        key: str,
        code: int,
        reason: str,
        exclude: Handle | str | None,
        confirm: bool,
        timeout: float | None,
        strict: bool,
        ttl: float,
    ) -> CloseReport:
        self._require_running()
        key_hash = self.names.key_hash(_check_key(key))
        exclude_id = exclude.id if isinstance(exclude, Handle) else (exclude or "")
        if op == "revoke":
            self._remember_revoked(key_hash, ttl, code, reason)
        state = self._hashes.get(key_hash)
        completion = Completion() if confirm else None
        closed_here = self._delivery.close_key(state, code, reason, exclude_id, completion)
        outgoing = _Outgoing(op, key_hash, code, reason, exclude_id, ttl)
        if not self._connected or self._outbox:
            # Behind commands still waiting, in order (or the broker is away).
            self._queue_outgoing(outgoing, strict)
            return CloseReport(closed_here, queued=True)
        query = await self._new_query(timeout) if confirm else None
        try:
            await self._send_outgoing(outgoing, query)
        except TransportError:
            self._queue_outgoing(outgoing, strict)
            return CloseReport(closed_here, queued=True)
        if query is None or completion is None:
            return CloseReport(closed_here)
        completion.seal()
        return await self._await_query(query, completion, timeout)

    async def _await_query(self, query: Query, completion: Completion, timeout: float | None) -> CloseReport:
        with anyio.move_on_after(self._confirm_timeout if timeout is None else timeout):
            await query.done.wait()
            await completion.done.wait()
        answered = dict(query.answers)
        complete = query.complete and completion.remaining <= 0
        return CloseReport(
            completion.closed,
            nodes=answered,
            missing=query.missing,
            confirmed=True,
            complete=complete,
        )

    async def _send_outgoing(self, outgoing: _Outgoing, query: Query | None = None) -> None:
        """Write the marker (closes, revokes), then publish the command — in one atomic
        step where the transport can (``mark_and_publish``)."""
        op, key_hash = outgoing.op, outgoing.key_hash
        on_control = query is not None or op == "broadcast"
        if op in DIRECT_OPS:
            channel = self.names.inbox(outgoing.target.rpartition(".")[0])
        else:
            channel = self.names.control if on_control else self.names.channel(key_hash)
        marker: tuple[str, bytes, float] | None = None
        if op == "close":
            name = self.names.partial_close_marker if outgoing.exclude else self.names.close_marker
            value = encode_marker(outgoing.code, outgoing.reason, outgoing.exclude)
            marker = (name(key_hash), self._sign_marker(name(key_hash), value), self._marker_ttl)
        elif op == "revoke":
            value = encode_marker(outgoing.code, outgoing.reason, expires=time.time() + outgoing.ttl)
            name = self.names.revoke_marker
            marker = (name(key_hash), self._sign_marker(name(key_hash), value), outgoing.ttl)
        command = Command(
            op,
            self.node_id,
            target=outgoing.target or (key_hash if on_control else ""),
            key=key_hash if not on_control else "",
            epoch=self.transport.identity,
            code=outgoing.code,
            reason=outgoing.reason,
            exclude=outgoing.exclude,
            ttl=outgoing.ttl,
            data=outgoing.data,
            query=self._queries.open(query, self._tasks_or_raise()) if query is not None else "",
        )
        numbered = getattr(self.transport, "mark_and_publish_numbered", None) if marker is not None else None
        halves = self._codec.encode_unnumbered(command) if numbered is not None else None
        if marker is not None and numbered is not None and halves is not None:
            # One broker step: the transport takes the sequence, writes the marker and
            # publishes the command with the sequence spliced in.
            sequence, receivers = await numbered(*marker, channel, *halves)
            self._stats["commands_sent"] += 1
            self._sequence_taken(op, key_hash, outgoing, sequence)
        else:
            combined = getattr(self.transport, "mark_and_publish", None)
            if marker is None or combined is not None:
                sequence = await self.transport.next_sequence()
            else:
                sequence = await self.transport.mark(*marker)
            self._sequence_taken(op, key_hash, outgoing, sequence)
            command = replace(command, sequence=sequence)
            if marker is not None and combined is not None:
                receivers = await combined(*marker, sequence, channel, self._codec.encode(command))
                self._stats["commands_sent"] += 1
            else:
                receivers = await self._publish(channel, command)
        if query is not None:
            query.expect_receivers(receivers)

    def _sequence_taken(self, op: str, key_hash: str, outgoing: _Outgoing, sequence: int) -> None:
        """This node's close or revoke got its sequence. A socket registered here while
        the broker was taking it registered at an older sequence: the close reaches it
        too (the local sockets present at the call were closed at once)."""
        if op == "close" and (state := self._hashes.get(key_hash)) is not None:
            self._apply_close(state, CloseMarker(sequence, outgoing.code, outgoing.reason, outgoing.exclude))
        self._note_sequence(sequence)

    def _apply_close(self, state: KeyState, close: CloseMarker, completion: Completion | None = None) -> None:
        """Remember ``close`` and close the key's sockets registered before it."""
        state.note_close(close)
        for handle in list(state.handles):
            if not handle.pending and state.since(handle) < close.sequence and handle.id != close.exclude:
                self._delivery.close(handle, close.code, close.reason, completion)

    def _queue_outgoing(self, outgoing: _Outgoing, strict: bool) -> None:
        if strict:
            raise BrokerUnavailableError(
                "the broker is unreachable: local sockets were handled, the other nodes were not reached"
            )
        if len(self._outbox) >= self._outbox_size:
            raise BrokerUnavailableError(
                f"the broker is unreachable and the outbox is full ({self._outbox_size} commands); "
                "raise outbox_size or restore the broker"
            )
        self._outbox.append(outgoing)
        self._outbox_kick.set()
        if len(self._outbox) == 1:
            logger.warning("the broker did not take a %s; it waits in the outbox", outgoing.op)
        self._emit("outbox_queued", op=outgoing.op, depth=len(self._outbox))

    def _check_payload(self, data: object, op: str = "send", exclude: str = "") -> str | bytes:
        if not isinstance(data, (str, bytes)):
            raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
        probe = Command(
            "send", self.node_id, sequence=2**62, exclude=exclude, data=data, key="0" * 32, query="0" * 16
        )
        size = len(self._codec.encode(replace(probe, epoch=self.transport.identity or "0" * 32)))
        if size > self.transport.max_payload:
            raise ValueError(
                f"this message needs {size} bytes on the wire; the broker allows "
                f"{self.transport.max_payload}. Send less, or send a reference the clients fetch."
            )
        return data

    async def _send_remote(self, outgoing: _Outgoing, strict: bool, query: Query | None = None) -> bool:
        """Send ``outgoing``, or queue it; ``True`` when it reached the broker now."""
        if not self._connected or self._outbox:
            self._queue_outgoing(outgoing, strict)
            return False
        try:
            await self._send_outgoing(outgoing, query)
        except TransportError:
            self._queue_outgoing(outgoing, strict)
            return False
        return True

    async def send_all(
        self,
        key: str,
        data: str | bytes,
        *,
        exclude: Handle | str | None = None,
        strict: bool = False,
        confirm: bool = False,
        timeout: float | None = None,
    ) -> SendReport:
        """Send ``data`` to every socket of ``key`` on every node (``exclude`` spares one).

        Each connection receives sends and closes in the order they were issued.
        Payloads larger than the broker allows raise ``ValueError``. With
        ``confirm=True``, waits up to ``timeout`` for every live node to say for how
        many sockets it queued the message (as ``close_all`` does for closes).
        """
        self._require_running()
        key_hash = self.names.key_hash(_check_key(key))
        exclude_id = exclude.id if isinstance(exclude, Handle) else (exclude or "")
        data = self._check_payload(data, exclude=exclude_id)
        state = self._hashes.get(key_hash)
        sent_here = self._send_to_handles(state.handles, data, exclude_id) if state is not None else 0
        outgoing = _Outgoing("send", key_hash, exclude=exclude_id, data=data)
        query = await self._new_query(timeout) if confirm else None
        if not await self._send_remote(outgoing, strict, query):
            return SendReport(sent_here, queued=True)
        if query is None:
            return SendReport(sent_here)
        with anyio.move_on_after(self._confirm_timeout if timeout is None else timeout):
            await query.done.wait()
        answers, missing = dict(query.answers), query.missing
        return SendReport(sent_here, nodes=answers, missing=missing, confirmed=True, complete=query.complete)

    async def broadcast(
        self, data: str | bytes, *, exclude: Handle | str | None = None, strict: bool = False
    ) -> SendReport:
        """Send ``data`` to every socket of every node, in one broker message
        (``exclude`` spares one). The report counts this node's sockets (a broadcast
        is not confirmed: ask ``count`` of a key every socket holds if you need to)."""
        self._require_running()
        exclude_id = exclude.id if isinstance(exclude, Handle) else (exclude or "")
        data = self._check_payload(data, exclude=exclude_id)
        sent_here = self._send_to_handles(self._all_handles(), data, exclude_id)
        sent = await self._send_remote(_Outgoing("broadcast", "", exclude=exclude_id, data=data), strict)
        return SendReport(sent_here, queued=not sent)

    async def send_to(
        self, handle_id: str, data: str | bytes, *, timeout: float | None = None, strict: bool = False
    ) -> Delivered:
        """Send ``data`` to one socket, wherever it is (by ``handle.id``): one message to
        the node that holds it, which says whether it found the socket."""
        return await self._direct("send_to", handle_id, timeout, strict, data=self._check_payload(data))

    async def close_handle(
        self,
        handle_id: str,
        *,
        code: int = CLOSE_DEFAULT,
        reason: str = "",
        timeout: float | None = None,
        strict: bool = False,
    ) -> Delivered:
        """Close one socket, wherever it is (by ``handle.id``)."""
        validate_close(code, reason)
        return await self._direct("close_to", handle_id, timeout, strict, code=code, reason=reason)

    async def _direct(
        self,
        op: Literal["send_to", "close_to"],
        handle_id: str,
        timeout: float | None,
        strict: bool,
        *,
        data: str | bytes | None = None,
        code: int = 0,
        reason: str = "",
    ) -> Delivered:
        self._require_running()
        node, dot, number = handle_id.rpartition(".") if isinstance(handle_id, str) else ("", "", "")
        if not dot or not node or not number.isdigit():
            raise ValueError(f"{handle_id!r} is not a handle id (they look like '<node id>.<number>')")
        if node == self.node_id:
            handle = self._find_handle(handle_id)
            if handle is not None:
                if op == "send_to" and data is not None:
                    self._delivery.send(handle, data)
                else:
                    self._delivery.close(handle, code, reason)
            return Delivered(handle is not None, node)
        outgoing = _Outgoing(op, "", code=code, reason=reason, data=data, target=handle_id)
        query = Query(frozenset({node}))
        if not await self._send_remote(outgoing, strict, query):
            return Delivered(False, node, complete=False, queued=True)
        with anyio.move_on_after(self._confirm_timeout if timeout is None else timeout):
            await query.done.wait()
        answered = query.answers.get(node)
        return Delivered(bool(answered), node, complete=answered is not None)

    async def members(self, key: str, *, limit: int | None = None, timeout: float | None = None) -> Members:
        """Every socket of ``key`` cluster-wide: handle id, node, keys and data of each.

        ``limit`` caps how many each node lists; ``complete`` is as for ``count``.
        The answers travel on the broker: they carry the sockets' keys and data. A
        socket's keys include its session's id: do not forward ``Member.keys`` to
        other users (whoever holds a session id can attach sockets to that session).
        """
        self._require_running()
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ValueError("limit must be None or a positive int")
        key_hash = self.names.key_hash(_check_key(key))
        local_count, local_listing = self._local_members(self._hashes.get(key_hash), limit)
        listings = {self.node_id: (local_count, local_listing)}
        complete = False
        missing: frozenset[str] = frozenset()
        if self._connected:
            query = await self._new_query(timeout)
            token = self._queries.open(query, self._tasks_or_raise())
            command = Command("members", self.node_id, target=key_hash, query=token, count=limit or 0)
            try:
                receivers = await self._publish(self.names.control, command)
            except TransportError:
                receivers = None
                query = Query(frozenset({"(broker)"}))
            else:
                query.expect_receivers(receivers)
                with anyio.move_on_after(self._confirm_timeout if timeout is None else timeout):
                    await query.done.wait()
            complete, missing = query.complete, query.missing
            for node, count in query.answers.items():
                listings[node] = (count, query.details.get(node, "[]"))
        members: list[Member] = []
        truncated = False
        for node, (count, listing) in listings.items():
            entries = _members_of(listing)
            truncated = truncated or len(entries) < count
            members.extend(Member(entry[0], node, entry[1], entry[2]) for entry in entries)
        return Members(tuple(members), complete, missing - {"(broker)"}, truncated)

    async def count(self, key: str, *, timeout: float | None = None) -> Count:
        """Sockets of ``key`` cluster-wide, and whether every live node answered."""
        self._require_running()
        key_hash = self.names.key_hash(_check_key(key))
        local = self.local_count(key)
        if not self._connected:
            return Count(local, False)
        query = await self._new_query(timeout)
        token = self._queries.open(query, self._tasks_or_raise())
        command = Command("count", self.node_id, target=key_hash, query=token)
        try:
            receivers = await self._publish(self.names.control, command)
        except TransportError:
            return Count(local, False)
        query.expect_receivers(receivers)
        with anyio.move_on_after(self._confirm_timeout if timeout is None else timeout):
            await query.done.wait()
        return Count(local + sum(query.answers.values()), query.complete)

    def local_count(self, key: str) -> int:
        """Sockets of ``key`` on this node (not closing)."""
        state = self._keys.get(key)
        if state is None:
            return 0
        return sum(1 for handle in state.handles if not handle.closing)

    def note_refused(self, reason: str) -> None:
        """Count a websocket an adapter refused before the upgrade (``refused_by_reason``)."""
        self._refused[reason] = self._refused.get(reason, 0) + 1
        self._emit("websocket_refused", reason=reason)

    async def close_local(self, *, code: int = CLOSE_SHUTDOWN, reason: str = "") -> int:
        """Close every socket on this node (shutdown); wait for them, each bounded by
        ``close_timeout``. Returns how many were closed."""
        validate_close(code, reason)
        completion = Completion()
        closed = sum(self._delivery.close(handle, code, reason, completion) for handle in self._all_handles())
        completion.seal()
        with anyio.move_on_after(self._close_timeout + 1.0, shield=True):
            await completion.done.wait()
        return closed

    def _all_handles(self) -> list[Handle]:
        return list({handle for state in self._keys.values() for handle in state.handles})

    def local_handles(self, key: str) -> frozenset[Handle]:
        """The handles of ``key`` on this node."""
        state = self._keys.get(key)
        return frozenset(state.handles) if state is not None else frozenset()

    def local_keys(self) -> frozenset[str]:
        """Keys with at least one socket on this node."""
        return frozenset(key for key, state in self._keys.items() if state.handles)

    def live_nodes(self) -> frozenset[str]:
        """Other nodes heard from recently (heartbeats)."""
        return self._membership.live()

    def stats(self) -> dict[str, Any]:
        """Counters and gauges for metrics and debugging."""
        sockets = len(self._all_handles())
        return {
            "registered": self._handle_counter,
            "unregistered": self._handle_counter - sockets,
            **self._stats,
            "node": self.node_id,
            "sockets": sockets,
            "keys": sum(1 for state in self._keys.values() if state.handles),
            "subscriptions": sum(1 for state in self._keys.values() if state.subscribed),
            "dropped_by_reason": dict(self._drops.counts),
            "refused_by_reason": dict(self._refused),
            "outbox": len(self._outbox),
            "members": len(self._membership.live()),
            "silent_members": len(self._membership.expected() - self._membership.live()),
            "broker": "connected" if self._connected else "disconnected",
            "healthy": self.healthy,
            "sequence": self._known_sequence,
        }

    # ------------------------------------------------------------------ the broker
    async def _publish(self, channel: str, command: Command) -> int | None:
        receivers = await self.transport.publish(channel, self._codec.encode(command))
        self._stats["commands_sent"] += 1
        return receivers

    def _tasks_or_raise(self) -> anyio.abc.TaskGroup:
        if self._tasks is None:
            raise NotConfiguredError("the registry is not running")
        return self._tasks

    def message_received(self, channel: str, payload: bytes) -> None:
        """Transport callback: one command arrived. Never blocks, never raises."""
        if self._own_origin in payload:
            return
        try:
            command = self._codec.decode(payload)
        except WireError as error:
            self._drop(error.reason, error.detail)
            return
        if command.origin == self.node_id:
            return
        self._stats["commands_received"] += 1
        self._dispatch_safely(channel, command)

    def _drop(self, reason: DropReason, detail: str = "") -> None:
        self._stats["commands_dropped"] += 1
        self._drops.drop(reason, detail)
        self._emit("command_dropped", reason=reason)

    def _bound_key(self, channel: str, command: Command) -> str | None:
        """The key hash ``command`` may act on, from the channel it arrived on and what
        it names (both signed); ``None`` when it is dropped."""
        on_channel = self.names.key_hash_of(channel)
        if on_channel is None:
            if channel != self.names.control or not command.target:
                self._drop("channel", f"a {command.op} command arrived on {channel}")
                return None
            if command.key and command.key != command.target:
                self._drop("channel", "a command names two keys")
                return None
            return command.target
        if (command.key or on_channel) != on_channel or command.target not in ("", on_channel):
            self._drop("channel", "a command for another key arrived on a key's channel")
            return None
        if not command.key and self._codec.signed and not self._accept_unbound:
            self._drop("unbound", "a signed command that does not name its key")
            return None
        return on_channel

    def _dispatch(self, channel: str, command: Command) -> None:
        op = command.op
        key_hash = ""
        if op == "broadcast":
            if channel != self.names.control:
                self._drop("channel", f"a broadcast arrived on {channel}")
                return
        elif op in DIRECT_OPS:
            if channel != self._inbox or not command.target.startswith(self._handle_class.prefix):
                self._drop("channel", f"a {op} command for another node arrived on {channel}")
                return
        elif op in EFFECTFUL_OPS or op in ("count", "members"):
            bound = self._bound_key(channel, command)
            if bound is None:
                return
            key_hash = bound
        if op in EFFECTFUL_OPS:
            epoch = self.transport.identity
            if not command.epoch and self._codec.signed and not self._accept_unbound:
                self._drop("unbound", "a signed command that does not name its broker epoch")
                return
            if command.epoch and epoch and command.epoch != epoch:
                self._drop("epoch", "a command issued in another broker epoch")
                return
            if command.sequence <= 0:
                self._drop("malformed", "an effectful command without a sequence")
                return
            if command.sequence > self._known_sequence + _SEQUENCE_LEAP:
                self._check_far_ahead(channel, command)
                return
            # Only a command that names the current epoch may start the guard afresh.
            if not self._replay.accept(command.origin, command.sequence, command.epoch or None):
                self._drop("replayed")
                return
            self._note_sequence(command.sequence)
        if op in ("hello", "beat", "leave", "who"):
            self._on_membership(command)
            return
        if op == "reply":
            detail = command.data if isinstance(command.data, str) else None
            self._queries.answer(
                command.query, command.origin, command.count, observer=command.observer, detail=detail
            )
            return
        if op == "broadcast":
            if command.data is not None:
                self._send_to_handles(self._all_handles(), command.data, command.exclude)
            return
        if op in DIRECT_OPS:
            self._on_direct(command)
            return
        state = self._hashes.get(key_hash)
        if op == "count":
            if command.query:
                self._spawn_reply(command, self.local_count(state.key) if state is not None else 0)
            return
        if op == "members":
            if command.query:
                count, listing = self._local_members(state, command.count or None)
                self._tasks_or_raise().start_soon(self._reply, command, count, listing)
            return
        if op == "send":
            sent = 0
            if state is not None and command.data is not None:
                sent = self._send_to_handles(state.handles, command.data, command.exclude)
            if command.query:
                self._spawn_reply(command, sent)
            return
        if not _close_code_ok(command.code, command.reason):
            self._drop("malformed", f"close code {command.code} or its reason cannot be sent")
            return
        completion = Completion() if command.query else None
        if op == "revoke":
            self._remember_revoked(key_hash, command.ttl or self._revoke_ttl, command.code, command.reason)
            if state is not None:
                for handle in list(state.handles):
                    self._delivery.close(handle, command.code, command.reason, completion)
        else:
            if state is not None:
                close = CloseMarker(command.sequence, command.code, command.reason, command.exclude)
                self._apply_close(state, close, completion)
        if completion is not None:
            completion.seal()
            self._tasks_or_raise().start_soon(self._reply_when_closed, command, completion)

    def _check_far_ahead(self, channel: str, command: Command) -> None:
        """A command far ahead of the newest sequence this node knows: apply it only
        once the broker's counter shows that sequence was issued (a node that was quiet
        for long is simply behind). One check at a time, for every command waiting on
        it; right after a check, a sequence still that far ahead cannot be genuine."""
        if self._far_ahead is None:
            if time.monotonic() - self._sequence_checked_at < _SEQUENCE_CHECK_FRESH:
                self._drop("sequence", f"sequence {command.sequence} is far ahead of the broker's counter")
                return
            self._far_ahead = [(channel, command)]
            self._tasks_or_raise().start_soon(self._check_sequences)
        elif len(self._far_ahead) < _FAR_AHEAD_WAITING:
            self._far_ahead.append((channel, command))
        else:
            self._drop("sequence", "too many commands wait for a sequence check")

    async def _check_sequences(self) -> None:
        current: int | None
        try:
            current = await self.transport.current_sequence()
        except TransportError:
            current = None
        waiting, self._far_ahead = self._far_ahead or [], None
        self._sequence_checked_at = time.monotonic()
        if current is not None:
            self._note_sequence(current)
        for channel, command in waiting:
            if current is None:
                self._drop("sequence", "could not check a sequence far ahead: the broker is unreachable")
            elif command.sequence > current:
                self._drop("sequence", f"sequence {command.sequence} is ahead of the broker's {current}")
            else:
                self._dispatch_safely(channel, command)

    def _dispatch_safely(self, channel: str, command: Command) -> None:
        # An exception here is a bug, not a bad message (those are dropped before):
        # count it, log it (rate-limited like the drops), keep reading.
        try:
            self._dispatch(channel, command)
        except Exception as error:
            logger.debug("handling a %s command failed", command.op, exc_info=True)
            self._drop("internal", f"handling a {command.op} command failed: {error!r}")

    def _send_to_handles(self, handles: Iterable[Handle], data: str | bytes, exclude: str) -> int:
        sent = 0
        for handle in list(handles):
            if handle.id != exclude and not handle.closing:
                self._delivery.send(handle, data)
                sent += 1
        return sent

    def _find_handle(self, handle_id: str) -> Handle | None:
        """This node's open handle with ``handle_id`` (a scan: one socket's command)."""
        for state in self._keys.values():
            for handle in state.handles:
                if handle.id == handle_id:
                    return None if handle.closing else handle
        return None

    def _on_direct(self, command: Command) -> None:
        handle = self._find_handle(command.target)
        if handle is not None:
            if command.op == "send_to" and command.data is not None:
                self._delivery.send(handle, command.data)
            elif command.op == "close_to":
                if not _close_code_ok(command.code, command.reason):
                    self._drop("malformed", f"close code {command.code} or its reason cannot be sent")
                    return
                self._delivery.close(handle, command.code, command.reason)
        if command.query:
            self._spawn_reply(command, 0 if handle is None else 1)

    def _local_members(self, state: KeyState | None, limit: int | None) -> tuple[int, str]:
        """This node's sockets of a key, as the JSON list a ``members`` reply carries
        (cut to ``limit`` and to what one broker message can hold)."""
        handles = sorted(
            (handle for handle in (state.handles if state is not None else ()) if not handle.closing),
            key=lambda handle: handle.number,
        )
        listing = [{"h": handle.id, "k": list(handle.keys), "d": handle.data} for handle in handles[:limit]]
        text = json.dumps(listing, separators=(",", ":"), ensure_ascii=False)
        budget = self.transport.max_payload // 2
        while len(text.encode("utf-8")) > budget and listing:
            listing = listing[: len(listing) // 2]
            text = json.dumps(listing, separators=(",", ":"), ensure_ascii=False)
        return len(handles), text

    def _spawn_reply(self, command: Command, count: int) -> None:
        self._tasks_or_raise().start_soon(self._reply, command, count)

    async def _reply_when_closed(self, command: Command, completion: Completion) -> None:
        with anyio.move_on_after(self._close_timeout + 1.0):
            await completion.done.wait()
        await self._reply(command, completion.closed)

    async def _reply(self, command: Command, count: int, detail: str | None = None) -> None:
        reply = Command(
            "reply", self.node_id, query=command.query, count=count, observer=self.publish_only, data=detail
        )
        try:
            await self._publish(self.names.inbox(command.origin), reply)
        except TransportError:
            logger.info("could not answer %s from %s: broker unreachable", command.op, command.origin)

    def _on_membership(self, command: Command) -> None:
        if command.op == "leave":
            if self._membership.leave(command.origin):
                self._emit("member_left", node=command.origin)
            self._replay.forget(command.origin)
            return
        if command.op != "who" and self._membership.beat(
            command.origin, command.interval or self._heartbeat_interval
        ):
            self._emit("member_joined", node=command.origin)
        if command.op == "beat" and command.data is not None:
            self._learn_silent(command)
        if command.op in ("hello", "who") and not self.publish_only:
            # Answer a newcomer (or a roll call) at once, so it knows the membership
            # before the next heartbeat. A roll call's asker (the admin CLI) does not
            # join the membership.
            self._tasks_or_raise().start_soon(self._beat, "beat", True)

    def _learn_silent(self, command: Command) -> None:
        """An answer to this node's hello names the nodes its sender expects. This node was
        away (starting, reconnecting) and may never have heard of some: one that fell
        silent (paused, cut off) just before may hold sockets, so it is expected too."""
        silent = decode_silent(command.data)
        if silent is None:
            self._drop("malformed", f"a heartbeat from {command.origin} lists no valid silent nodes")
            return
        for node, left in silent.items():
            if node != self.node_id and self._membership.learn_silent(node, left):
                logger.debug("%s expects node %s, not heard here: expecting it too", command.origin, node)

    async def _beat(self, op: Literal["hello", "beat", "who"], answer: bool = False) -> None:
        silent = encode_silent(self._membership.windows()) if answer else None
        with suppress(TransportError):
            await self._publish(
                self.names.control, Command(op, self.node_id, interval=self._heartbeat_interval, data=silent)
            )

    async def _heartbeat(self) -> None:
        interval = self._heartbeat_interval
        woke = time.monotonic()
        while True:
            if self._connected:
                await self._beat("beat")
                # Silence is measured only while this node can hear: not while its broker
                # connection is down (``_recover_once`` moves the windows on by the
                # outage), nor while the process was paused or starved (the lateness of
                # this loop).
                self._expire_members()
            self._drops.flush()
            await anyio.sleep(interval)
            now = time.monotonic()
            if now - woke > 3 * interval:
                self._membership.shift(now - woke - interval)
            woke = now

    def _expire_members(self) -> None:
        """Nodes whose heartbeats stopped leave the membership (``member_left``, once);
        their replay windows are kept while they may still come back."""
        silent, forgotten = self._membership.expire()
        for node in silent:
            logger.info("node %s fell silent without a goodbye", node)
            self._emit("member_left", node=node)
        for node in forgotten:
            self._replay.forget(node)

    def connection_lost(self) -> None:
        """Transport callback: the broker connection dropped."""
        if not self._connected:
            return
        self._connected = False
        self._lost_at = time.monotonic()
        self._stats["broker_losses"] += 1
        logger.warning("lost the broker connection; serving locally and queueing remote commands")
        self._emit("broker_lost")

    def connection_restored(self) -> None:
        """Transport callback: connected again and resubscribed; reconcile."""
        if self._tasks is None:
            return
        if self._recovering:
            self._recover_again = True  # the running recovery starts over when it ends
            return
        self._recovering = True
        self._tasks.start_soon(self._recover)

    async def _new_query(self, timeout: float | None) -> Query:
        """A question to every node expected to answer. A node that just started (or
        whose broker lost its data) first waits to hear the membership (answers to its
        hello come at once), within ``timeout``; if it still has not, the answer can
        only be incomplete."""
        settled = self._settled
        if not settled.is_set():
            with anyio.move_on_after(self._confirm_timeout if timeout is None else timeout):
                await settled.wait()
        return Query(self._membership.expected(), known=settled.is_set())

    def _unsettle(self) -> None:
        """The membership must be heard again (start, data loss): questions wait for it."""
        if self._settled.is_set():
            self._settled = anyio.Event()
        if self._tasks is not None:
            self._tasks.start_soon(self._settle, self._settled)

    async def _settle(self, settled: anyio.Event) -> None:
        await anyio.sleep(min(self._heartbeat_interval, _SETTLE_MAX))
        settled.set()

    async def _learn_broker(self) -> None:
        identity = self.transport.identity
        sequence = await self.transport.current_sequence()
        if self._identity is None:
            self._replay.reset(sequence, identity)
        self._identity = identity
        self._note_sequence(sequence)
        self._connected = True
        self._lost_at = None
        self._unsettle()
        await self._beat("who" if self.publish_only else "hello")

    async def _recover(self) -> None:
        """After a reconnect: find what was missed, close what must be closed, flush the outbox.

        A broker can say "connected" and still refuse commands for a while (a Redis
        Cluster electing, JetStream choosing a leader): while the transport stays
        connected, the recovery is retried with a backoff instead of waiting for a
        reconnect that will not come.
        """
        delay = 0.05
        try:
            while True:
                self._recover_again = False
                try:
                    await self._recover_once()
                except TransportError:
                    if not self.transport.connected:
                        logger.info("the broker dropped again while reconciling")
                        return  # the next connection_restored starts over
                    logger.info("the broker refused the reconcile; retrying in %.2fs", delay)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if not self._recover_again:
                    return
        except Exception:
            logger.exception("reconciling after a reconnect failed; closing local sockets with 1012")
            self._close_unknown_state(self._all_handles())
        finally:
            self._recovering = False

    async def _recover_once(self) -> None:
        identity = self.transport.identity
        lost_at = self._lost_at
        outage = time.monotonic() - lost_at if lost_at is not None else 0.0
        sequence = await self.transport.current_sequence()
        # A new epoch says the broker lost the namespace's data. (A broker that kept its
        # epoch but lost the tail of its writes — JetStream between syncs, Redis without
        # appendfsync always — would reuse sequences: see the limits in the guarantees.)
        if sequence < self._known_sequence:
            logger.warning(
                "the broker's sequence went back from %d to %d: it lost recent writes",
                self._known_sequence,
                sequence,
            )
        if self._identity is not None and identity != self._identity:
            # Close first: nothing below may depend on the broker answering.
            logger.warning("the broker lost its data; closing local sockets with 1012")
            self._close_unknown_state(self._all_handles())
            # The membership stays: the other nodes did not go anywhere, and clearing it
            # would make confirmed commands complete without them until they beat again.
            self._known_sequence = sequence
            if self._replay.epoch != identity:
                # Every command of the new epoch is new to this node: commands that
                # faster nodes numbered before this moment may still be on their way.
                # (A command of the new epoch may already have started the guard afresh.)
                self._replay.reset(0, identity)
            self._identity = identity
            self._reassert_pending = True
        elif outage > self._marker_ttl:
            logger.warning("the outage outlived the markers; closing local sockets with 1012")
            self._close_unknown_state(self._all_handles())
        else:
            await self._reconcile()
        if self._reassert_pending:
            # Kept apart from the branch above: a retry after a failed write (the broker
            # refused it) finds the same epoch, and must still write the revocations.
            await self._reassert_revocations()
            self._reassert_pending = False
        self._identity = identity
        self._note_sequence(await self.transport.current_sequence())
        if lost_at is not None:
            self._membership.shift(time.monotonic() - lost_at)
        self._connected = True
        self._lost_at = None
        self._stats["reconciles"] += 1
        self._emit("broker_restored", outage=outage)
        self._outbox_kick.set()
        # While it was away this node heard no heartbeat: questions wait until the answers
        # to its hello (which name the nodes that fell silent meanwhile) are in.
        self._unsettle()
        await self._beat("who" if self.publish_only else "hello")

    async def _reassert_revocations(self) -> None:
        """After a data loss, write again the revocations this node knows and the
        broker forgot (each with the time it has left), so that a revoked key stays
        refused on every node — as long as one live node remembers it."""
        now = time.monotonic()
        known = [(key_hash, entry) for key_hash, entry in self._revoked.items() if entry[0] > now]
        if not known:
            return
        markers = await self._read_markers([key_hash for key_hash, _ in known])
        written = 0
        for key_hash, (expires, code, reason) in known:
            if markers[key_hash].revoke is None and expires > time.monotonic():
                outgoing = _Outgoing("revoke", key_hash, code, reason, ttl=expires - time.monotonic())
                await self._send_outgoing(outgoing)
                written += 1
        logger.warning("re-asserted %d revocations the broker had lost", written)
        self._emit("revocations_reasserted", count=written)

    async def _reconcile(self) -> None:
        states = [state for state in self._keys.values() if state.handles]
        closed = await self._check_markers(states)
        logger.info("reconciled %d keys after a reconnect; %d sockets closed", len(states), closed)
        self._emit("reconciled", keys=len(states), closed=closed)

    async def _check_markers(self, states: list[KeyState]) -> int:
        """Read the markers of ``states``; close what a missed close or revoke should have."""
        markers = await self._read_markers([state.hash for state in states])
        closed = 0
        for state in states:
            found = markers.get(state.hash)
            if found is None:
                continue
            self._apply_markers(state, found)
            for handle in list(state.handles):
                if handle.pending:
                    continue  # its registration checks the markers itself
                if found.revoke is not None:
                    closed += self._delivery.close(handle, found.revoke.code, found.revoke.reason)
                elif (close := state.close_for(handle)) is not None:
                    closed += self._delivery.close(handle, close.code, close.reason)
        return closed

    def _after_subscribe(self, states: list[KeyState]) -> None:
        """Where interest spreads asynchronously (a NATS cluster), read the markers once
        more after the grace period: a close published on another server before our
        subscription reached it is found then."""
        if self._interest_grace > 0 and self._tasks is not None:
            self._tasks.start_soon(self._recheck, states)

    async def _recheck(self, states: list[KeyState]) -> None:
        await anyio.sleep(self._interest_grace)
        live = [state for state in states if state.handles and self._keys.get(state.key) is state]
        if not live or not self._connected:
            return  # a reconnect reconciles every key anyway
        try:
            closed = await self._check_markers(live)
        except TransportError:
            return
        if closed:
            logger.info("the second marker read closed %d sockets", closed)

    def _close_unknown_state(self, handles: Iterable[Handle]) -> None:
        for handle in list(handles):
            if self._delivery.close(handle, CLOSE_UNKNOWN_STATE, "reconnect to re-authorise"):
                self._stats["closed_unknown_state"] += 1
        for state in self._keys.values():
            state.forget_closes()

    async def _send_outbox(self) -> None:
        """Send what waits in the outbox, oldest first, as soon as the broker takes it.

        It needs no reconnect event: a broker that froze longer than the command
        timeout, or a client pool that was full, never drops the connection, and the
        outbox is retried while the node still counts as connected. After a real drop
        it waits for the reconnect's reconcile, which tells it the broker's epoch: a
        command sent before would name the old one (and after a data loss its sequence
        would be taken for a replay). Between tries it backs off (jittered, capped); a
        restored connection or a newly queued command wakes it at once.
        """
        delay = _OUTBOX_MIN_DELAY
        while True:
            if not self._outbox or not self._connected:
                if not self._outbox:
                    delay = _OUTBOX_MIN_DELAY
                await self._outbox_kick.wait()
                self._outbox_kick = anyio.Event()
                continue
            outgoing = self._outbox[0]
            try:
                await self._send_outgoing(outgoing)
            except TransportError as error:
                logger.info("the outbox (%d waiting) is not through yet: %s", len(self._outbox), error)
                self._outbox_kick = anyio.Event()
                with anyio.move_on_after(random.uniform(delay / 2, delay)):
                    await self._outbox_kick.wait()
                delay = min(delay * 2, _OUTBOX_MAX_DELAY)
                continue
            self._outbox.popleft()
            self._stats["outbox_sent"] += 1
            self._emit("outbox_sent", op=outgoing.op, depth=len(self._outbox))
            if not self._outbox:
                logger.warning("the outbox is sent; every command issued here reached the broker")

    # ------------------------------------------------------------------ helpers
    def _sign_marker(self, name: str, value: bytes) -> bytes:
        return self._codec.sign_marker(name, self.transport.identity, value)

    def _check_marker(self, name: str, value: bytes) -> bytes | None:
        """A marker read back, if its signature holds (signing on); a forged one is
        dropped and counted, and counts as absent."""
        body = self._codec.verify_marker(name, self.transport.identity, value)
        if body is None:
            self._drop("forged", "a marker whose signature does not verify")
        return body

    async def _read_markers(self, key_hashes: list[str]) -> dict[str, KeyMarkers]:
        check = self._check_marker if self._codec.signed else None
        return await read_key_markers(self.transport, self.names, key_hashes, check)

    def _note_sequence(self, sequence: int) -> None:
        if sequence > self._known_sequence:
            self._known_sequence = sequence

    def _remember_revoked(self, key_hash: str, ttl: float, code: int, reason: str) -> None:
        state = self._hashes.get(key_hash)
        if state is not None:
            state.closed_before = True  # registrations of this key check the revocation
        self._revoked[key_hash] = (time.monotonic() + ttl, code, reason)
        self._revoked.move_to_end(key_hash)
        while len(self._revoked) > _REVOKED_CACHE_SIZE:
            self._revoked.popitem(last=False)

    def _revoke_ttl_left(self, expires: float | None) -> float:
        # The revoke marker carries its expiry (wall clock, only to size the local
        # cache; ordering never depends on clocks).
        return self._revoke_ttl if expires is None else max(0.0, expires - time.time())

    def _emit(self, name: str, **detail: object) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(Event(name, detail))
        except Exception:
            logger.exception("the on_event callback failed")


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"keys must be str, not {type(key).__name__}")
    if not key:
        raise ValueError("keys must be non-empty strings")
    return key


def _normalize_keys(keys: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(keys, str):
        return (_check_key(keys),)
    if not isinstance(keys, Iterable):
        raise TypeError(f"keys must be a str or an iterable of str, not {type(keys).__name__}")
    result = tuple(dict.fromkeys(_check_key(key) for key in keys))
    if not result:
        raise ValueError("register needs at least one key (the session-ws id)")
    return result


def _members_of(listing: str) -> list[tuple[str, tuple[str, ...], Mapping[str, Any] | None]]:
    """Decode a ``members`` answer; what does not fit the shape is left out."""
    try:
        entries = json.loads(listing)
    except (ValueError, RecursionError):
        return []
    result: list[tuple[str, tuple[str, ...], Mapping[str, Any] | None]] = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        handle_id, keys, data = entry.get("h"), entry.get("k"), entry.get("d")
        if not isinstance(handle_id, str) or not isinstance(keys, list):
            continue
        if not all(isinstance(key, str) for key in keys) or not (data is None or isinstance(data, dict)):
            continue
        result.append((handle_id, tuple(keys), data))
    return result


def _close_code_ok(code: int, reason: str) -> bool:
    try:
        validate_close(code, reason)
    except (TypeError, ValueError):
        return False
    return True
