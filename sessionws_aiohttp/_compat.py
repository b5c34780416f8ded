"""``SessionWSRegistry``: the class of ``aiohttp_session_ws``, backed by ``SessionRegistry``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp_session
from aiohttp import web

from sessionws import (
    CLOSE_DEFAULT,
    CloseReport,
    IdFactory,
    SessionKeyIdProvider,
    SessionRegistry,
    Transport,
)

from ._connection import AiohttpConnection
from ._session import note_id_changed

__all__ = ("DEFAULT_SESSION_KEY", "SessionWSRegistry", "default_id_factory")

#: The session key ``aiohttp_session_ws`` used: sessions keep their ids across the migration.
DEFAULT_SESSION_KEY = "aiohttp_session_ws_id"


def default_id_factory(request: web.Request) -> str:
    """``uuid.uuid4().hex``, as ``aiohttp_session_ws`` made its ids."""
    return uuid.uuid4().hex


class SessionWSRegistry(Mapping[str, frozenset[web.WebSocketResponse[Any]]]):
    """The compatibility class: ``aiohttp_session_ws.SessionWSRegistry``'s surface.

    A read-only mapping of session-ws id → the set of that session's websockets on
    this node (``registry[id]``, iteration over ids, ``len``), and the old methods.
    Underneath, a :class:`~sessionws.SessionRegistry` over ``transport`` (any URL;
    ``**registry_options`` go to it), so closes reach every node of a cluster.

    Differences from the old class: ids are strings (a factory returning anything
    else raises ``TypeError``), and ``register``/``unregister`` are coroutines.
    """

    def __init__(
        self,
        *,
        id_factory: IdFactory[web.Request] = default_id_factory,
        session_key: str = DEFAULT_SESSION_KEY,
        transport: Transport | str = "memory://",
        **registry_options: Any,
    ) -> None:
        self.id_factory = id_factory
        self.session_key = session_key
        self.id_provider = SessionKeyIdProvider[web.Request](
            aiohttp_session.get_session, id_factory=id_factory, session_key=session_key
        )
        self.registry = SessionRegistry(transport, **registry_options)

    def __repr__(self) -> str:
        return f"<SessionWSRegistry session_key={self.session_key!r} sessions={len(self)}>"

    # ------------------------------------------------------------------ the mapping
    def _session_ids(self) -> list[str]:
        """Keys that some socket was registered under as its session-ws id (its first key)."""
        registry = self.registry
        found: dict[str, None] = {}
        for key in registry.local_keys():
            if any(handle.keys[0] == key for handle in registry.local_handles(key)):
                found[key] = None
        return list(found)

    def __getitem__(self, session_ws_id: str) -> frozenset[web.WebSocketResponse[Any]]:
        sockets = frozenset(
            handle.connection.websocket
            for handle in self.registry.local_handles(session_ws_id)
            if not handle.closed and isinstance(handle.connection, AiohttpConnection)
        )
        if not sockets:
            raise KeyError(session_ws_id)
        return sockets

    def __iter__(self) -> Iterator[str]:
        return iter(self._session_ids())

    def __len__(self) -> int:
        return len(self._session_ids())

    # ------------------------------------------------------------------ ids
    async def get_id(self, request: web.Request) -> str | None:
        """The session-ws id of ``request``'s session, or ``None``."""
        return await self.id_provider.get_id(request)

    async def new_id(self, request: web.Request) -> str:
        """Store a fresh id in the session (and return it)."""
        new = await self.id_provider.new_id(request)
        note_id_changed(request)
        return new

    async def delete_id(self, request: web.Request) -> None:
        """Remove the id from the session."""
        await self.id_provider.delete_id(request)
        note_id_changed(request)

    async def ensure_id(self, request: web.Request) -> str:
        """The current id, created when missing."""
        current = await self.id_provider.get_id(request)
        return current if current is not None else await self.new_id(request)

    # ------------------------------------------------------------------ sockets
    async def register(self, session_ws_id: str, websocket: web.WebSocketResponse[Any]) -> None:
        """Add a prepared websocket under ``session_ws_id`` (``session_ws`` does this for you)."""
        if not websocket.prepared:
            raise RuntimeError("register a websocket after `await websocket.prepare(request)`")
        await self.registry.register(AiohttpConnection(websocket), session_ws_id)

    async def unregister(self, session_ws_id: str, websocket: web.WebSocketResponse[Any]) -> None:
        """Remove the pair; an unknown id or socket is no error."""
        for handle in self.registry.local_handles(session_ws_id):
            connection = handle.connection
            if isinstance(connection, AiohttpConnection) and connection.websocket is websocket:
                await self.registry.unregister(handle)

    async def close_all(self) -> None:
        """Close every websocket of every session on this node (code 1000)."""
        await self.registry.close_local(code=CLOSE_DEFAULT)

    async def close_all_session(self, session_ws_id: str) -> CloseReport:
        """Close every websocket of this session, on every node (code 1000)."""
        return await self.registry.close_all(session_ws_id)

    async def schedule_close_all_session(self, request: web.Request, response: web.StreamResponse) -> None:
        """Close this session's websockets once ``response`` has been written out.

        Reads the id now (the handler may assign a new one next) and marks the
        response not keep-alive, so the close follows the response at once.
        """
        from ._verbs import schedule_close_all_session_ws

        await schedule_close_all_session_ws(request, response)
