"""Registering a connection under keys, beyond the registry's short path.

The registry itself takes the commonest case (a second socket of a session this node
already holds, subscribed, with nothing to check). Everything else comes here: new
keys (subscribed in batches), lingering keys, keys with closes or revocations
remembered, the broker away, the fail-closed policy, keys added to or removed from a
connection later.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from sessionws._codes import CLOSE_UNKNOWN_STATE
from sessionws._data import check_data
from sessionws._errors import KeyRevokedError
from sessionws._handles import Handle, KeyState
from sessionws._keys import Batch
from sessionws._node import Node
from sessionws._protocols import Connection

__all__ = ("MAX_KEYS_PER_SOCKET", "Registrations", "check_key", "check_key_count", "normalize_keys")

#: The most keys one socket may hold (its first key, the session's id, included), at
#: ``register`` and after ``add_keys``: each key is a subscription of the node, so a client
#: that may choose rooms must not make the node subscribe without bound.
MAX_KEYS_PER_SOCKET = 256


class Registrations:
    """The general path of ``register``, and ``add_keys`` / ``remove_keys`` / ``set_data``."""

    def __init__(
        self,
        node: Node,
        *,
        handle_class: type[Handle],
        next_number: Callable[[], int],
        accepting: Callable[[], bool],
        unregister: Callable[[Handle], Awaitable[None]],
        is_revoked: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._node = node
        self._table = node.table
        self._keys = node.table.by_key
        self._delivery = node.delivery
        self._revocations = node.revocations
        self._handle_class = handle_class
        self._next_number = next_number
        self._accepting = accepting
        self._unregister = unregister
        self._is_revoked = is_revoked
        self._fail_closed = node.options.fail_closed_after is not None
        self._socket_events = node.options.socket_events

    async def register(
        self, connection: Connection, keys: str | Iterable[str], data: Mapping[str, Any] | None
    ) -> Handle:
        node = self._node
        key_tuple = (keys,) if type(keys) is str and keys else normalize_keys(keys)
        check_key_count(len(key_tuple))
        checked_data = None if data is None else check_data(data)
        table = self._keys
        states = tuple(table.get(key) or self._table.create(key) for key in key_tuple)
        handle = self._handle_class(
            self._next_number(), connection, states[0], states[1:], node.known_sequence
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
        if self._fail_closed and not self._accepting():
            self._delivery.close(handle, CLOSE_UNKNOWN_STATE, "the broker is unreachable")
            return handle
        # Fast path (every key subscribed, the broker connected): every later close
        # reaches this node as a message; the handle took effect at the newest sequence
        # this node has seen (given to it above). Otherwise wait for the subscription.
        if new_states is not None or waiting is not None or not node.connected:
            handle.mark_pending()
            try:
                await self._await_subscriptions(handle, new_states, waiting)
            except BaseException:
                await self._unregister(handle)  # cancelled while subscribing: leave nothing behind
                raise
            handle.registered()
            check = True
        if check:
            self.check(handle)
        if self._socket_events:
            node.emit("registered", handle=handle.id)
        return handle

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
            handle.registration_sequence = self._node.known_sequence
        else:
            handle.registration_sequence = min(batch.sequence for batch in batches)

    def check(self, handle: Handle) -> None:
        """Close the new connection if a key is revoked or was closed since it registered."""
        if handle.closing:
            return
        now = time.monotonic()
        for state in handle.states:
            revoked = self._revocations.in_force(state.hash, now)
            if revoked is not None:
                self._delivery.close(handle, revoked[1], revoked[2])
                return
            close = state.close_for(handle)
            if close is not None:
                self._delivery.close(handle, close.code, close.reason)
                return

    def own_handle(self, handle: object) -> Handle:
        if not isinstance(handle, self._handle_class):
            raise TypeError(f"expected a Handle this registry returned from register(), not {handle!r}")
        if handle.closing:
            raise ValueError(f"{handle!r} is closed or closing")
        return handle

    def set_data(self, handle: Handle, data: Mapping[str, Any] | None) -> None:
        handle = self.own_handle(handle)
        if data is None:
            handle.data_table.pop(handle, None)
        else:
            handle.data_table[handle] = check_data(data)

    async def add_keys(self, handle: Handle, keys: str | Iterable[str]) -> None:
        handle = self.own_handle(handle)
        new_keys = [key for key in normalize_keys(keys) if key not in handle.keys]
        check_key_count(len(handle.keys) + len(new_keys))
        for key in new_keys:
            if await self._is_revoked(key):
                raise KeyRevokedError("a revoked key cannot be added; authenticate again first")
        handle = self.own_handle(handle)  # still open after the checks
        new_keys = [key for key in new_keys if key not in handle.keys]
        if not new_keys:
            return
        check_key_count(len(handle.keys) + len(new_keys))  # another add may have run meanwhile
        node = self._node
        states = [self._keys.get(key) or self._table.create(key) for key in new_keys]
        new_states: list[KeyState] = []
        waiting: list[Batch] = []
        for state in states:
            state.handles.add(handle)
            if state.added is None:
                state.added = {}
            state.added[handle] = node.known_sequence
            if state.linger_until is not None:
                self._table.keep(state)
            if not state.subscribed:
                batch = state.subscribing
                if isinstance(batch, Batch):
                    waiting.append(batch)
                else:
                    new_states.append(state)
        handle.others = (*handle.others, *states)
        if new_states or waiting or not node.connected:
            batches = [*waiting, *([self._table.join_batch(new_states)] if new_states else [])]
            for batch in batches:
                await batch.done.wait()
            sequence = (
                min(batch.sequence for batch in batches)
                if batches and not any(batch.failed for batch in batches)
                else node.known_sequence
            )
            for state in states:
                if state.added is not None and handle in state.added:
                    state.added[handle] = min(state.added[handle], sequence)
        self.check(handle)

    def remove_keys(self, handle: Handle, keys: str | Iterable[str]) -> None:
        handle = self.own_handle(handle)
        removed = set(normalize_keys(keys))
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


def check_key(key: object) -> str:
    """``key`` if it is a non-empty ``str``, else ``TypeError`` / ``ValueError``."""
    if not isinstance(key, str):
        raise TypeError(f"keys must be str, not {type(key).__name__}")
    if not key:
        raise ValueError("a key must be a non-empty string")
    return key


def check_key_count(count: int) -> None:
    """``ValueError`` when a socket would hold more than :data:`MAX_KEYS_PER_SOCKET` keys."""
    if count > MAX_KEYS_PER_SOCKET:
        raise ValueError(
            f"a socket may hold at most {MAX_KEYS_PER_SOCKET} keys, its session's id included "
            f"(this one would hold {count}): remove keys it no longer needs first"
        )


def normalize_keys(keys: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(keys, str):
        return (check_key(keys),)
    if not isinstance(keys, Iterable):
        raise TypeError(f"keys must be a str or an iterable of str, not {type(keys).__name__}")
    result = tuple(dict.fromkeys(check_key(key) for key in keys))
    if not result:
        raise ValueError("register needs at least one key (the session-ws id)")
    return result
