"""An in-process broker: several registries on one hub behave as a cluster.

``MemoryTransport`` is what ``memory://`` gives a lone process, and what the tests use
to run the whole cluster contract inside one event loop. It is faithful where it
matters: delivery is asynchronous (through each node's inbox), ordered per
publisher, lost while a node is cut off, and markers expire. Fault injection
(:meth:`MemoryTransport.cut`, :meth:`MemoryTransport.restore`,
:meth:`MemoryHub.lose_data`) lets tests drive the reconnect and reconcile paths.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import ClassVar
from urllib.parse import parse_qsl

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sessionws._errors import TransportError
from sessionws._protocols import Marker, TransportHandler
from sessionws._tasks import background_tasks

__all__ = ("MemoryHub", "MemoryTransport")

# The options a memory:// URL's query may set, and their types.
_URL_OPTIONS = {"max_payload": int, "interest_delay": float}

logger = logging.getLogger("sessionws")

_DEFAULT_MAX_PAYLOAD = 1 << 20
#: Room for a sequence spliced into a payload (a 64-bit integer has at most 20 digits).
_SEQUENCE_DIGITS = 20


def _check_ttl(ttl: float) -> None:
    if ttl <= 0:
        raise ValueError("a marker's ttl must be positive")


class MemoryHub:
    """The shared broker state: channels, one sequence, markers with TTL."""

    _named: ClassVar[dict[str, MemoryHub]] = {}

    def __init__(self) -> None:
        self._subscribers: dict[str, set[MemoryTransport]] = {}
        self._sequence = 0
        self._markers: dict[str, tuple[int, bytes, float]] = {}
        self._nodes: set[MemoryTransport] = set()
        self.identity = secrets.token_hex(8)

    @classmethod
    def named(cls, name: str) -> MemoryHub:
        """The process-wide hub called ``name`` (``memory://name`` URLs share it)."""
        hub = cls._named.get(name)
        if hub is None:
            hub = cls._named[name] = cls()
        return hub

    def lose_data(self) -> None:
        """Forget markers and the sequence, as a broker restarted without persistence.

        Connected nodes see a connection drop and return to a broker with a new
        identity, as they would after a real restart.
        """
        self._markers.clear()
        self._sequence = 0
        self.identity = secrets.token_hex(8)
        for node in list(self._nodes):
            if node.connected:
                node.cut()
                node.restore()

    def receivers(self, channel: str) -> int:
        """How many connected nodes are subscribed to ``channel``."""
        return len(self._subscribers.get(channel, ()))

    def _attach(self, node: MemoryTransport, channels: Sequence[str]) -> None:
        for channel in channels:
            self._subscribers.setdefault(channel, set()).add(node)

    def _detach(self, node: MemoryTransport, channels: Sequence[str]) -> None:
        for channel in channels:
            subscribers = self._subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(node)
                if not subscribers:
                    del self._subscribers[channel]

    def _publish(self, channel: str, payload: bytes) -> int:
        subscribers = self._subscribers.get(channel, ())
        for node in subscribers:
            node._deliver(channel, payload)
        return len(subscribers)

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def _mark(self, key: str, value: bytes, ttl: float) -> int:
        sequence = self._next_sequence()
        self._markers[key] = (sequence, value, time.monotonic() + ttl)
        return sequence

    def _read(self, key: str) -> Marker | None:
        stored = self._markers.get(key)
        if stored is None:
            return None
        sequence, value, expires = stored
        if expires <= time.monotonic():
            del self._markers[key]
            return None
        return Marker(sequence, value)


class MemoryTransport:
    """A node's connection to a :class:`MemoryHub`."""

    def __init__(
        self,
        hub: MemoryHub | None = None,
        *,
        max_payload: int = _DEFAULT_MAX_PAYLOAD,
        interest_delay: float = 0.0,
    ) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        self.max_payload = max_payload
        # ``interest_delay`` imitates a broker cluster that spreads interest
        # asynchronously: a confirmed subscription starts receiving only later. The
        # registry then reads markers again after ``interest_grace``.
        self.interest_delay = interest_delay
        self.interest_grace = 2 * interest_delay
        self._wanted: set[str] = set()
        self._connected = False
        self._open = False
        self._handler: TransportHandler | None = None
        self._send: MemoryObjectSendStream[tuple[str, bytes] | bool] | None = None
        self._tasks: TaskGroup | None = None
        self._refusals = 0

    @classmethod
    def from_url(cls, url: str, **options: float) -> MemoryTransport:
        """``memory://`` makes a private hub; ``memory://NAME`` joins the hub NAME.

        ``max_payload`` and ``interest_delay`` may be given in the query
        (``memory://app?max_payload=4096``) or as keywords (which win); any other
        name raises :class:`ValueError`.
        """
        base, _, query = url.partition("?")
        name = base.removeprefix("memory://").strip("/")
        settings: dict[str, float] = {}
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise ValueError(f"the query of {url!r} is malformed; write it as ?name=value") from None
        for key, text in [*pairs, *((key, None) for key in options)]:
            convert = _URL_OPTIONS.get(key)
            if convert is None:
                raise ValueError(
                    f"unknown option {key!r} for a memory:// transport; its options are "
                    + ", ".join(sorted(_URL_OPTIONS))
                )
            if text is not None:
                try:
                    settings[key] = convert(text)
                except ValueError:
                    raise ValueError(f"option {key}={text!r} in {url!r} is not valid") from None
        settings.update(options)
        max_payload = int(settings.get("max_payload", _DEFAULT_MAX_PAYLOAD))
        interest_delay = float(settings.get("interest_delay", 0.0))
        return cls(
            MemoryHub.named(name) if name else None, max_payload=max_payload, interest_delay=interest_delay
        )

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def identity(self) -> str:
        return self.hub.identity

    def open(self, handler: TransportHandler) -> AbstractAsyncContextManager[None]:
        return self._run(handler)

    @asynccontextmanager
    async def _run(self, handler: TransportHandler) -> AsyncIterator[None]:
        if self._open:
            raise RuntimeError("this MemoryTransport is already open; make one per registry")
        send, receive = anyio.create_memory_object_stream[tuple[str, bytes] | bool](math.inf)
        self._handler, self._send = handler, send
        self._open = self._connected = True
        self.hub._nodes.add(self)
        try:
            async with background_tasks() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._read, receive, handler)
                yield
        finally:
            self.hub._nodes.discard(self)
            self.hub._detach(self, list(self._wanted))
            self._open = self._connected = False
            self._wanted.clear()
            send.close()

    async def _read(
        self,
        receive: MemoryObjectReceiveStream[tuple[str, bytes] | bool],
        handler: TransportHandler,
    ) -> None:
        # Connection state changes travel through the same inbox as messages, so the
        # handler sees them in the order a real socket would produce them.
        async with receive:
            async for item in receive:
                try:
                    if item is True:
                        handler.connection_restored()
                    elif item is False:
                        handler.connection_lost()
                    else:
                        handler.message_received(*item)
                except Exception:
                    # The reader must never die: a deaf node is worse than a logged bug.
                    logger.exception("the memory transport's handler failed")

    def _deliver(self, channel: str, payload: bytes) -> None:
        self._put((channel, payload))

    def _put(self, item: tuple[str, bytes] | bool) -> None:
        # A node shutting down has no reader any more: like a closed socket, it drops.
        if self._send is not None:
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._send.send_nowait(item)

    def _require_connection(self) -> None:
        if not self._open:
            raise RuntimeError("use the transport inside `async with transport.open(handler)`")
        if not self._connected:
            raise TransportError("the memory broker is unreachable (the node was cut off)")
        if self._refusals:
            self._refusals -= 1
            raise TransportError("the memory broker refused the command (fault injection)")

    # --- fault injection -------------------------------------------------------
    def cut(self) -> None:
        """Cut this node off the hub: its subscriptions vanish, its calls fail."""
        if self._connected:
            self._connected = False
            self.hub._detach(self, list(self._wanted))
            self._put(False)

    def refuse(self, commands: int) -> None:
        """Refuse the next ``commands`` calls while connected, as a broker that says
        "connected" but is not ready (a Redis Cluster electing, JetStream choosing a leader)."""
        self._refusals = commands

    def restore(self) -> None:
        """Reconnect: resubscribe every wanted channel, then signal the handler."""
        if self._open and not self._connected:
            self._connected = True
            self.hub._attach(self, list(self._wanted))
            self._put(True)

    # --- Transport --------------------------------------------------------------
    def _check_payload(self, size: int) -> None:
        if size > self.max_payload:
            raise ValueError(f"payload of {size} bytes exceeds the broker limit of {self.max_payload}")

    async def _broker_step(self) -> None:
        """One call to the broker: it must be reachable before and after the checkpoint."""
        self._require_connection()
        await anyio.lowlevel.checkpoint()
        self._require_connection()

    async def subscribe(self, channels: Sequence[str]) -> None:
        self._wanted.update(channels)
        self._require_connection()
        await anyio.lowlevel.checkpoint()
        if self.interest_delay and self._tasks is not None:
            self._tasks.start_soon(self._attach_later, list(channels))
        else:
            self.hub._attach(self, channels)

    async def _attach_later(self, channels: list[str]) -> None:
        await anyio.sleep(self.interest_delay)
        if self._connected:
            self.hub._attach(self, [channel for channel in channels if channel in self._wanted])

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        self._wanted.difference_update(channels)
        if self._connected:
            self.hub._detach(self, channels)
        await anyio.lowlevel.checkpoint()

    async def publish(self, channel: str, payload: bytes) -> int | None:
        self._check_payload(len(payload))
        await self._broker_step()
        return self.hub._publish(channel, payload)

    async def current_sequence(self) -> int:
        self._require_connection()
        await anyio.lowlevel.checkpoint()
        return self.hub._sequence

    async def next_sequence(self) -> int:
        await self._broker_step()
        return self.hub._next_sequence()

    async def mark(self, key: str, value: bytes, ttl: float) -> int:
        _check_ttl(ttl)
        await self._broker_step()
        return self.hub._mark(key, value, ttl)

    async def mark_and_publish(
        self, key: str, value: bytes, ttl: float, sequence: int, channel: str, payload: bytes
    ) -> int | None:
        """Set a marker taken with ``next_sequence`` (unless a newer one is there) and
        publish, in one step."""
        _check_ttl(ttl)
        self._check_payload(len(payload))
        await self._broker_step()
        current = self.hub._read(key)
        if current is None or current.sequence < sequence:
            self.hub._markers[key] = (sequence, value, time.monotonic() + ttl)
        return self.hub._publish(channel, payload)

    async def mark_and_publish_numbered(
        self, key: str, value: bytes, ttl: float, channel: str, head: bytes, tail: bytes
    ) -> tuple[int, int | None]:
        """Take a new sequence, set ``key``'s marker to it and publish ``head +
        b"<sequence>" + tail``, in one step; return the sequence and the receivers."""
        _check_ttl(ttl)
        self._check_payload(len(head) + len(tail) + _SEQUENCE_DIGITS)
        await self._broker_step()
        sequence = self.hub._next_sequence()
        self.hub._markers[key] = (sequence, value, time.monotonic() + ttl)
        return sequence, self.hub._publish(channel, head + str(sequence).encode() + tail)

    async def read_markers(self, keys: Sequence[str]) -> list[Marker | None]:
        await self._broker_step()
        return [self.hub._read(key) for key in keys]
