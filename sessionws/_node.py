"""What every part of one registry shares: who the node is, its broker, its counters.

The registry's parts (outbound commands, inbound dispatch, membership, recovery...)
each hold this one object: it says whether the broker is with the node, the newest
namespace sequence the node knows, the task group that owns their tasks, and where
events and dropped commands are reported; it holds what they all work on (the key
table, the delivery to sockets, the revoked keys, the open questions, the replay guard).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sessionws._delivery import Delivery
from sessionws._droplog import DropLog
from sessionws._errors import NotConfiguredError
from sessionws._handles import Handle
from sessionws._keys import KeyTable
from sessionws._markers import KeyMarkers, read_key_markers
from sessionws._membership import ReplayGuard
from sessionws._options import RegistryOptions
from sessionws._protocols import Transport
from sessionws._queries import Queries
from sessionws._reports import Event
from sessionws._revocations import Revocations
from sessionws._wire import DropReason, Names, WireCodec

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ("STAT_NAMES", "Node")

logger = logging.getLogger(__name__)

#: The counters of ``stats()`` that the registry's parts add to.
STAT_NAMES = (
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
)


def _nothing() -> None:
    pass


class Node:
    """One registry's identity, broker connection state, counters and task group."""

    def __init__(
        self, transport: Transport, options: RegistryOptions, *, forget: Callable[[Handle], Awaitable[None]]
    ) -> None:
        self.transport = transport
        self.options = options
        self.names = Names(options.namespace, options.name_secret)
        self.node_id = options.node_id or secrets.token_hex(6)
        self.inbox = self.names.inbox(self.node_id)
        # The origin field as it appears in this node's own commands. A JSON object of
        # sessionws has one level and escapes quotes inside strings, so these bytes occur
        # in a payload only as its origin: this node's own commands (which come back on
        # the channels it holds) are dropped without decoding.
        self.own_origin = b'"o":' + json.dumps(self.node_id, ensure_ascii=False).encode("utf-8")
        self.publish_only = options.publish_only
        self.codec = WireCodec(options.signing_keys, max_size=transport.max_payload)
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.drops = DropLog(logger)
        self.tasks: TaskGroup | None = None
        #: Called when ``connected`` changes (the registry's short path depends on it).
        self.on_connected_change: Callable[[], None] = _nothing
        self._connected = False
        #: When the broker was lost (``None`` while connected).
        self.lost_at: float | None = None
        #: The newest namespace sequence this node has seen.
        self.known_sequence = 0
        self._on_event = options.on_event
        # What every part works on: the keys held, delivery to the sockets, the revoked
        # keys, the open questions to other nodes, the commands already applied.
        self.delivery = Delivery(
            queue_size=options.queue_size,
            close_timeout=options.close_timeout,
            send_timeout=options.send_timeout,
            forget=forget,
            emit=self.emit,
            stats=self.stats,
        )
        check_marker = self.check_marker if self.codec.signed else None
        self.table = KeyTable(
            transport,
            self.names,
            linger=options.linger,
            note_sequence=self.note_sequence,
            check_marker=check_marker,
        )
        self.revocations = Revocations(self.table.by_hash, options.revoke_ttl)
        self.queries = Queries(keep=max(options.confirm_timeout, 60.0))
        self.replay = ReplayGuard()

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        self._connected = value
        self.on_connected_change()

    def broker_lost(self) -> None:
        self.connected = False
        self.lost_at = time.monotonic()

    def broker_back(self) -> None:
        self.connected = True
        self.lost_at = None

    def note_sequence(self, sequence: int) -> None:
        if sequence > self.known_sequence:
            self.known_sequence = sequence

    def tasks_or_raise(self) -> TaskGroup:
        if self.tasks is None:
            raise NotConfiguredError("the registry is not running")
        return self.tasks

    def emit(self, name: str, **detail: object) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(Event(name, detail))
        except Exception:
            logger.exception("the on_event callback failed")

    def drop(self, reason: DropReason, detail: str = "") -> None:
        self.stats["commands_dropped"] += 1
        self.drops.drop(reason, detail)
        self.emit("command_dropped", reason=reason)

    def check_marker(self, name: str, value: bytes) -> bytes | None:
        """A marker read back, if its signature holds (signing on); a forged one is
        dropped and counted, and counts as absent."""
        body = self.codec.verify_marker(name, self.transport.identity, value)
        if body is None:
            self.drop("forged", "a marker whose signature does not verify")
        return body

    async def read_markers(self, key_hashes: list[str]) -> dict[str, KeyMarkers]:
        check = self.check_marker if self.codec.signed else None
        return await read_key_markers(self.transport, self.names, key_hashes, check)
