"""The verbs a handler calls: the session-ws id, and closing, revoking, messaging and
counting websockets — of the connection's session (``*_session_ws``), or of any key such
as a user or a room (``*_ws``).

Each takes a :class:`~starlette.requests.HTTPConnection` (a ``Request`` or a
``WebSocket``), so the id helpers double as FastAPI dependencies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.background import BackgroundTasks
from starlette.requests import HTTPConnection
from starlette.responses import Response

from sessionws import CLOSE_DEFAULT, CLOSE_REVOKED, CloseReport, Count, Handle, validate_close
from sessionws_starlette._state import get_id_provider, get_registry

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

logger = logging.getLogger("sessionws.starlette")

#: Where work "after the response" goes: a response's background, or FastAPI's
#: ``BackgroundTasks`` parameter.
AfterResponse = Response | BackgroundTasks


# ---------------------------------------------------------------------- the id
async def get_session_ws_id(connection: HTTPConnection) -> str | None:
    """The session-ws id of this connection's session, or ``None`` when it has none."""
    return await get_id_provider(connection).get_id(connection)


async def new_session_ws_id(connection: HTTPConnection) -> str:
    """Give the session a fresh id (and return it). Sockets of the old id stay open:
    schedule their close first (``schedule_close_all_session_ws``), or use
    ``rotate_session_ws_id``."""
    return await get_id_provider(connection).new_id(connection)


async def delete_session_ws_id(connection: HTTPConnection) -> None:
    """Remove the id from the session (a no-op when it has none)."""
    await get_id_provider(connection).delete_id(connection)


async def ensure_session_ws_id(connection: HTTPConnection) -> str:
    """The session's id, created when missing."""
    return await get_id_provider(connection).ensure_id(connection)


# ---------------------------------------------------------------------- after the response
def _after_response(response: AfterResponse, work: Callable[[], Awaitable[object]], what: str) -> None:
    """Append ``work`` to the response's background tasks, keeping any already there."""

    async def run() -> None:
        try:
            await work()
        except Exception:
            logger.exception("the %s scheduled after a response failed", what)

    if isinstance(response, BackgroundTasks):
        response.add_task(run)
    elif isinstance(response, Response):
        existing = response.background
        if isinstance(existing, BackgroundTasks):
            existing.add_task(run)
        else:
            tasks = BackgroundTasks([existing] if existing is not None else None)
            tasks.add_task(run)
            response.background = tasks
    else:
        raise TypeError(
            f"response must be a Starlette Response or BackgroundTasks, not {type(response).__name__}"
        )


# ---------------------------------------------------------------------- the session's sockets
async def schedule_close_all_session_ws(
    request: HTTPConnection, response: AfterResponse, *, code: int = CLOSE_DEFAULT, reason: str = ""
) -> None:
    """Close every socket of this session, on every node, once ``response`` has been sent.

    The id is read now, so the handler may clear the session or assign a new id next.
    The close is appended to the response's background tasks; a background you set
    earlier is kept and runs first. Under FastAPI, if your endpoint takes a
    ``background_tasks: BackgroundTasks`` parameter, pass that instead of a response:
    FastAPI attaches it only to responses that have no background of their own.
    """
    session_ws_id = await get_session_ws_id(request)
    if session_ws_id is not None:
        await schedule_close_all_ws(request, response, session_ws_id, code=code, reason=reason)
    else:
        validate_close(code, reason)


async def close_all_session_ws(
    connection: HTTPConnection,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "",
    exclude: Handle | str | None = None,
    confirm: bool = False,
    timeout: float | None = None,
) -> CloseReport:
    """Close every socket of this session on every node, now (``exclude`` spares one)."""
    session_ws_id = await get_session_ws_id(connection)
    if session_ws_id is None:
        validate_close(code, reason)
        return CloseReport(0)
    return await close_all_ws(
        connection, session_ws_id, code=code, reason=reason, exclude=exclude, confirm=confirm, timeout=timeout
    )


async def revoke_session_ws(
    connection: HTTPConnection,
    *,
    ttl: float | None = None,
    code: int = CLOSE_REVOKED,
    reason: str = "session revoked",
    confirm: bool = False,
    timeout: float | None = None,
) -> CloseReport:
    """Close every socket of this session everywhere (4401) and refuse its id for ``ttl``.

    New websockets of the session are refused with 403 until it gets a new id
    (``rotate_session_ws_id``/``new_session_ws_id``, e.g. when the user logs in again,
    or clear the session).
    """
    session_ws_id = await get_session_ws_id(connection)
    if session_ws_id is None:
        validate_close(code, reason)
        return CloseReport(0)
    return await revoke_ws(
        connection, session_ws_id, ttl=ttl, code=code, reason=reason, confirm=confirm, timeout=timeout
    )


async def rotate_session_ws_id(
    connection: HTTPConnection,
    response: AfterResponse | None = None,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "session id rotated",
    ttl: float | None = None,
) -> str:
    """Revoke the session's current id cluster-wide and give it a new one (returned).

    Do it when the user logs in or out: the old id's sockets close (with ``code``, 1000
    by default so this session's tabs reconnect with the new id) and the old id can
    never register again, so whoever learnt it cannot attach. With ``response``, the
    revoke runs once the response (carrying the new id's cookie) has been sent.
    """
    validate_close(code, reason)
    if ttl is not None and not ttl > 0:
        raise ValueError("ttl must be a positive number of seconds")
    if response is not None and not isinstance(response, Response | BackgroundTasks):
        raise TypeError(
            f"response must be a Starlette Response or BackgroundTasks, not {type(response).__name__}"
        )
    ids = get_id_provider(connection)
    registry = get_registry(connection)
    old = await ids.get_id(connection)
    new = await ids.new_id(connection)
    if old is not None and old != new:

        async def revoke_old() -> None:
            await registry.revoke(old, ttl=ttl, code=code, reason=reason)

        if response is None:
            await revoke_old()
        else:
            _after_response(response, revoke_old, "revoke of a rotated id")
    return new


async def send_session_ws(
    connection: HTTPConnection, data: str | bytes, *, exclude: Handle | str | None = None
) -> None:
    """Send ``data`` (text for ``str``, binary for ``bytes``) to every socket of this
    session, on every node."""
    session_ws_id = await get_session_ws_id(connection)
    if session_ws_id is not None:
        await send_ws(connection, session_ws_id, data, exclude=exclude)


async def count_session_ws(connection: HTTPConnection, *, timeout: float | None = None) -> Count:
    """The session's sockets cluster-wide, and whether every live node answered."""
    session_ws_id = await get_session_ws_id(connection)
    if session_ws_id is None:
        return Count(0, True)
    return await count_ws(connection, session_ws_id, timeout=timeout)


# ---------------------------------------------------------------------- any key
async def schedule_close_all_ws(
    request: HTTPConnection,
    response: AfterResponse,
    key: str,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "",
) -> None:
    """Close every socket of ``key`` on every node once ``response`` has been sent."""
    # Check the arguments here, in the handler, rather than later in the background.
    validate_close(code, reason)
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    registry = get_registry(request)

    async def close() -> None:
        await registry.close_all(key, code=code, reason=reason)

    _after_response(response, close, "close-all")


async def close_all_ws(
    connection: HTTPConnection,
    key: str,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "",
    exclude: Handle | str | None = None,
    confirm: bool = False,
    timeout: float | None = None,
) -> CloseReport:
    """Close every socket of ``key`` on every node, now."""
    return await get_registry(connection).close_all(
        key, code=code, reason=reason, exclude=exclude, confirm=confirm, timeout=timeout
    )


async def revoke_ws(
    connection: HTTPConnection,
    key: str,
    *,
    ttl: float | None = None,
    code: int = CLOSE_REVOKED,
    reason: str = "session revoked",
    confirm: bool = False,
    timeout: float | None = None,
) -> CloseReport:
    """Close every socket of ``key`` everywhere and refuse ``key`` for ``ttl`` seconds."""
    return await get_registry(connection).revoke(
        key, ttl=ttl, code=code, reason=reason, confirm=confirm, timeout=timeout
    )


async def send_ws(
    connection: HTTPConnection, key: str, data: str | bytes, *, exclude: Handle | str | None = None
) -> None:
    """Send ``data`` to every socket of ``key`` on every node."""
    await get_registry(connection).send_all(key, data, exclude=exclude)


async def count_ws(connection: HTTPConnection, key: str, *, timeout: float | None = None) -> Count:
    """Sockets of ``key`` cluster-wide, and whether every live node answered."""
    return await get_registry(connection).count(key, timeout=timeout)
