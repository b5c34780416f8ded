"""The verbs of ``SessionRegistry``: what it answers to once running.

Each verb checks its arguments and that the registry runs, then delegates: the socket
verbs to :class:`~sessionws._registration.Registrations`, the cluster verbs to
:class:`~sessionws._commands.ClusterCommands`, the local queries to the key table and
the membership; the transport's callbacks to inbound dispatch and recovery. The facade,
``sessionws._registry``, owns the parts and their lifetime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import anyio.abc

from sessionws._codes import CLOSE_DEFAULT, CLOSE_REVOKED, CLOSE_SHUTDOWN, validate_close
from sessionws._commands import ClusterCommands
from sessionws._delivery import Delivery
from sessionws._errors import NotConfiguredError
from sessionws._handles import Completion, Handle, KeyState
from sessionws._inbound import Inbound
from sessionws._keys import KeyTable
from sessionws._membership import Presence
from sessionws._node import Node
from sessionws._outbound import Outbound
from sessionws._recovery import Recovery
from sessionws._registration import Registrations
from sessionws._reports import CloseReport, Count, Delivered, Members, SendReport

__all__ = ("RegistryVerbs",)


class RegistryVerbs:
    """The socket verbs, the cluster verbs, the local queries and the transport's
    callbacks of a registry.

    A base of :class:`~sessionws.SessionRegistry` only, which sets the parts below.
    """

    _running: bool
    _close_timeout: float
    _node: Node
    _delivery: Delivery
    _table: KeyTable
    _keys: dict[str, KeyState]
    _outbound: Outbound
    _presence: Presence
    _commands: ClusterCommands
    _registrations: Registrations
    _inbound: Inbound
    _recovery: Recovery

    def _require_running(self) -> anyio.abc.TaskGroup:
        if not self._running or self._node.tasks is None:
            raise NotConfiguredError(
                "the registry is not running: use `async with registry:` "
                "(the adapters' setup does this for you)"
            )
        return self._node.tasks

    # ------------------------------------------------------------------ one socket
    async def set_data(self, handle: Handle, data: Mapping[str, Any] | None) -> None:
        """Replace ``handle.data`` (``None`` removes it); a JSON object of at most 4 KiB."""
        self._registrations.set_data(handle, data)

    async def add_keys(self, handle: Handle, keys: str | Iterable[str]) -> None:
        """Register ``handle`` under more ``keys`` (a room it joins, a user it logged in
        as); idempotent. Returns once the keys are subscribed and their markers read,
        as for ``register``: a close of a key racing the add closes the connection.
        A revoked key raises :class:`KeyRevokedError`, more than 256 keys in all
        ``ValueError``; neither adds anything.
        """
        await self._registrations.add_keys(handle, keys)

    async def remove_keys(self, handle: Handle, keys: str | Iterable[str]) -> None:
        """Stop holding ``handle`` under ``keys`` (a room it leaves); idempotent. The
        first key (the session's id, in the adapters) cannot be removed."""
        self._registrations.remove_keys(handle, keys)

    # ------------------------------------------------------------------ cluster verbs
    async def is_revoked(self, key: str) -> bool:
        """True while ``key`` is revoked: refuse its websocket before the upgrade (403).

        A key this node holds, subscribed and with no close remembered, is answered
        here: it read the key's markers when it subscribed and hears every revoke on
        the key's channel since (one in flight closes the socket when it arrives). Other
        keys are asked of the broker. While the broker is unreachable, answers from what
        this node knows.
        """
        self._require_running()
        return await self._commands.is_revoked(key)

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
        self._require_running()
        return await self._commands.close("close", key, code, reason, exclude, confirm, timeout, strict, 0.0)

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
        ttl = self._node.revocations.default_ttl if ttl is None else ttl
        if not ttl > 0:
            raise ValueError("ttl must be a positive number of seconds")
        self._require_running()
        return await self._commands.close("revoke", key, code, reason, None, confirm, timeout, strict, ttl)

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
        return await self._commands.send_all(key, data, exclude, strict, confirm, timeout)

    async def broadcast(
        self, data: str | bytes, *, exclude: Handle | str | None = None, strict: bool = False
    ) -> SendReport:
        """Send ``data`` to every socket of every node, in one broker message
        (``exclude`` spares one). The report counts this node's sockets (a broadcast
        is not confirmed: ask ``count`` of a key every socket holds if you need to)."""
        self._require_running()
        return await self._commands.broadcast(data, exclude, strict)

    async def send_to(
        self, handle_id: str, data: str | bytes, *, timeout: float | None = None, strict: bool = False
    ) -> Delivered:
        """Send ``data`` to one socket, wherever it is (by ``handle.id``): one message to
        the node that holds it, which says whether it found the socket."""
        data = self._outbound.check_payload(data)
        self._require_running()
        return await self._commands.direct("send_to", handle_id, timeout, strict, data=data)

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
        self._require_running()
        return await self._commands.direct("close_to", handle_id, timeout, strict, code=code, reason=reason)

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
        return await self._commands.members(key, limit, timeout)

    async def count(self, key: str, *, timeout: float | None = None) -> Count:
        """Sockets of ``key`` cluster-wide, and whether every live node answered."""
        self._require_running()
        return await self._commands.count(key, timeout)

    # ------------------------------------------------------------------ this node
    def local_count(self, key: str) -> int:
        """Sockets of ``key`` on this node (not closing)."""
        return self._table.local_count(key)

    def local_handles(self, key: str) -> frozenset[Handle]:
        """The handles of ``key`` on this node."""
        state = self._keys.get(key)
        return frozenset(state.handles) if state is not None else frozenset()

    def local_keys(self) -> frozenset[str]:
        """Keys with at least one socket on this node."""
        return frozenset(key for key, state in self._keys.items() if state.handles)

    def live_nodes(self) -> frozenset[str]:
        """Other nodes heard from recently (heartbeats)."""
        return self._presence.membership.live()

    async def close_local(self, *, code: int = CLOSE_SHUTDOWN, reason: str = "") -> int:
        """Close every socket on this node (shutdown); wait for them, each bounded by
        ``close_timeout``. Returns how many were closed."""
        validate_close(code, reason)
        completion = Completion()
        handles = self._table.all_handles()
        closed = sum(self._delivery.close(handle, code, reason, completion) for handle in handles)
        completion.seal()
        with anyio.move_on_after(self._close_timeout + 1.0, shield=True):
            await completion.done.wait()
        return closed

    # ------------------------------------------------------------------ transport callbacks
    def message_received(self, channel: str, payload: bytes) -> None:
        """Transport callback: one command arrived. Never blocks, never raises."""
        self._inbound.message_received(channel, payload)

    def connection_lost(self) -> None:
        """Transport callback: the broker connection dropped."""
        self._recovery.connection_lost()

    def connection_restored(self) -> None:
        """Transport callback: connected again and resubscribed; reconcile."""
        self._recovery.connection_restored()
