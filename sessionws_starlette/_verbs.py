"""The verbs a handler calls: the session-ws id, and closing, revoking, messaging,
counting and listing websockets — of the connection's session (``*_session_ws``), of any
key such as a user or a room (``*_ws``), of one socket anywhere (by its handle id), or
of every socket (``broadcast_ws``).

Each takes a :class:`~starlette.requests.HTTPConnection` (a ``Request`` or a
``WebSocket``), so the id helpers double as FastAPI dependencies. Thin wrappers: the
behaviour lives once in :mod:`sessionws._verbs`, shared with the aiohttp adapter.
"""

from __future__ import annotations

import logging

from starlette.background import BackgroundTasks
from starlette.requests import HTTPConnection
from starlette.responses import Response

from sessionws import (
    CLOSE_DEFAULT,
    CLOSE_REVOKED,
    CloseReport,
    Count,
    Delivered,
    Handle,
    Members,
    SendReport,
)
from sessionws import _verbs as verbs
from sessionws_starlette._state import get_id_provider, get_registry

__all__ = (
    "AfterResponse",
    "broadcast_ws",
    "close_all_session_ws",
    "close_all_ws",
    "close_handle_ws",
    "count_session_ws",
    "count_ws",
    "delete_session_ws_id",
    "ensure_session_ws_id",
    "get_session_ws_id",
    "members_session_ws",
    "members_ws",
    "new_session_ws_id",
    "revoke_session_ws",
    "revoke_ws",
    "rotate_session_ws_id",
    "schedule_close_all_session_ws",
    "schedule_close_all_ws",
    "send_session_ws",
    "send_to_ws",
    "send_ws",
)

logger = logging.getLogger("sessionws.starlette")

#: Where work "after the response" goes: a response's background, or FastAPI's
#: ``BackgroundTasks`` parameter.
AfterResponse = Response | BackgroundTasks


def _id_getter(connection: HTTPConnection) -> verbs.IdGetter:
    return lambda: get_id_provider(connection).get_id(connection)


def _scheduler(response: AfterResponse) -> verbs.Schedule:
    """Work appended to the response's background tasks, keeping any already there."""
    if not isinstance(response, Response | BackgroundTasks):
        raise TypeError(
            f"response must be a Starlette Response or BackgroundTasks, not {type(response).__name__}"
        )

    def schedule(work: verbs.Work, what: str) -> None:
        async def run() -> None:
            try:
                await work()
            except Exception:
                logger.exception("the %s scheduled after a response failed", what)

        if isinstance(response, BackgroundTasks):
            response.add_task(run)
            return
        existing = response.background
        if isinstance(existing, BackgroundTasks):
            existing.add_task(run)
        else:
            tasks = BackgroundTasks([existing] if existing is not None else None)
            tasks.add_task(run)
            response.background = tasks

    return schedule


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
    await verbs.schedule_close_all_session(
        get_registry(request),
        _id_getter(request),
        _scheduler(response),
        code=code,
        reason=reason,
    )


async def close_all_session_ws(
    connection: HTTPConnection,
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
    return await verbs.close_all_session(
        get_registry(connection),
        _id_getter(connection),
        code=code,
        reason=reason,
        exclude=exclude,
        confirm=confirm,
        timeout=timeout,
        strict=strict,
    )


async def revoke_session_ws(
    connection: HTTPConnection,
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
    (``rotate_session_ws_id``/``new_session_ws_id``, e.g. when the user logs in again,
    or clear the session).
    """
    return await verbs.revoke_session(
        get_registry(connection),
        _id_getter(connection),
        ttl=ttl,
        code=code,
        reason=reason,
        confirm=confirm,
        timeout=timeout,
        strict=strict,
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

    Do it when the user logs in or out: the old id's sockets close (with ``code``,
    1000 by default so this session's tabs reconnect with the new id) and the old
    id can never register again, so whoever learnt it cannot attach. With
    ``response`` (a response or ``BackgroundTasks``), the revoke runs once the response
    (carrying the new id's cookie) has been sent.
    """
    schedule = None if response is None else _scheduler(response)
    return await verbs.rotate_id(
        get_registry(connection),
        _id_getter(connection),
        lambda: get_id_provider(connection).new_id(connection),
        schedule,
        code=code,
        reason=reason,
        ttl=ttl,
    )


async def send_session_ws(
    connection: HTTPConnection,
    data: str | bytes,
    *,
    exclude: Handle | str | None = None,
    confirm: bool = False,
    timeout: float | None = None,
    strict: bool = False,
) -> SendReport:
    """Send ``data`` (text for ``str``, binary for ``bytes``) to every socket of this
    session, on every node. With ``confirm=True``, waits up to ``timeout`` for every
    live node to say for how many sockets it queued the message."""
    return await verbs.send_session(
        get_registry(connection),
        _id_getter(connection),
        data,
        exclude=exclude,
        confirm=confirm,
        timeout=timeout,
        strict=strict,
    )


async def count_session_ws(connection: HTTPConnection, *, timeout: float | None = None) -> Count:
    """The session's sockets cluster-wide, and whether every live node answered."""
    return await verbs.count_session(get_registry(connection), _id_getter(connection), timeout=timeout)


async def members_session_ws(
    connection: HTTPConnection, *, limit: int | None = None, timeout: float | None = None
) -> Members:
    """Every socket of this session cluster-wide (handle id, node, keys, data): the
    session's open tabs and devices."""
    return await verbs.members_session(
        get_registry(connection), _id_getter(connection), limit=limit, timeout=timeout
    )


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
    verbs.schedule_close_all(get_registry(request), _scheduler(response), key, code=code, reason=reason)


async def close_all_ws(
    connection: HTTPConnection,
    key: str,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "",
    exclude: Handle | str | None = None,
    confirm: bool = False,
    timeout: float | None = None,
    strict: bool = False,
) -> CloseReport:
    """Close every socket of ``key`` on every node."""
    return await get_registry(connection).close_all(
        key, code=code, reason=reason, exclude=exclude, confirm=confirm, timeout=timeout, strict=strict
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
    strict: bool = False,
) -> CloseReport:
    """Close every socket of ``key`` everywhere and refuse ``key`` for ``ttl`` seconds."""
    return await get_registry(connection).revoke(
        key, ttl=ttl, code=code, reason=reason, confirm=confirm, timeout=timeout, strict=strict
    )


async def send_ws(
    connection: HTTPConnection,
    key: str,
    data: str | bytes,
    *,
    exclude: Handle | str | None = None,
    confirm: bool = False,
    timeout: float | None = None,
    strict: bool = False,
) -> SendReport:
    """Send ``data`` to every socket of ``key`` on every node; with ``confirm=True``, the
    report says for how many sockets each node queued it, and whether all answered."""
    return await get_registry(connection).send_all(
        key, data, exclude=exclude, confirm=confirm, timeout=timeout, strict=strict
    )


async def count_ws(connection: HTTPConnection, key: str, *, timeout: float | None = None) -> Count:
    """Sockets of ``key`` cluster-wide, and whether every live node answered."""
    return await get_registry(connection).count(key, timeout=timeout)


async def members_ws(
    connection: HTTPConnection, key: str, *, limit: int | None = None, timeout: float | None = None
) -> Members:
    """Presence: every socket of ``key`` cluster-wide (handle id, node, keys, data), and
    whether every live node answered; ``limit`` caps how many each node lists. A
    socket's keys include its session's id: never show ``Member.keys`` to other users."""
    return await get_registry(connection).members(key, limit=limit, timeout=timeout)


# ---------------------------------------------------------------------- one socket, or all
async def send_to_ws(
    connection: HTTPConnection,
    handle_id: str,
    data: str | bytes,
    *,
    timeout: float | None = None,
    strict: bool = False,
) -> Delivered:
    """Send ``data`` to one socket, wherever it is, by its handle id
    (``handle.id``, or ``Member.handle_id``): ``found`` says whether the
    node holding it found it. A string that is no handle id raises ``ValueError``."""
    return await get_registry(connection).send_to(handle_id, data, timeout=timeout, strict=strict)


async def close_handle_ws(
    connection: HTTPConnection,
    handle_id: str,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "",
    timeout: float | None = None,
    strict: bool = False,
) -> Delivered:
    """Close one socket, wherever it is, by its handle id (a moderator's kick)."""
    return await get_registry(connection).close_handle(
        handle_id, code=code, reason=reason, timeout=timeout, strict=strict
    )


async def broadcast_ws(
    connection: HTTPConnection,
    data: str | bytes,
    *,
    exclude: Handle | str | None = None,
    strict: bool = False,
) -> SendReport:
    """Send ``data`` to every socket of every node, in one broker message; the report
    counts this node's sockets."""
    return await get_registry(connection).broadcast(data, exclude=exclude, strict=strict)
