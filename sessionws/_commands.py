"""The cluster verbs' work: the local part at once, the remote part sent, answers awaited.

Each verb of the registry checks its arguments and that the registry runs, then comes
here: sockets on this node are handled before anything is sent; the remote part goes
to the broker (or waits in the outbox); with ``confirm=True`` (and for ``count`` and
``members``), the answers of every live node are awaited within the timeout.
"""

from __future__ import annotations

from typing import Literal

import anyio

from sessionws._errors import TransportError
from sessionws._handles import Completion, Handle
from sessionws._membership import Presence
from sessionws._node import Node
from sessionws._outbound import Outbound, Outgoing
from sessionws._queries import Query, decode_members, encode_members
from sessionws._registration import check_key
from sessionws._reports import CloseReport, Count, Delivered, Member, Members, SendReport
from sessionws._wire import Command

__all__ = ("ClusterCommands",)


class ClusterCommands:
    """``close_all``, ``revoke``, ``send_all``, ``broadcast``, ``send_to``,
    ``close_handle``, ``count``, ``members`` and ``is_revoked``, once checked."""

    def __init__(self, node: Node, outbound: Outbound, presence: Presence) -> None:
        self._node = node
        self._names = node.names
        self._table = node.table
        self._hashes = node.table.by_hash
        self._delivery = node.delivery
        self._outbound = outbound
        self._presence = presence
        self._queries = node.queries
        self._revocations = node.revocations
        self._confirm_timeout = node.options.confirm_timeout

    async def is_revoked(self, key: str) -> bool:
        key_hash = self._names.key_hash(check_key(key))
        if self._revocations.in_force(key_hash) is not None:
            return True
        if not self._node.connected:
            return False
        state = self._hashes.get(key_hash)
        if state is not None and state.ready and state.handles:
            return False
        try:
            markers = await self._node.read_markers([key_hash])
        except TransportError:
            return False
        revoke = markers[key_hash].revoke
        if revoke is None:
            return False
        self._revocations.remember_marker(key_hash, revoke.expires, revoke.code, revoke.reason)
        return True

    async def close(
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
        key_hash = self._names.key_hash(check_key(key))
        exclude_id = exclude.id if isinstance(exclude, Handle) else (exclude or "")
        if op == "revoke":
            self._revocations.remember(key_hash, ttl, code, reason)
        state = self._hashes.get(key_hash)
        completion = Completion() if confirm else None
        closed_here = self._delivery.close_key(state, code, reason, exclude_id, completion)
        outgoing = Outgoing(op, key_hash, code, reason, exclude_id, ttl)
        outbound = self._outbound
        if not self._node.connected or outbound.outbox:
            # Behind commands still waiting, in order (or the broker is away).
            outbound.queue(outgoing, strict)
            return CloseReport(closed_here, queued=True)
        query = await self._presence.new_query(timeout) if confirm else None
        try:
            await outbound.send(outgoing, query)
        except TransportError:
            outbound.queue(outgoing, strict)
            return CloseReport(closed_here, queued=True)
        if query is None or completion is None:
            return CloseReport(closed_here)
        completion.seal()
        with anyio.move_on_after(self._confirm_timeout if timeout is None else timeout):
            await query.done.wait()
            await completion.done.wait()
        complete = query.complete and completion.remaining <= 0
        answered = dict(query.answers)
        return CloseReport(
            completion.closed, nodes=answered, missing=query.missing, confirmed=True, complete=complete
        )

    async def send_all(
        self,
        key: str,
        data: str | bytes,
        exclude: Handle | str | None,
        strict: bool,
        confirm: bool,
        timeout: float | None,
    ) -> SendReport:
        key_hash = self._names.key_hash(check_key(key))
        exclude_id = exclude.id if isinstance(exclude, Handle) else (exclude or "")
        data = self._outbound.check_payload(data, exclude=exclude_id)
        state = self._hashes.get(key_hash)
        sent_here = self._delivery.send_many(state.handles, data, exclude_id) if state is not None else 0
        outgoing = Outgoing("send", key_hash, exclude=exclude_id, data=data)
        query = await self._presence.new_query(timeout) if confirm else None
        if not await self._outbound.send_or_queue(outgoing, strict, query):
            return SendReport(sent_here, queued=True)
        if query is None:
            return SendReport(sent_here)
        with anyio.move_on_after(self._confirm_timeout if timeout is None else timeout):
            await query.done.wait()
        answers, missing = dict(query.answers), query.missing
        return SendReport(sent_here, nodes=answers, missing=missing, confirmed=True, complete=query.complete)

    async def broadcast(self, data: str | bytes, exclude: Handle | str | None, strict: bool) -> SendReport:
        exclude_id = exclude.id if isinstance(exclude, Handle) else (exclude or "")
        data = self._outbound.check_payload(data, exclude=exclude_id)
        sent_here = self._delivery.send_many(self._table.all_handles(), data, exclude_id)
        outgoing = Outgoing("broadcast", "", exclude=exclude_id, data=data)
        sent = await self._outbound.send_or_queue(outgoing, strict)
        return SendReport(sent_here, queued=not sent)

    async def direct(
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
        """``send_to`` / ``close_handle``: one socket, by its handle id."""
        node, dot, number = handle_id.rpartition(".") if isinstance(handle_id, str) else ("", "", "")
        if not dot or not node or not number.isdigit():
            raise ValueError(f"{handle_id!r} is not a handle id (they look like '<node id>.<number>')")
        if node == self._node.node_id:
            handle = self._table.find_handle(handle_id)
            if handle is not None:
                if op == "send_to" and data is not None:
                    self._delivery.send(handle, data)
                else:
                    self._delivery.close(handle, code, reason)
            return Delivered(handle is not None, node)
        outgoing = Outgoing(op, "", code=code, reason=reason, data=data, target=handle_id)
        query = Query(frozenset({node}))
        if not await self._outbound.send_or_queue(outgoing, strict, query):
            return Delivered(False, node, complete=False, queued=True)
        with anyio.move_on_after(self._confirm_timeout if timeout is None else timeout):
            await query.done.wait()
        answered = query.answers.get(node)
        return Delivered(bool(answered), node, complete=answered is not None)

    async def members(self, key: str, limit: int | None, timeout: float | None) -> Members:
        key_hash = self._names.key_hash(check_key(key))
        here = encode_members(self._hashes.get(key_hash), limit, self._node.transport.max_payload)
        listings = {self._node.node_id: here}
        complete = False
        missing: frozenset[str] = frozenset()
        query = None
        if self._node.connected:
            query = await self._ask("members", key_hash, timeout, count=limit or 0)
        if query is not None:
            complete, missing = query.complete, query.missing
            for node, count in query.answers.items():
                listings[node] = (count, query.details.get(node, "[]"))
        members: list[Member] = []
        truncated = False
        for node, (count, listing) in listings.items():
            entries = decode_members(listing)
            truncated = truncated or len(entries) < count
            members.extend(Member(entry[0], node, entry[1], entry[2]) for entry in entries)
        return Members(tuple(members), complete, missing, truncated)

    async def count(self, key: str, timeout: float | None) -> Count:
        key_hash = self._names.key_hash(check_key(key))
        local = self._table.local_count(key)
        if not self._node.connected:
            return Count(local, False)
        query = await self._ask("count", key_hash, timeout)
        if query is None:
            return Count(local, False)
        return Count(local + sum(query.answers.values()), query.complete)

    async def _ask(
        self, op: Literal["count", "members"], key_hash: str, timeout: float | None, count: int = 0
    ) -> Query | None:
        """Ask every node about a key on the control channel, and wait for the answers;
        ``None`` when the broker did not take the question."""
        node = self._node
        query = await self._presence.new_query(timeout)
        token = self._queries.open(query, node.tasks_or_raise())
        command = Command(op, node.node_id, target=key_hash, query=token, count=count)
        try:
            receivers = await self._outbound.publish(self._names.control, command)
        except TransportError:
            return None
        query.expect_receivers(receivers)
        with anyio.move_on_after(self._confirm_timeout if timeout is None else timeout):
            await query.done.wait()
        return query
