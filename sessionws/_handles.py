"""Registered connections (handles) and the per-key state a node keeps."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import anyio

if TYPE_CHECKING:
    from sessionws._markers import CloseMarker
    from sessionws._protocols import Connection

__all__ = (
    "CLOSED_FLAG",
    "PENDING_FLAG",
    "QUEUED_FLAG",
    "CloseItem",
    "Completion",
    "Handle",
    "KeyState",
    "SendItem",
)


class Completion:
    """Counts down closes a confirmed command waits for."""

    __slots__ = ("closed", "done", "remaining")

    def __init__(self) -> None:
        self.remaining = 0
        self.closed = 0
        self.done = anyio.Event()

    def add(self) -> None:
        self.remaining += 1

    def finish(self, closed: bool) -> None:
        self.remaining -= 1
        self.closed += closed
        if self.remaining <= 0:
            self.done.set()

    def seal(self) -> None:
        """No more closes will be added."""
        if self.remaining <= 0:
            self.done.set()


class SendItem(NamedTuple):
    data: str | bytes


class CloseItem(NamedTuple):
    code: int
    reason: str
    completion: Completion | None
    #: ``time.monotonic()`` when the close was issued here (the ``closed`` event's ``seconds``).
    issued: float


_PENDING, _CLOSING, _CLOSED, _DRAINING, _QUEUED = 1, 2, 4, 8, 16
# The registry's unregister reads these directly (it runs for every socket that leaves).
PENDING_FLAG, CLOSED_FLAG, QUEUED_FLAG = _PENDING, _CLOSED, _QUEUED


class Handle:
    """One registered connection. Its ``id`` is unique across the cluster.

    ``registration_sequence`` is the namespace sequence current when the
    registration took effect: a close with a newer sequence always reaches this
    connection. Work for the connection waits in an ordered, bounded queue that a
    task of the registry drains, so the broker listener never awaits a client.

    Kept small, as registering is on every websocket's path: each registry makes a
    subclass that holds its node's id prefix, and the queue exists (flag ``_QUEUED``)
    only once something was queued.
    """

    __slots__ = (
        "__weakref__",
        "_flags",
        "_queue",
        "connection",
        "number",
        "others",
        "registration_sequence",
        "state",
    )

    #: ``"<node id>."``, set by the registry's subclass.
    prefix: ClassVar[str] = ""
    #: Per-socket data of the registry's handles (most have none: kept out of the slots).
    data_table: ClassVar[dict[Handle, Mapping[str, Any]]] = {}
    _queue: deque[SendItem | CloseItem]  # set by the first enqueue

    def __init__(
        self,
        number: int,
        connection: Connection,
        state: KeyState,
        others: tuple[KeyState, ...] = (),
        sequence: int = 0,
    ) -> None:
        self.number = number
        self.connection = connection
        # The node's state of the first key and of the others, if any (a state lives
        # while it holds a handle, so leaving needs no lookup). Most sockets have one
        # key: a tuple of one would be one more object made and collected per socket.
        self.state = state
        self.others = others
        self.registration_sequence = sequence
        self._flags = 0

    @classmethod
    def for_node(cls, prefix: str) -> type[Handle]:
        """The handle class of one registry: its handles' ids start with ``prefix``."""
        namespace = {"__slots__": (), "prefix": prefix, "data_table": {}, "__module__": cls.__module__}
        return type("Handle", (cls,), namespace)

    @property
    def data(self) -> Mapping[str, Any] | None:
        """The per-socket data given to ``register(..., data=)`` or ``set_data``."""
        return self.data_table.get(self)

    @property
    def id(self) -> str:
        """``<node id>.<number>``: unique across the cluster (node ids are random)."""
        return f"{self.prefix}{self.number}"

    @property
    def states(self) -> tuple[KeyState, ...]:
        """The node's state of each key of this connection."""
        return (self.state, *self.others)

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys this connection is registered under."""
        return tuple(state.key for state in self.states)

    @property
    def pending(self) -> bool:
        """Still registering (subscribing, checking markers)."""
        return bool(self._flags & _PENDING)

    @property
    def closing(self) -> bool:
        """A close is queued or done: the registry will not deliver more to it."""
        return bool(self._flags & (_CLOSING | _CLOSED))

    @property
    def closed(self) -> bool:
        """Unregistered (closed by the registry, or left)."""
        return bool(self._flags & _CLOSED)

    @property
    def queued(self) -> int:
        """Items waiting to be delivered."""
        return len(self._queue) if self._flags & _QUEUED else 0

    def __repr__(self) -> str:
        if self._flags & (_CLOSED | _CLOSING):
            state = "closed" if self._flags & _CLOSED else "closing"
        else:
            state = "pending" if self._flags & _PENDING else "open"
        return f"<Handle {self.id} {state} keys={len(self.keys)}>"

    # --- used by the registry -------------------------------------------------
    def mark_pending(self) -> None:
        self._flags |= _PENDING

    def registered(self) -> None:
        self._flags &= ~_PENDING

    def mark_closing(self) -> bool:
        """True if this call started the close (it was neither closing nor closed)."""
        if self._flags & (_CLOSING | _CLOSED):
            return False
        self._flags |= _CLOSING
        return True

    def drop_queue(self) -> None:
        """The connection left: drop what waits for it; a waited-for close counts as done."""
        if self._flags & _QUEUED:
            for item in self._queue:
                if isinstance(item, CloseItem) and item.completion is not None:
                    item.completion.finish(True)
            self._queue.clear()

    def enqueue(self, item: SendItem | CloseItem) -> None:
        if not self._flags & _QUEUED:
            self._queue = deque()
            self._flags |= _QUEUED
        self._queue.append(item)

    def clear_queue(self) -> None:
        if self._flags & _QUEUED:
            self._queue.clear()

    def next_item(self) -> SendItem | CloseItem | None:
        return self._queue.popleft() if self._flags & _QUEUED and self._queue else None

    def start_draining(self) -> bool:
        """True if the caller must start a drain task (none is running)."""
        if self._flags & _DRAINING:
            return False
        self._flags |= _DRAINING
        return True

    def stop_draining(self) -> None:
        self._flags &= ~_DRAINING


class KeyState:
    """What a node knows of one key it holds (or held until the linger ends).

    Closes are remembered in two slots, the newest close of everyone and the newest
    close that spared one connection (``exclude``), so a connection that was spared
    by the newest close still sees an older close that did not spare it.
    """

    __slots__ = (
        "_closed_before",
        "_linger_until",
        "_subscribed",
        "added",
        "channel",
        "handles",
        "hash",
        "key",
        "last_full",
        "last_partial",
        "ready",
        "subscribing",
    )

    def __init__(self, key: str, key_hash: str, channel: str) -> None:
        self.key = key
        self.hash = key_hash
        self.channel = channel
        self.handles: set[Handle] = set()
        self.subscribing: object | None = None
        self.last_full: CloseMarker | None = None
        self.last_partial: CloseMarker | None = None
        self._subscribed = False
        self._linger_until: float | None = None
        self._closed_before = False
        #: Handles that got this key after their registration (``add_keys``), with the
        #: sequence at which the key took effect for them.
        self.added: dict[Handle, int] | None = None
        #: Subscribed, not lingering, no close remembered: a registration needs nothing
        #: but adding the handle (the registry's short path reads only this).
        self.ready = False

    @property
    def subscribed(self) -> bool:
        """The channel is subscribed (or wanted, while the broker is away)."""
        return self._subscribed

    @subscribed.setter
    def subscribed(self, value: bool) -> None:
        self._subscribed = value
        self._update_ready()

    @property
    def linger_until(self) -> float | None:
        """When the channel is released, if no socket holds the key any more."""
        return self._linger_until

    @linger_until.setter
    def linger_until(self, value: float | None) -> None:
        self._linger_until = value
        self._update_ready()

    @property
    def closed_before(self) -> bool:
        """A close or revocation of this key is remembered: registrations are checked."""
        return self._closed_before

    @closed_before.setter
    def closed_before(self, value: bool) -> None:
        self._closed_before = value
        self._update_ready()

    def _update_ready(self) -> None:
        self.ready = self._subscribed and self._linger_until is None and not self._closed_before

    def note_close(self, close: CloseMarker) -> None:
        """Remember a close of this key (from a message, a marker or this node)."""
        self.closed_before = True
        if close.exclude:
            if self.last_partial is None or close.sequence > self.last_partial.sequence:
                self.last_partial = close
        elif self.last_full is None or close.sequence > self.last_full.sequence:
            self.last_full = close

    def since(self, handle: Handle) -> int:
        """The sequence from which this key holds ``handle``: a close of the key with a
        newer sequence reaches it."""
        if self.added is not None:
            return self.added.get(handle, handle.registration_sequence)
        return handle.registration_sequence

    def close_for(self, handle: Handle) -> CloseMarker | None:
        """The newest remembered close that applies to ``handle``, if any."""
        found: CloseMarker | None = None
        since = self.since(handle)
        for close in (self.last_full, self.last_partial):
            if (
                close is not None
                and close.sequence > since
                and close.exclude != handle.id
                and (found is None or close.sequence > found.sequence)
            ):
                found = close
        return found

    def forget_closes(self) -> None:
        self.last_full = self.last_partial = None
        self.closed_before = False
