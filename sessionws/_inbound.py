"""Commands from other nodes: checked, then applied to this node's sockets, and answered.

Before a command acts, it must have come on a channel that allows it and name the key
of that channel (both signed), name the broker's current epoch, carry a sequence the
broker can have issued, and not be a replay. What fails a check is dropped and
counted (``dropped_by_reason``), never raised: the transport's listener keeps reading.
"""

from __future__ import annotations

import logging
import time

import anyio

from sessionws._codes import validate_close
from sessionws._errors import TransportError
from sessionws._handles import Completion
from sessionws._markers import CloseMarker
from sessionws._membership import Presence
from sessionws._node import Node
from sessionws._outbound import Outbound
from sessionws._queries import encode_members
from sessionws._wire import DIRECT_OPS, EFFECTFUL_OPS, Command, WireError

__all__ = ("Inbound",)

logger = logging.getLogger(__name__)

#: A command whose sequence is this far past the newest this node knows is checked
#: against the broker's counter before it is applied: one message must not push the
#: replay guard past what the broker can have issued.
SEQUENCE_LEAP = 10_000
#: Commands that may wait for one such check, and how long a check's answer is fresh.
FAR_AHEAD_WAITING = 1000
SEQUENCE_CHECK_FRESH = 1.0


class Inbound:
    """Dispatches the commands the transport hands to the registry."""

    def __init__(self, node: Node, outbound: Outbound, presence: Presence, handle_prefix: str) -> None:
        self._node = node
        self._table = node.table
        self._hashes = node.table.by_hash
        self._delivery = node.delivery
        self._outbound = outbound
        self._queries = node.queries
        self._presence = presence
        self._replay = node.replay
        self._revocations = node.revocations
        self._handle_prefix = handle_prefix
        self._accept_unbound = node.options.accept_unbound_commands
        self._far_ahead: list[tuple[str, Command]] | None = None
        self._sequence_checked_at = -SEQUENCE_CHECK_FRESH

    def message_received(self, channel: str, payload: bytes) -> None:
        node = self._node
        if node.own_origin in payload:
            return
        try:
            command = node.codec.decode(payload)
        except WireError as error:
            node.drop(error.reason, error.detail)
            return
        if command.origin == node.node_id:
            return
        node.stats["commands_received"] += 1
        self._dispatch_safely(channel, command)

    def _dispatch_safely(self, channel: str, command: Command) -> None:
        # An exception here is a bug, not a bad message (those are dropped before):
        # count it, log it (rate-limited like the drops), keep reading.
        try:
            self._dispatch(channel, command)
        except Exception as error:
            logger.debug("handling a %s command failed", command.op, exc_info=True)
            self._node.drop("internal", f"handling a {command.op} command failed: {error!r}")

    def _bound_key(self, channel: str, command: Command) -> str | None:
        """The key hash ``command`` may act on, from the channel it arrived on and what
        it names (both signed); ``None`` when it is dropped."""
        node = self._node
        on_channel = node.names.key_hash_of(channel)
        if on_channel is None:
            if channel != node.names.control or not command.target:
                node.drop("channel", f"a {command.op} command arrived on {channel}")
                return None
            if command.key and command.key != command.target:
                node.drop("channel", "a command names two keys")
                return None
            return command.target
        if (command.key or on_channel) != on_channel or command.target not in ("", on_channel):
            node.drop("channel", "a command for another key arrived on a key's channel")
            return None
        if not command.key and node.codec.signed and not self._accept_unbound:
            node.drop("unbound", "a signed command that does not name its key")
            return None
        return on_channel

    def _admit(self, channel: str, command: Command) -> bool:
        """The epoch, sequence and replay checks of an effectful command; a command far
        ahead waits for a check of the broker's counter (``False`` for now)."""
        node = self._node
        epoch = node.transport.identity
        if not command.epoch and node.codec.signed and not self._accept_unbound:
            node.drop("unbound", "a signed command that does not name its broker epoch")
            return False
        if command.epoch and epoch and command.epoch != epoch:
            node.drop("epoch", "a command issued in another broker epoch")
            return False
        if command.sequence <= 0:
            node.drop("malformed", "an effectful command without a sequence")
            return False
        if command.sequence > node.known_sequence + SEQUENCE_LEAP:
            self._check_far_ahead(channel, command)
            return False
        # Only a command that names the current epoch may start the guard afresh.
        if not self._replay.accept(command.origin, command.sequence, command.epoch or None):
            node.drop("replayed")
            return False
        node.note_sequence(command.sequence)
        return True

    def _dispatch(self, channel: str, command: Command) -> None:
        node = self._node
        op = command.op
        key_hash = ""
        if op == "broadcast":
            if channel != node.names.control:
                node.drop("channel", f"a broadcast arrived on {channel}")
                return
        elif op in DIRECT_OPS:
            if channel != node.inbox or not command.target.startswith(self._handle_prefix):
                node.drop("channel", f"a {op} command for another node arrived on {channel}")
                return
        elif op in EFFECTFUL_OPS or op in ("count", "members"):
            bound = self._bound_key(channel, command)
            if bound is None:
                return
            key_hash = bound
        if op in EFFECTFUL_OPS and not self._admit(channel, command):
            return
        if op in ("hello", "beat", "leave", "who"):
            self._presence.on_command(command)
            return
        if op == "reply":
            detail = command.data if isinstance(command.data, str) else None
            self._queries.answer(
                command.query, command.origin, command.count, observer=command.observer, detail=detail
            )
            return
        if op == "broadcast":
            if command.data is not None:
                self._delivery.send_many(self._table.all_handles(), command.data, command.exclude)
            return
        if op in DIRECT_OPS:
            self._on_direct(command)
            return
        state = self._hashes.get(key_hash)
        if op == "count":
            if command.query:
                count = sum(1 for handle in state.handles if not handle.closing) if state is not None else 0
                self._spawn_reply(command, count)
            return
        if op == "members":
            if command.query:
                count, listing = encode_members(state, command.count or None, node.transport.max_payload)
                node.tasks_or_raise().start_soon(self._reply, command, count, listing)
            return
        if op == "send":
            sent = 0
            if state is not None and command.data is not None:
                sent = self._delivery.send_many(state.handles, command.data, command.exclude)
            if command.query:
                self._spawn_reply(command, sent)
            return
        if not close_code_ok(command.code, command.reason):
            node.drop("malformed", f"close code {command.code} or its reason cannot be sent")
            return
        completion = Completion() if command.query else None
        if op == "revoke":
            ttl = command.ttl or self._revocations.default_ttl
            self._revocations.remember(key_hash, ttl, command.code, command.reason)
            if state is not None:
                for handle in list(state.handles):
                    self._delivery.close(handle, command.code, command.reason, completion)
        elif state is not None:
            close = CloseMarker(command.sequence, command.code, command.reason, command.exclude)
            self._delivery.close_before(state, close, completion)
        if completion is not None:
            completion.seal()
            node.tasks_or_raise().start_soon(self._reply_when_closed, command, completion)

    def _check_far_ahead(self, channel: str, command: Command) -> None:
        """A command far ahead of the newest sequence this node knows: apply it only
        once the broker's counter shows that sequence was issued (a node that was quiet
        for long is simply behind). One check at a time, for every command waiting on
        it; right after a check, a sequence still that far ahead cannot be genuine."""
        if self._far_ahead is None:
            if time.monotonic() - self._sequence_checked_at < SEQUENCE_CHECK_FRESH:
                self._node.drop(
                    "sequence", f"sequence {command.sequence} is far ahead of the broker's counter"
                )
                return
            self._far_ahead = [(channel, command)]
            self._node.tasks_or_raise().start_soon(self._check_sequences)
        elif len(self._far_ahead) < FAR_AHEAD_WAITING:
            self._far_ahead.append((channel, command))
        else:
            self._node.drop("sequence", "too many commands wait for a sequence check")

    async def _check_sequences(self) -> None:
        node = self._node
        current: int | None
        try:
            current = await node.transport.current_sequence()
        except TransportError:
            current = None
        waiting, self._far_ahead = self._far_ahead or [], None
        self._sequence_checked_at = time.monotonic()
        if current is not None:
            node.note_sequence(current)
        for channel, command in waiting:
            if current is None:
                node.drop("sequence", "could not check a sequence far ahead: the broker is unreachable")
            elif command.sequence > current:
                node.drop("sequence", f"sequence {command.sequence} is ahead of the broker's {current}")
            else:
                self._dispatch_safely(channel, command)

    def _on_direct(self, command: Command) -> None:
        handle = self._table.find_handle(command.target)
        if handle is not None:
            if command.op == "send_to" and command.data is not None:
                self._delivery.send(handle, command.data)
            elif command.op == "close_to":
                if not close_code_ok(command.code, command.reason):
                    self._node.drop("malformed", f"close code {command.code} or its reason cannot be sent")
                    return
                self._delivery.close(handle, command.code, command.reason)
        if command.query:
            self._spawn_reply(command, 0 if handle is None else 1)

    # ---------------------------------------------------------------- replies
    def _spawn_reply(self, command: Command, count: int) -> None:
        self._node.tasks_or_raise().start_soon(self._reply, command, count)

    async def _reply_when_closed(self, command: Command, completion: Completion) -> None:
        with anyio.move_on_after(self._delivery.close_timeout + 1.0):
            await completion.done.wait()
        await self._reply(command, completion.closed)

    async def _reply(self, command: Command, count: int, detail: str | None = None) -> None:
        node = self._node
        reply = Command(
            "reply", node.node_id, query=command.query, count=count, observer=node.publish_only, data=detail
        )
        try:
            await self._outbound.publish(node.names.inbox(command.origin), reply)
        except TransportError:
            logger.info("could not answer %s from %s: broker unreachable", command.op, command.origin)


def close_code_ok(code: int, reason: str) -> bool:
    try:
        validate_close(code, reason)
    except (TypeError, ValueError):
        return False
    return True
