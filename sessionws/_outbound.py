"""Commands this node sends: their markers, sequences and channels, and the outbox.

A close or revoke writes its marker, then publishes its command, with a namespace
sequence taken from the broker. The transport's fastest way to do that is chosen once,
when the registry starts: one broker step that takes the sequence, writes the marker
and publishes (``mark_and_publish_numbered``), the sequence first and then one step for
the rest (``mark_and_publish``), or the marker (which gives the sequence) and then the
publish. A command the broker does not take waits in the outbox, sent oldest first by
one task as soon as the broker takes it again.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

import anyio

from sessionws._errors import BrokerUnavailableError, TransportError
from sessionws._markers import CloseMarker, encode_marker
from sessionws._node import Node
from sessionws._queries import Query
from sessionws._wire import DIRECT_OPS, Command

__all__ = ("Outbound", "Outgoing")

logger = logging.getLogger(__name__)

#: The outbox retries with a jittered, capped exponential backoff.
OUTBOX_MIN_DELAY = 0.05
OUTBOX_MAX_DELAY = 2.0

#: A marker to write: its name, value and time to live.
_Marker = tuple[str, bytes, float]


@dataclass(slots=True)
class Outgoing:
    """The remote part of a command (kept in the outbox while the broker is away)."""

    op: Literal["close", "revoke", "send", "broadcast", "send_to", "close_to"]
    key_hash: str
    code: int = 0
    reason: str = ""
    exclude: str = ""
    ttl: float = 0.0
    data: str | bytes | None = None
    #: ``send_to`` / ``close_to``: the handle id (its node's inbox is the channel).
    target: str = ""


class Outbound:
    """Publishes this node's commands, or queues them in the outbox."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._queries = node.queries
        self._delivery = node.delivery
        self._by_hash = node.table.by_hash
        self._outbox_size = node.options.outbox_size
        self._marker_ttl = node.options.marker_ttl
        self.outbox: deque[Outgoing] = deque()
        #: Wakes the outbox's sender: something was queued, or the broker came back.
        self._kick = anyio.Event()
        self._send_marked: Callable[[_Marker, str, Command, Outgoing], Awaitable[int | None]]
        self._send_marked = self._mark_then_publish
        self.choose_path()

    def choose_path(self) -> None:
        """Choose the transport's fastest way to write a marker and publish its command
        (the registry calls this again at start, once the transport is open)."""
        transport = self.node.transport
        # A signed command cannot be numbered by the broker: its signature covers the sequence.
        if getattr(transport, "mark_and_publish_numbered", None) is not None and not self.node.codec.signed:
            self._send_marked = self._mark_and_publish_numbered
        elif getattr(transport, "mark_and_publish", None) is not None:
            self._send_marked = self._mark_and_publish
        else:
            self._send_marked = self._mark_then_publish

    def wake(self) -> None:
        """The broker is back: try the outbox now."""
        self._kick.set()

    async def publish(self, channel: str, command: Command) -> int | None:
        node = self.node
        receivers = await node.transport.publish(channel, node.codec.encode(command))
        node.stats["commands_sent"] += 1
        return receivers

    async def send(self, outgoing: Outgoing, query: Query | None = None) -> None:
        """Write the marker (closes, revokes), then publish the command — in one atomic
        step where the transport can (``mark_and_publish``)."""
        node = self.node
        names = node.names
        op, key_hash = outgoing.op, outgoing.key_hash
        on_control = query is not None or op == "broadcast"
        if op in DIRECT_OPS:
            channel = names.inbox(outgoing.target.rpartition(".")[0])
        else:
            channel = names.control if on_control else names.channel(key_hash)
        marker: _Marker | None = None
        if op == "close":
            name = names.partial_close_marker if outgoing.exclude else names.close_marker
            value = encode_marker(outgoing.code, outgoing.reason, outgoing.exclude)
            marker = (name(key_hash), self._sign_marker(name(key_hash), value), self._marker_ttl)
        elif op == "revoke":
            value = encode_marker(outgoing.code, outgoing.reason, expires=time.time() + outgoing.ttl)
            name = names.revoke_marker
            marker = (name(key_hash), self._sign_marker(name(key_hash), value), outgoing.ttl)
        command = Command(
            op,
            node.node_id,
            target=outgoing.target or (key_hash if on_control else ""),
            key=key_hash if not on_control else "",
            epoch=node.transport.identity,
            code=outgoing.code,
            reason=outgoing.reason,
            exclude=outgoing.exclude,
            ttl=outgoing.ttl,
            data=outgoing.data,
            query=self._queries.open(query, node.tasks_or_raise()) if query is not None else "",
        )
        if marker is not None:
            receivers = await self._send_marked(marker, channel, command, outgoing)
        else:
            sequence = await node.transport.next_sequence()
            self._sequence_taken(outgoing, sequence)
            receivers = await self.publish(channel, replace(command, sequence=sequence))
        if query is not None:
            query.expect_receivers(receivers)

    async def _mark_and_publish_numbered(
        self, marker: _Marker, channel: str, command: Command, outgoing: Outgoing
    ) -> int | None:
        # One broker step: the transport takes the sequence, writes the marker and
        # publishes the command with the sequence spliced in.
        halves = self.node.codec.encode_unnumbered(command)
        if halves is None:  # signing on (then this path is not chosen)
            return await self._mark_and_publish(marker, channel, command, outgoing)
        head, tail = halves
        sequence, receivers = await self.node.transport.mark_and_publish_numbered(  # type: ignore[attr-defined]
            *marker, channel, head, tail
        )
        self.node.stats["commands_sent"] += 1
        self._sequence_taken(outgoing, sequence)
        return receivers  # type: ignore[no-any-return]

    async def _mark_and_publish(
        self, marker: _Marker, channel: str, command: Command, outgoing: Outgoing
    ) -> int | None:
        node = self.node
        sequence = await node.transport.next_sequence()
        self._sequence_taken(outgoing, sequence)
        payload = node.codec.encode(replace(command, sequence=sequence))
        receivers = await node.transport.mark_and_publish(*marker, sequence, channel, payload)  # type: ignore[attr-defined]
        node.stats["commands_sent"] += 1
        return receivers  # type: ignore[no-any-return]

    async def _mark_then_publish(
        self, marker: _Marker, channel: str, command: Command, outgoing: Outgoing
    ) -> int | None:
        sequence = await self.node.transport.mark(*marker)
        self._sequence_taken(outgoing, sequence)
        return await self.publish(channel, replace(command, sequence=sequence))

    def _sequence_taken(self, outgoing: Outgoing, sequence: int) -> None:
        """This node's close or revoke got its sequence. A socket registered here while
        the broker was taking it registered at an older one: the close reaches it too
        (the local sockets present at the call were closed at once)."""
        if outgoing.op == "close" and (state := self._by_hash.get(outgoing.key_hash)) is not None:
            close = CloseMarker(sequence, outgoing.code, outgoing.reason, outgoing.exclude)
            self._delivery.close_before(state, close)
        self.node.note_sequence(sequence)

    def _sign_marker(self, name: str, value: bytes) -> bytes:
        return self.node.codec.sign_marker(name, self.node.transport.identity, value)

    # ---------------------------------------------------------------- the outbox
    def queue(self, outgoing: Outgoing, strict: bool) -> None:
        if strict:
            raise BrokerUnavailableError(
                "the broker is unreachable: local sockets were handled, the other nodes were not reached"
            )
        if len(self.outbox) >= self._outbox_size:
            raise BrokerUnavailableError(
                f"the broker is unreachable and the outbox is full ({self._outbox_size} commands); "
                "raise outbox_size or restore the broker"
            )
        self.outbox.append(outgoing)
        self._kick.set()
        if len(self.outbox) == 1:
            logger.warning("the broker did not take a %s; it waits in the outbox", outgoing.op)
        self.node.emit("outbox_queued", op=outgoing.op, depth=len(self.outbox))

    async def send_or_queue(self, outgoing: Outgoing, strict: bool, query: Query | None = None) -> bool:
        """Send ``outgoing``, or queue it; ``True`` when it reached the broker now."""
        if not self.node.connected or self.outbox:
            # Behind commands still waiting, in order (or the broker is away).
            self.queue(outgoing, strict)
            return False
        try:
            await self.send(outgoing, query)
        except TransportError:
            self.queue(outgoing, strict)
            return False
        return True

    def check_payload(self, data: object, exclude: str = "") -> str | bytes:
        if not isinstance(data, (str, bytes)):
            raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
        node = self.node
        probe = Command(
            "send", node.node_id, sequence=2**62, exclude=exclude, data=data, key="0" * 32, query="0" * 16
        )
        size = len(node.codec.encode(replace(probe, epoch=node.transport.identity or "0" * 32)))
        if size > node.transport.max_payload:
            raise ValueError(
                f"this message needs {size} bytes on the wire; the broker allows "
                f"{node.transport.max_payload}. Send less, or send a reference the clients fetch."
            )
        return data

    async def run_outbox(self) -> None:
        """Send what waits in the outbox, oldest first, as soon as the broker takes it.

        It needs no reconnect event: a broker that froze longer than the command
        timeout, or a client pool that was full, never drops the connection, and the
        outbox is retried while the node still counts as connected. After a real drop
        it waits for the reconnect's reconcile, which tells it the broker's epoch: a
        command sent before would name the old one (and after a data loss its sequence
        would be taken for a replay). Between tries it backs off (jittered, capped); a
        restored connection or a newly queued command wakes it at once.
        """
        delay = OUTBOX_MIN_DELAY
        node, outbox = self.node, self.outbox
        while True:
            if not outbox or not node.connected:
                if not outbox:
                    delay = OUTBOX_MIN_DELAY
                await self._kick.wait()
                self._kick = anyio.Event()
                continue
            outgoing = outbox[0]
            try:
                await self.send(outgoing)
            except TransportError as error:
                logger.info("the outbox (%d waiting) is not through yet: %s", len(outbox), error)
                self._kick = anyio.Event()
                with anyio.move_on_after(random.uniform(delay / 2, delay)):
                    await self._kick.wait()
                delay = min(delay * 2, OUTBOX_MAX_DELAY)
                continue
            outbox.popleft()
            node.stats["outbox_sent"] += 1
            node.emit("outbox_sent", op=outgoing.op, depth=len(outbox))
            if not outbox:
                logger.warning("the outbox is sent; every command issued here reached the broker")
