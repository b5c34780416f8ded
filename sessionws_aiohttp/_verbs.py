"""The verbs a handler calls: the session-ws id, and closing, revoking, messaging,
counting and listing websockets — of the request's session (``*_session_ws``), of any
key such as a user or a room (``*_ws``), of one socket anywhere (by its handle id), or
of every socket (``broadcast_ws``).

Thin wrappers: the behaviour lives once in :mod:`sessionws._verbs`, shared with the
Starlette adapter.
"""

from __future__ import annotations

from aiohttp import web

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

from ._app import AppState, ensure_id, new_id, state_of
from ._session import note_id_changed

__all__ = (
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

Target = web.Request | web.Application


def _id_getter(state: AppState, request: web.Request) -> verbs.IdGetter:
    return lambda: state.id_provider.get_id(request)


def _scheduler(state: AppState, request: web.Request, response: web.StreamResponse) -> verbs.Schedule:
    """Work to run once ``response`` is written out; the response is marked not
    keep-alive, so that is at once after the handler returns it."""
    if not isinstance(response, web.StreamResponse):
        raise TypeError(f"response must be an aiohttp response, not {type(response).__name__}")

    def schedule(work: verbs.Work, what: str) -> None:
        response.force_close()
        state.lifetime.after_response(request, work, what)

    return schedule


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
    """Remove the id from the session (a no-op when it has none)."""
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
    state = state_of(request)
    await verbs.schedule_close_all_session(
        state.registry,
        _id_getter(state, request),
        _scheduler(state, request, response),
        code=code,
        reason=reason,
    )


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
    state = state_of(request)
    return await verbs.close_all_session(
        state.registry,
        _id_getter(state, request),
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
    state = state_of(request)
    return await verbs.revoke_session(
        state.registry,
        _id_getter(state, request),
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
    state = state_of(request)
    schedule = None if response is None else _scheduler(state, request, response)
    return await verbs.rotate_id(
        state.registry,
        _id_getter(state, request),
        lambda: new_id(request),
        schedule,
        code=code,
        reason=reason,
        ttl=ttl,
    )


async def send_session_ws(
    request: web.Request,
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
    state = state_of(request)
    return await verbs.send_session(
        state.registry,
        _id_getter(state, request),
        data,
        exclude=exclude,
        confirm=confirm,
        timeout=timeout,
        strict=strict,
    )


async def count_session_ws(request: web.Request, *, timeout: float | None = None) -> Count:
    """The session's sockets cluster-wide, and whether every live node answered."""
    state = state_of(request)
    return await verbs.count_session(state.registry, _id_getter(state, request), timeout=timeout)


async def members_session_ws(
    request: web.Request, *, limit: int | None = None, timeout: float | None = None
) -> Members:
    """Every socket of this session cluster-wide (handle id, node, keys, data): the
    session's open tabs and devices."""
    state = state_of(request)
    return await verbs.members_session(
        state.registry, _id_getter(state, request), limit=limit, timeout=timeout
    )


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
    state = state_of(request)
    verbs.schedule_close_all(
        state.registry, _scheduler(state, request, response), key, code=code, reason=reason
    )


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
    target: Target,
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
    return await state_of(target).registry.send_all(
        key, data, exclude=exclude, confirm=confirm, timeout=timeout, strict=strict
    )


async def count_ws(target: Target, key: str, *, timeout: float | None = None) -> Count:
    """Sockets of ``key`` cluster-wide, and whether every live node answered."""
    return await state_of(target).registry.count(key, timeout=timeout)


async def members_ws(
    target: Target, key: str, *, limit: int | None = None, timeout: float | None = None
) -> Members:
    """Presence: every socket of ``key`` cluster-wide (handle id, node, keys, data), and
    whether every live node answered; ``limit`` caps how many each node lists. A
    socket's keys include its session's id: never show ``Member.keys`` to other users."""
    return await state_of(target).registry.members(key, limit=limit, timeout=timeout)


# ---------------------------------------------------------------------- one socket, or all
async def send_to_ws(
    target: Target, handle_id: str, data: str | bytes, *, timeout: float | None = None, strict: bool = False
) -> Delivered:
    """Send ``data`` to one socket, wherever it is, by its handle id
    (``get_ws_handle(ws).id``, or ``Member.handle_id``): ``found`` says whether the
    node holding it found it. A string that is no handle id raises ``ValueError``."""
    return await state_of(target).registry.send_to(handle_id, data, timeout=timeout, strict=strict)


async def close_handle_ws(
    target: Target,
    handle_id: str,
    *,
    code: int = CLOSE_DEFAULT,
    reason: str = "",
    timeout: float | None = None,
    strict: bool = False,
) -> Delivered:
    """Close one socket, wherever it is, by its handle id (a moderator's kick)."""
    return await state_of(target).registry.close_handle(
        handle_id, code=code, reason=reason, timeout=timeout, strict=strict
    )


async def broadcast_ws(
    target: Target, data: str | bytes, *, exclude: Handle | str | None = None, strict: bool = False
) -> SendReport:
    """Send ``data`` to every socket of every node, in one broker message; the report
    counts this node's sockets."""
    return await state_of(target).registry.broadcast(data, exclude=exclude, strict=strict)
