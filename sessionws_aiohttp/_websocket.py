"""``session_ws(request)``: a websocket registered under the session's id for its lifetime,
and the verbs on that socket (its keys, its data)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from sessionws import Handle, WebSocketRefusedError
from sessionws import _verbs as verbs

from ._app import new_id, state_of
from ._connection import AiohttpConnection
from ._session import id_changed, save_session_on

__all__ = ("add_keys_ws", "get_ws_handle", "remove_keys_ws", "session_ws", "set_data_ws")

_HANDLE_KEY = web.ResponseKey("sessionws_handle", Handle)
#: The handle of the socket a request's handler opened, for the verbs on that socket.
_REQUEST_HANDLE_KEY = web.RequestKey("sessionws_handle", Handle)


@asynccontextmanager
async def session_ws(
    request: web.Request,
    keys: str | Iterable[str] = (),
    *,
    data: Mapping[str, Any] | None = None,
    **ws_options: Any,
) -> AsyncIterator[web.WebSocketResponse]:
    """Upgrade ``request`` and keep the websocket registered while the block runs.

    ``ws_options`` go to :class:`aiohttp.web.WebSocketResponse`. The socket is
    registered under the session's id (created when missing, and its cookie sent on
    the 101 response) and under ``keys`` (a user id, rooms, ...; a ``str`` is one key;
    at most 256 keys with the id). ``data``, a JSON object of at most 4 KiB, is kept as
    the handle's ``data`` and shown by ``members_ws``. The block yields the websocket
    (the handler returns it); ``get_ws_handle(ws)`` is its handle, and ``add_keys_ws``,
    ``remove_keys_ws`` and ``set_data_ws`` change it.

    In order: bad ``keys`` or ``data`` raise ``TypeError``/``ValueError``; a request
    that is not a websocket upgrade gets 400 and touches nothing; an ``Origin`` that
    ``setup`` does not allow gets 403 (before the session is touched); a revoked id (or
    key) gets 403; a session that already holds ``max_sockets_per_session`` sockets on
    this node gets 429; all before the upgrade. The socket is registered only once the
    upgrade succeeded; it is unregistered when the block ends, however it ends (errors
    and cancellation included)::

        async def handle_websocket(request):
            async with session_ws(request, keys=[f"user:{user_id}"]) as ws:
                async for message in ws:
                    ...
            return ws
    """
    extra, checked_data = verbs.check_socket(keys, data)
    state = state_of(request)
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
    all_keys = verbs.socket_keys(session_ws_id, extra)
    # A freshly minted id cannot be revoked: ask about the others only.
    if await verbs.first_revoked(registry, all_keys[1:] if minted else all_keys) is not None:
        raise web.HTTPForbidden(text="websocket access was revoked: authenticate again")
    if id_changed(request):
        await save_session_on(request, websocket)

    try:
        with guard.socket_slot(registry, session_ws_id) as slot:
            await websocket.prepare(request)
            slot.release()  # the registry counts the socket from here on
            # A cancellation while registering leaves nothing registered (the registry sees to it).
            handle = await registry.register(AiohttpConnection(websocket), all_keys, checked_data)
    except WebSocketRefusedError as refused:  # only the slot raises it, before the upgrade
        raise _http_error(refused) from None
    websocket[_HANDLE_KEY] = handle
    request[_REQUEST_HANDLE_KEY] = handle
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


def _request_handle(request: web.Request) -> Handle:
    handle = request.get(_REQUEST_HANDLE_KEY)
    if not isinstance(handle, Handle):
        raise LookupError(
            "this request has no websocket: call the verb inside `async with session_ws(request)` "
            "in the websocket's own handler (elsewhere, use get_registry(app) and the handle)"
        )
    return handle


async def add_keys_ws(request: web.Request, keys: str | Iterable[str]) -> None:
    """Register the request's websocket (opened with ``session_ws``) under more ``keys``:
    a room it joins, the user it logged in as. Idempotent; at most 256 keys in all.

    Returns once the keys are subscribed and their markers read, as at registration: a
    close of a key racing the add closes the socket. A revoked key raises
    :class:`~sessionws.KeyRevokedError` and adds nothing.
    """
    state = state_of(request)
    await verbs.add_keys(state.registry, _request_handle(request), keys)


async def remove_keys_ws(request: web.Request, keys: str | Iterable[str]) -> None:
    """Stop holding the request's websocket under ``keys`` (a room it leaves);
    idempotent. Its session's id cannot be removed (``ValueError``)."""
    state = state_of(request)
    await verbs.remove_keys(state.registry, _request_handle(request), keys)


async def set_data_ws(request: web.Request, data: Mapping[str, Any] | None) -> None:
    """Replace the data of the request's websocket (``get_ws_handle(ws).data``, shown by
    ``members_ws``): a JSON object of at most 4 KiB, or ``None`` to remove it."""
    state = state_of(request)
    await state.registry.set_data(_request_handle(request), data)
