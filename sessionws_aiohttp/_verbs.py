"""The verbs a handler calls: the session-ws id, and closing, revoking, messaging and
counting websockets — of the request's session, or of any key (a user, a room)."""

from __future__ import annotations

from aiohttp import web

from sessionws import CLOSE_DEFAULT, CLOSE_REVOKED, CloseReport, Count, Handle, validate_close

from ._app import ensure_id, new_id, state_of
from ._session import note_id_changed

__all__ = (
    "close_all_session_ws",
    "close_all_ws",
    "count_session_ws",
    "count_ws",
    "delete_session_ws_id",
    "ensure_session_ws_id",
    "get_session_ws_id",
    "new_session_ws_id",
    "revoke_session_ws",
    "revoke_ws",
    "rotate_session_ws_id",
    "schedule_close_all_session_ws",
    "schedule_close_all_ws",
    "send_session_ws",
    "send_ws",
)

Target = web.Request | web.Application


# ---------------------------------------------------------------------- the id
async def get_session_ws_id(request: web.Request) -> str | None:
    """The session-ws id of this request's session, or ``None`` when it has none."""
    return await state_of(request).id_provider.get_id(request)


async def new_session_ws_id(request: web.Request) -> str:
    """Give the session a fresh id (and return it). Sockets of the old id stay open:
    schedule their close first (``schedule_close_all_session_ws``), or use
    ``rotate_session_ws_id``."""
    return await new_id(request)


async def delete_session_ws_id(request: web.Request) -> None:
    """Remove the id from the session."""
    await state_of(request).id_provider.delete_id(request)
    note_id_changed(request)


async def ensure_session_ws_id(request: web.Request) -> str:
    """The session's id, created when missing."""
    return await ensure_id(request)


# ---------------------------------------------------------------------- the session's sockets
async def schedule_close_all_session_ws(
    request: web.Request, response: web.StreamResponse, *, code: int = CLOSE_DEFAULT, reason: str = ""
) -> None:
    """Close every socket of this session, on every node, once ``response`` is written out.

    The id is read now, so the handler may assign a new one next; the response is
    marked not keep-alive, so the close follows it at once. The client receives the
    response before its sockets drop. (``aiohttp_session_ws``'s logout pattern.)
    """
    session_ws_id = await get_session_ws_id(request)
    if session_ws_id is not None:
        await schedule_close_all_ws(request, response, session_ws_id, code=code, reason=reason)


async def close_all_session_ws(
    request: web.Request,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "",
    exclude: Handle | str | None = None,
    confirm: bool = False,
    timeout: float | None = None,
    strict: bool = False,
) -> CloseReport:
    """Close every socket of this session on every node, now (``exclude`` spares one).

    ``strict=True`` raises ``BrokerUnavailableError`` instead of queueing the remote part
    while the broker is unreachable.
    """
    session_ws_id = await get_session_ws_id(request)
    if session_ws_id is None:
        return CloseReport(0)
    return await close_all_ws(
        request,
        session_ws_id,
        code=code,
        reason=reason,
        exclude=exclude,
        confirm=confirm,
        timeout=timeout,
        strict=strict,
    )


async def revoke_session_ws(
    request: web.Request,
    *,
    ttl: float | None = None,
    code: int = CLOSE_REVOKED,
    reason: str = "session revoked",
    confirm: bool = False,
    timeout: float | None = None,
    strict: bool = False,
) -> CloseReport:
    """Close every socket of this session everywhere (4401) and refuse its id for ``ttl``.

    New websockets of the session are refused with 403 until it gets a new id
    (``rotate_session_ws_id``/``new_session_ws_id``, e.g. when the user logs in again).
    """
    session_ws_id = await get_session_ws_id(request)
    if session_ws_id is None:
        return CloseReport(0)
    return await revoke_ws(
        request,
        session_ws_id,
        ttl=ttl,
        code=code,
        reason=reason,
        confirm=confirm,
        timeout=timeout,
        strict=strict,
    )


async def rotate_session_ws_id(
    request: web.Request,
    response: web.StreamResponse | None = None,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "session id rotated",
    ttl: float | None = None,
) -> str:
    """Revoke the session's current id cluster-wide and give it a new one (returned).

    Do it when the user logs in or out: the old id's sockets close (with ``code``,
    1000 by default so this session's tabs reconnect with the new id) and the old
    id can never register again, so whoever learnt it cannot attach. With
    ``response``, the revoke waits until the response (carrying the new id's
    cookie) is written out, so the session's tabs reconnect with the new id.
    """
    validate_close(code, reason)
    if ttl is not None and not ttl > 0:
        raise ValueError("ttl must be a positive number of seconds")
    state = state_of(request)
    old = await state.id_provider.get_id(request)
    new = await new_id(request)
    if old is not None and old != new:
        registry = state.registry

        async def revoke_old() -> None:
            await registry.revoke(old, ttl=ttl, code=code, reason=reason)

        if response is None:
            await revoke_old()
        else:
            response.force_close()
            state.lifetime.after_response(request, revoke_old)
    return new


async def send_session_ws(
    request: web.Request, data: str | bytes, *, exclude: Handle | str | None = None
) -> None:
    """Send ``data`` (text for ``str``, binary for ``bytes``) to every socket of this
    session, on every node."""
    session_ws_id = await get_session_ws_id(request)
    if session_ws_id is not None:
        await send_ws(request, session_ws_id, data, exclude=exclude)


async def count_session_ws(request: web.Request, *, timeout: float | None = None) -> Count:
    """The session's sockets cluster-wide, and whether every live node answered."""
    session_ws_id = await get_session_ws_id(request)
    if session_ws_id is None:
        return Count(0, True)
    return await count_ws(request, session_ws_id, timeout=timeout)


# ---------------------------------------------------------------------- any key
async def schedule_close_all_ws(
    request: web.Request,
    response: web.StreamResponse,
    key: str,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "",
) -> None:
    """Close every socket of ``key`` on every node once ``response`` is written out."""
    if not isinstance(response, web.StreamResponse):
        raise TypeError(f"response must be an aiohttp response, not {type(response).__name__}")

    # Check the arguments here, in the handler, rather than later in the background.
    validate_close(code, reason)
    state = state_of(request)
    registry = state.registry

    async def close() -> None:
        await registry.close_all(key, code=code, reason=reason)

    response.force_close()
    state.lifetime.after_response(request, close)


async def close_all_ws(
    target: Target,
    key: str,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "",
    exclude: Handle | str | None = None,
    confirm: bool = False,
    timeout: float | None = None,
    strict: bool = False,
) -> CloseReport:
    """Close every socket of ``key`` on every node (``target``: a request or the app)."""
    return await state_of(target).registry.close_all(
        key, code=code, reason=reason, exclude=exclude, confirm=confirm, timeout=timeout, strict=strict
    )


async def revoke_ws(
    target: Target,
    key: str,
    *,
    ttl: float | None = None,
    code: int = CLOSE_REVOKED,
    reason: str = "session revoked",
    confirm: bool = False,
    timeout: float | None = None,
    strict: bool = False,
) -> CloseReport:
    """Close every socket of ``key`` everywhere and refuse ``key`` for ``ttl`` seconds."""
    return await state_of(target).registry.revoke(
        key, ttl=ttl, code=code, reason=reason, confirm=confirm, timeout=timeout, strict=strict
    )


async def send_ws(
    target: Target, key: str, data: str | bytes, *, exclude: Handle | str | None = None
) -> None:
    """Send ``data`` to every socket of ``key`` on every node."""
    await state_of(target).registry.send_all(key, data, exclude=exclude)


async def count_ws(target: Target, key: str, *, timeout: float | None = None) -> Count:
    """Sockets of ``key`` cluster-wide, and whether every live node answered."""
    return await state_of(target).registry.count(key, timeout=timeout)
