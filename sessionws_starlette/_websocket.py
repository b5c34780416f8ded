"""``session_ws``: accept a Starlette websocket and keep it registered under its session's id;
the verbs on that socket (its keys, its data)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
from starlette.exceptions import HTTPException, WebSocketException
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from sessionws import CLOSE_REVOKED, Handle, WebSocketRefusedError
from sessionws import _verbs as verbs
from sessionws_starlette._state import get_guard, get_registry
from sessionws_starlette._verbs import get_session_ws_id

__all__ = (
    "HANDLE_SCOPE_KEY",
    "MISSING_ID_REASON",
    "StarletteConnection",
    "add_keys_ws",
    "get_ws_handle",
    "remove_keys_ws",
    "session_ws",
    "set_data_ws",
)

logger = logging.getLogger("sessionws.starlette")

#: Close reason (1008) for a websocket whose session has no id; fits a close frame.
MISSING_ID_REASON = "no session-ws id: load a page under SessionWSMiddleware first, or set ephemeral_ids=True"
#: Where ``session_ws`` keeps the websocket's :class:`~sessionws.Handle` in its scope.
HANDLE_SCOPE_KEY = "sessionws.handle"


class StarletteConnection:
    """A Starlette :class:`~starlette.websockets.WebSocket` as the registry sees it
    (the :class:`~sessionws.Connection` protocol).

    Closing a socket that is already closed, or whose client vanished, is a no-op.
    """

    __slots__ = ("websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    def __repr__(self) -> str:
        return f"<StarletteConnection {self.websocket.application_state.name}>"

    async def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self.websocket.send_text(data)
        else:
            await self.websocket.send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        websocket = self.websocket
        if WebSocketState.DISCONNECTED in (websocket.application_state, websocket.client_state):
            return
        # The client may have gone away first (OSError, WebSocketDisconnect), or the endpoint
        # closed it meanwhile (RuntimeError: WebSocketDisconnected in Starlette 1.x, or the
        # server refusing a second close): either way there is nothing left to close.
        with suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(code, reason)


@asynccontextmanager
async def session_ws(
    websocket: WebSocket,
    keys: str | Iterable[str] = (),
    *,
    data: Mapping[str, Any] | None = None,
    subprotocol: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[Handle]:
    """Accept ``websocket`` and register it under its session's id (and ``keys``: a user
    id, rooms, ...; a ``str`` is one key; at most 256 keys with the id) while the block
    runs; unregister it on the way out, whatever happens (cancellation too). ``data``, a
    JSON object of at most 4 KiB, is kept as ``handle.data`` and shown by ``members_ws``.
    The block yields the socket's :class:`~sessionws.Handle` (``get_ws_handle(websocket)``
    returns it too); ``add_keys_ws``, ``remove_keys_ws`` and ``set_data_ws`` change it.

    Bad ``keys`` or ``data`` raise ``TypeError``/``ValueError`` before anything else.
    Before the accept, a websocket whose ``Origin`` is not allowed, or whose id (or one of
    ``keys``) is revoked, is refused: the client sees HTTP 403. So is a socket beyond the
    session's ``max_sockets_per_session`` on this node: HTTP 429 where the server supports
    the ASGI websocket denial response (uvicorn, hypercorn), else 403. A websocket whose
    session has no id is accepted and closed with 1008 and a reason naming the fix (install
    :class:`SessionWSMiddleware` on the page, or let it mint ephemeral ids). Refusals raise
    :class:`starlette.exceptions.WebSocketException` (or ``HTTPException`` for a denial
    response), which Starlette turns into the answer, so your endpoint stops there.
    ``subprotocol`` and ``headers`` go to
    :meth:`WebSocket.accept`; a websocket you already accepted is used as it is (its
    refusals then come after the upgrade, as a close with 1008, still before anything is
    registered).
    """
    extra, checked_data = verbs.check_socket(keys, data)
    registry = get_registry(websocket)
    guard = get_guard(websocket)
    try:
        guard.check_origin(registry, websocket.headers.getlist, websocket.scope["scheme"], websocket.url.path)
    except WebSocketRefusedError as refused:
        raise _refusal(websocket, refused) from None
    session_id = await get_session_ws_id(websocket)
    if session_id is None:
        logger.warning(
            "refused a websocket on %s (1008): its session has no session-ws id. Add "
            "Middleware(SessionWSMiddleware) inside SessionMiddleware and make sure its paths cover the "
            "pages that open this websocket, or pass ephemeral_ids=True to SessionWSMiddleware",
            websocket.url.path,
        )
        if websocket.application_state == WebSocketState.CONNECTING:
            await websocket.accept(subprotocol, headers)
        # Starlette's exception middleware sends the close: the reason reaches the client.
        raise WebSocketException(code=1008, reason=MISSING_ID_REASON)
    all_keys = verbs.socket_keys(session_id, extra)
    if await verbs.first_revoked(registry, all_keys) is not None:
        # Closed before the accept, the upgrade fails with 403.
        raise WebSocketException(code=CLOSE_REVOKED, reason="session revoked")
    try:
        with guard.socket_slot(registry, session_id) as slot:
            if websocket.application_state == WebSocketState.CONNECTING:
                await websocket.accept(subprotocol, headers)
            slot.release()  # the registry counts the socket from here on
            # Shielded: a cancellation arriving while the registry subscribes would leave the
            # socket registered with nobody holding its handle. It lands just below instead,
            # where ``finally`` unregisters.
            with anyio.CancelScope(shield=True):
                handle = await registry.register(StarletteConnection(websocket), all_keys, checked_data)
    except WebSocketRefusedError as refused:  # only the slot raises it, before the accept
        raise _refusal(websocket, refused) from None
    websocket.scope[HANDLE_SCOPE_KEY] = handle
    try:
        yield handle
    except RuntimeError:
        # The registry closed the socket (a logout on another node, say) while the endpoint
        # was reading: Starlette then refuses the next receive with RuntimeError ("not
        # connected"). For the endpoint that is the end of the socket, as a client leaving.
        if not handle.closing or websocket.application_state != WebSocketState.DISCONNECTED:
            raise
    finally:
        # unregister never suspends, so it completes even when the task is cancelled.
        await registry.unregister(handle)


def _refusal(websocket: WebSocket, refused: WebSocketRefusedError) -> Exception:
    """The exception that makes Starlette answer the refused upgrade: an HTTP response
    with the refusal's status where the server supports denial responses (ASGI
    ``websocket.http.response``), else a close before the accept (the client sees 403)."""
    if websocket.application_state == WebSocketState.CONNECTING and "websocket.http.response" in (
        websocket.scope.get("extensions") or {}
    ):
        return HTTPException(status_code=refused.status, detail=refused.message)
    return WebSocketException(code=1008, reason=refused.message[:123])


def get_ws_handle(websocket: WebSocket) -> Handle:
    """The registry's handle of a websocket opened with ``session_ws`` (what its block
    yields): for ``exclude=`` and ``send_to_ws(..., handle.id)``."""
    handle = websocket.scope.get(HANDLE_SCOPE_KEY)
    if not isinstance(handle, Handle):
        raise LookupError(
            "this websocket was not opened with sessionws_starlette.session_ws: call the verb "
            "inside `async with session_ws(websocket)`"
        )
    return handle


async def add_keys_ws(websocket: WebSocket, keys: str | Iterable[str]) -> None:
    """Register ``websocket`` (opened with ``session_ws``) under more ``keys``: a room it
    joins, the user it logged in as. Idempotent; at most 256 keys in all.

    Returns once the keys are subscribed and their markers read, as at registration: a
    close of a key racing the add closes the socket. A revoked key raises
    :class:`~sessionws.KeyRevokedError` and adds nothing.
    """
    await verbs.add_keys(get_registry(websocket), get_ws_handle(websocket), keys)


async def remove_keys_ws(websocket: WebSocket, keys: str | Iterable[str]) -> None:
    """Stop holding ``websocket`` under ``keys`` (a room it leaves); idempotent. Its
    session's id cannot be removed (``ValueError``)."""
    await verbs.remove_keys(get_registry(websocket), get_ws_handle(websocket), keys)


async def set_data_ws(websocket: WebSocket, data: Mapping[str, Any] | None) -> None:
    """Replace the data of ``websocket`` (``handle.data``, shown by ``members_ws``): a
    JSON object of at most 4 KiB, or ``None`` to remove it."""
    await get_registry(websocket).set_data(get_ws_handle(websocket), data)
