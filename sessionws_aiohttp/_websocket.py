"""``session_ws(request)``: a websocket registered under the session's id for its lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from sessionws import Handle, WebSocketRefusedError

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
    nothing; an ``Origin`` that ``setup`` does not allow gets 403 (before the session
    is touched); a revoked id (or key) gets 403; a session that already holds
    ``max_sockets_per_session`` sockets on this node gets 429; all before the upgrade.
    The socket is registered only once the upgrade succeeded; it is unregistered when
    the block ends, however it ends (errors and cancellation included)::

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
    registry = state.registry
    guard = state.guard
    try:
        guard.check_origin(registry, _headers_of(request), request.scheme, request.path)
    except WebSocketRefusedError as refused:
        raise _http_error(refused) from None

    session_ws_id = await state.id_provider.get_id(request)
    minted = session_ws_id is None
    if session_ws_id is None:
        session_ws_id = await new_id(request)
    for key in extra if minted else (session_ws_id, *extra):
        if await registry.is_revoked(key):
            raise web.HTTPForbidden(text="websocket access was revoked: authenticate again")
    if id_changed(request):
        await save_session_on(request, websocket)

    try:
        with guard.socket_slot(registry, session_ws_id) as slot:
            await websocket.prepare(request)
            slot.release()  # the registry counts the socket from here on
            # A cancellation while registering leaves nothing registered (the registry sees to it).
            handle = await registry.register(AiohttpConnection(websocket), (session_ws_id, *extra))
    except WebSocketRefusedError as refused:  # only the slot raises it, before the upgrade
        raise _http_error(refused) from None
    websocket[_HANDLE_KEY] = handle
    try:
        yield websocket
    finally:
        # unregister never suspends, so it completes even when the task is cancelled.
        await registry.unregister(handle)


def _headers_of(request: web.Request) -> Callable[[str], list[str]]:
    def values(name: str) -> list[str]:
        # The host as the app sees it (a proxy middleware may have cloned the request).
        return [request.host] if name == "host" else request.headers.getall(name, [])

    return values


def _http_error(refused: WebSocketRefusedError) -> web.HTTPException:
    if refused.status == 429:
        return web.HTTPTooManyRequests(text=refused.message)
    return web.HTTPForbidden(text=refused.message)


def get_ws_handle(websocket: web.WebSocketResponse) -> Handle:
    """The registry's handle of a socket opened with ``session_ws`` (for ``exclude=``)."""
    handle = websocket.get(_HANDLE_KEY)
    if not isinstance(handle, Handle):
        raise LookupError("this websocket was not opened with sessionws_aiohttp.session_ws")
    return handle
