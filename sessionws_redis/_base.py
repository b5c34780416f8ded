"""What the standalone and the cluster transports share: everything but their connections.

Both hold a redis-py client whose commands are bounded by ``command_timeout``, keep the
sequence and the markers with the same scripts (:mod:`sessionws_redis._markers`),
publish with one command, and open the same way: one handler at a time, the client
closed at the end when the transport built it. A subclass says how it connects
(:meth:`RedisTransportBase._connected`), what it forgets when closed, and which
publish command and errors are its own; the standalone transport keeps one pub/sub
link, the cluster transport one per primary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Generic, TypeVar

import anyio
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from sessionws.transport import Marker, TransportHandler
from sessionws_redis._errors import UNREACHABLE_ERRORS, broker_errors
from sessionws_redis._link import PubSubLink, notify
from sessionws_redis._markers import Markers
from sessionws_redis._options import TransportOptions, bounded

__all__ = ("NOT_OPEN", "RedisTransportBase")

NOT_OPEN = "use the transport inside `async with transport.open(handler)`"

ClientT = TypeVar("ClientT", Redis, RedisCluster)


class RedisTransportBase(Generic[ClientT]):
    """The calls and the lifetime the Redis transports share (see the module)."""

    #: ``PUBLISH``, or ``SPUBLISH`` where pub/sub is sharded.
    publish_command: ClassVar[str] = "PUBLISH"
    #: The errors that mean "the broker is unreachable" (raised as ``TransportError``).
    unreachable_errors: ClassVar[tuple[type[Exception], ...]] = UNREACHABLE_ERRORS

    max_payload: int

    def __init__(self, client: ClientT, *, close_client: bool, options: Mapping[str, Any]) -> None:
        self._options = TransportOptions.from_keywords(options)
        self.max_payload = self._options.max_payload
        self._client: ClientT = client
        self._close_client = close_client
        self._command = bounded(client.execute_command, self._options.command_timeout)
        self._markers = Markers(self._command, self._options)
        self._handler: TransportHandler | None = None
        self._lost = False

    # --- lifetime -------------------------------------------------------------------
    def open(self, handler: TransportHandler) -> AbstractAsyncContextManager[None]:
        """Connect (trying for up to ``open_timeout``) and keep the listeners running."""
        return self._run(handler)

    @asynccontextmanager
    async def _run(self, handler: TransportHandler) -> AsyncIterator[None]:
        if self._handler is not None:
            raise RuntimeError(f"this {type(self).__name__} is already open; make one per registry")
        self._handler = handler
        try:
            async with self._connected():
                yield
        finally:
            self._handler = None
            self._lost = False
            self._forget_connections()
            if self._close_client:
                with anyio.CancelScope(shield=True):
                    await self._client.aclose()

    def _connected(self) -> AbstractAsyncContextManager[None]:
        """Connect, and keep the pub/sub connections up while the context is open."""
        raise NotImplementedError

    def _forget_connections(self) -> None:
        """Drop what the last ``open()`` left: links, wanted channels."""
        raise NotImplementedError

    def _is_open(self) -> bool:
        raise NotImplementedError

    def _require_open(self) -> None:
        if not self._is_open():
            raise RuntimeError(NOT_OPEN)

    # --- LinkOwner, the parts alike ---------------------------------------------------
    def _mark_lost(self) -> None:
        if not self._lost and self._handler is not None:
            self._lost = True
            notify(self._handler.connection_lost)

    def link_down(self, link: PubSubLink) -> None:
        self._mark_lost()

    def message_received(self, channel: str, payload: bytes) -> None:
        if self._handler is not None:
            self._handler.message_received(channel, payload)

    # --- Transport: publish and the marker store ----------------------------------------
    async def publish(self, channel: str, payload: bytes) -> int | None:
        """``PUBLISH`` (``SPUBLISH`` on a cluster: one shard handles it); returns how many
        connections (nodes) received it."""
        self._options.check_payload(payload)
        self._require_open()
        with broker_errors(self.publish_command, self.unreachable_errors):
            return int(await self._command(self.publish_command, channel, bytes(payload)))

    async def current_sequence(self) -> int:
        """The newest sequence taken (0 when none was, or Redis lost its data)."""
        self._require_open()
        with broker_errors("GET", self.unreachable_errors):
            return await self._markers.current_sequence()

    async def next_sequence(self) -> int:
        """Take a new sequence number (``INCR``)."""
        self._require_open()
        with broker_errors("INCR", self.unreachable_errors):
            return await self._markers.next_sequence()

    async def mark(self, key: str, value: bytes, ttl: float) -> int:
        """Store ``value`` under ``key`` for ``ttl`` seconds with a new sequence, atomically."""
        self._require_open()
        with broker_errors("mark", self.unreachable_errors):
            return await self._markers.mark(key, value, ttl)

    async def read_markers(self, keys: Sequence[str]) -> list[Marker | None]:
        """The markers of ``keys`` (``None`` where missing or expired), batched with ``MGET``
        (on a cluster they share one slot)."""
        self._require_open()
        with broker_errors("MGET", self.unreachable_errors):
            return await self._markers.read_markers(keys)
