"""The seams of sessionws: what adapters and transports plug into.

They are :class:`typing.Protocol` classes, so a framework's websocket object or a
third-party broker client can be wrapped without inheriting from anything here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from sessionws._handles import Handle
    from sessionws._reports import CloseReport, Count, Delivered, Members, SendReport

__all__ = (
    "Connection",
    "IdProvider",
    "Marker",
    "Registry",
    "Transport",
    "TransportHandler",
)

RequestT_contra = TypeVar("RequestT_contra", contravariant=True)


@runtime_checkable
class Connection(Protocol):
    """A websocket as the registry sees it.

    ``close`` on an already closed connection must be a no-op. Both calls may block
    on a slow client; the registry bounds them with timeouts and never calls them
    from its broker listener.
    """

    async def close(self, code: int, reason: str) -> None: ...

    async def send(self, data: str | bytes) -> None: ...


class IdProvider(Protocol[RequestT_contra]):
    """Where a request's session-ws id lives (a session key, a JWT claim, ...)."""

    async def get_id(self, request: RequestT_contra) -> str | None:
        """The id of this request's session, or ``None`` when it has none yet."""
        ...

    async def new_id(self, request: RequestT_contra) -> str:
        """Store a fresh id for this request's session and return it."""
        ...

    async def delete_id(self, request: RequestT_contra) -> None:
        """Forget this request's id (a no-op when there is none)."""
        ...

    async def ensure_id(self, request: RequestT_contra) -> str:
        """The current id, created first when missing."""
        ...


class Marker(NamedTuple):
    """A marker read back from a transport: its sequence and the value stored with it."""

    sequence: int
    value: bytes


class TransportHandler(Protocol):
    """What a transport calls back into (the registry).

    All three methods are synchronous and must not block: a transport calls them
    from its reader task.
    """

    def message_received(self, channel: str, payload: bytes) -> None: ...

    def connection_lost(self) -> None:
        """The broker connection dropped; messages may be missed from now on."""
        ...

    def connection_restored(self) -> None:
        """The connection is back and every wanted channel is subscribed again."""
        ...


@runtime_checkable
class Transport(Protocol):
    """The broker: bytes in and out, plus a small marker store with one sequence.

    Contract (checked by ``tests/transports``, which every transport must pass):

    * ``open(handler)`` is an async context manager; inside it the transport
      connects, keeps reconnecting when the broker drops, reports the drop and the
      return through ``handler``, and resubscribes every wanted channel *before*
      calling ``handler.connection_restored()``.
    * ``subscribe`` / ``unsubscribe`` take many channels at once, are idempotent,
      change the wanted set *first* (so a channel wanted while the broker is down
      is subscribed on reconnect, and one dropped is not) and return once the broker
      confirmed. While the broker is unreachable ``subscribe`` raises
      :class:`~sessionws.TransportError`; ``unsubscribe`` returns (there is nothing
      to undo on a broker that forgot the connection).
    * Handler callbacks should not raise; a transport logs an exception from one and
      keeps reading. ``identity`` is ``""`` until the first connection. A publish may
      rarely be delivered twice (a client retry): the registry drops duplicates.
    * ``publish`` returns the number of receivers where the broker reports one,
      else ``None``; messages from one publisher to one subscriber keep their order.
    * The sequence is namespace-wide and strictly increasing: ``next_sequence``
      takes a new one, ``current_sequence`` reads the newest taken, ``mark``
      stores ``value`` under ``key`` for ``ttl`` seconds with a new sequence
      (atomically: a later ``mark`` of the same key always has the larger one)
      and returns it. ``read_markers`` reads many markers in few round trips.
    * Optional method ``mark_and_publish(key, value, ttl, sequence, channel, payload)``:
      where the broker allows, set ``key``'s marker to a ``sequence`` taken with
      ``next_sequence`` (unless a newer marker is there) and publish, atomically
      (memory; standalone Redis, one script). The registry then never leaves a marker
      without its command; without it, it calls ``mark`` then ``publish``.
    * Optional method ``mark_and_publish_numbered(key, value, ttl, channel, head,
      tail)``: take a new sequence, set ``key``'s marker to it and publish ``head +
      b"<sequence>" + tail``, atomically; return ``(sequence, receivers)``. The
      registry uses it for unsigned commands (a signed one must be signed with its
      sequence): one broker round trip per close (memory; standalone Redis).
    * Optional attribute ``interest_grace`` (seconds): where a confirmed subscription
      may still be unknown to other servers of the broker for a while (a NATS
      cluster spreads interest asynchronously), the registry reads the markers of
      newly subscribed keys once more after this grace. Absent or 0: not needed.
    * ``identity`` names the broker's data: it changes when the broker lost its
      data (a restart without persistence, a new stream), so sequences restart.
    * Made from a URL, by a factory registered under the entry-point group
      ``sessionws.transports``, a transport accepts the option ``open_timeout``: the
      seconds ``open()`` waits for the broker at start. See :mod:`sessionws.transport`.
    """

    max_payload: int

    def open(self, handler: TransportHandler) -> AbstractAsyncContextManager[None]: ...

    @property
    def connected(self) -> bool: ...

    @property
    def identity(self) -> str: ...

    async def subscribe(self, channels: Sequence[str]) -> None: ...

    async def unsubscribe(self, channels: Sequence[str]) -> None: ...

    async def publish(self, channel: str, payload: bytes) -> int | None: ...

    async def current_sequence(self) -> int: ...

    async def next_sequence(self) -> int: ...

    async def mark(self, key: str, value: bytes, ttl: float) -> int: ...

    async def read_markers(self, keys: Sequence[str]) -> list[Marker | None]: ...


class Registry(Protocol):
    """What the adapters call. :class:`~sessionws.SessionRegistry` implements it."""

    @property
    def healthy(self) -> bool: ...

    async def register(
        self, connection: Connection, keys: str | Iterable[str], data: Mapping[str, Any] | None = ...
    ) -> Handle: ...

    async def unregister(self, handle: Handle) -> None: ...

    def connection(
        self, connection: Connection, keys: str | Iterable[str]
    ) -> AbstractAsyncContextManager[Handle]: ...

    async def is_revoked(self, key: str) -> bool: ...

    async def close_all(
        self,
        key: str,
        *,
        code: int = ...,
        reason: str = ...,
        exclude: Handle | str | None = ...,
        confirm: bool = ...,
        timeout: float | None = ...,
        strict: bool = ...,
    ) -> CloseReport: ...

    async def revoke(
        self,
        key: str,
        *,
        ttl: float | None = ...,
        code: int = ...,
        reason: str = ...,
        confirm: bool = ...,
        timeout: float | None = ...,
        strict: bool = ...,
    ) -> CloseReport: ...

    async def send_all(
        self,
        key: str,
        data: str | bytes,
        *,
        exclude: Handle | str | None = ...,
        strict: bool = ...,
        confirm: bool = ...,
        timeout: float | None = ...,
    ) -> SendReport: ...

    async def count(self, key: str, *, timeout: float | None = ...) -> Count: ...

    async def add_keys(self, handle: Handle, keys: str | Iterable[str]) -> None: ...

    async def remove_keys(self, handle: Handle, keys: str | Iterable[str]) -> None: ...

    async def set_data(self, handle: Handle, data: Mapping[str, Any] | None) -> None: ...

    async def members(self, key: str, *, limit: int | None = ..., timeout: float | None = ...) -> Members: ...

    async def send_to(
        self, handle_id: str, data: str | bytes, *, timeout: float | None = ..., strict: bool = ...
    ) -> Delivered: ...

    async def close_handle(
        self,
        handle_id: str,
        *,
        code: int = ...,
        reason: str = ...,
        timeout: float | None = ...,
        strict: bool = ...,
    ) -> Delivered: ...

    async def broadcast(
        self, data: str | bytes, *, exclude: Handle | str | None = ..., strict: bool = ...
    ) -> SendReport: ...

    def local_count(self, key: str) -> int: ...

    def note_refused(self, reason: str) -> None: ...

    async def close_local(self, *, code: int = ..., reason: str = ...) -> int: ...
