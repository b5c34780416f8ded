"""``session_ws(request)``: a websocket registered under the session's id for its lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from sessionws import Handle

from ._app import new_id, state_of
from ._connection import AiohttpConnection
from ._session import id_changed, save_session_on

__all__ = ("get_ws_handle", "session_ws")

_HANDLE_KEY = web.ResponseKey("sessionws_handle", Handle)


@asynccontextmanager
async def session_ws(
    request: web.Request, *, keys: Iterable[str] = (), **ws_options: Any
) -> AsyncIterator[web.WebSocketResponse]:
    """Upgrade ``request`` and keep the websocket registered while the block runs.

    ``ws_options`` go to :class:`aiohttp.web.WebSocketResponse`. The socket is
    registered under the session's id (created when missing, and its cookie sent on
    the 101 response) and under ``keys`` (a user id, rooms, ...).

    In order: a request that is not a websocket upgrade gets 400 and touches
    nothing; a revoked id (or key) gets 403 before the upgrade; the socket is
    registered only once the upgrade succeeded; it is unregistered when the block
    ends, however it ends (errors and cancellation included)::

        async def handle_websocket(request):
            async with session_ws(request, keys=[f"user:{user_id}"]) as ws:
                async for message in ws:
                    ...
            return ws
    """
    state = state_of(request)
    extra = (keys,) if isinstance(keys, str) else tuple(keys)
    websocket: web.WebSocketResponse = web.WebSocketResponse(**ws_options)
    if not websocket.can_prepare(request):
        raise web.HTTPBadRequest(text="this route expects a websocket upgrade")

    session_ws_id = await state.id_provider.get_id(request)
    minted = session_ws_id is None
    if session_ws_id is None:
        session_ws_id = await new_id(request)
    registry = state.registry
    for key in extra if minted else (session_ws_id, *extra):
        if await registry.is_revoked(key):
            raise web.HTTPForbidden(text="websocket access was revoked: authenticate again")
    if id_changed(request):
        await save_session_on(request, websocket)

    await websocket.prepare(request)
    # A cancellation while registering leaves nothing registered (the registry sees to it).
    handle = await registry.register(AiohttpConnection(websocket), (session_ws_id, *extra))
    websocket[_HANDLE_KEY] = handle
    try:
        yield websocket
    finally:
        # unregister never suspends, so it completes even when the task is cancelled.
        await registry.unregister(handle)


def get_ws_handle(websocket: web.WebSocketResponse) -> Handle:
    """The registry's handle of a socket opened with ``session_ws`` (for ``exclude=``)."""
    handle = websocket.get(_HANDLE_KEY)
    if not isinstance(handle, Handle):
        raise LookupError("this websocket was not opened with sessionws_aiohttp.session_ws")
    return handle
