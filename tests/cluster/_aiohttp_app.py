"""The node app on aiohttp, through ``sessionws_aiohttp`` (see ``tests/cluster/node.py``)."""

from __future__ import annotations

import os
import secrets
import time

import aiohttp_session
import anyio
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from sessionws import BrokerUnavailableError, Handle, KeyRevokedError, SessionRegistry, SessionWSError
from sessionws_aiohttp import (
    add_keys_ws,
    broadcast_ws,
    close_all_ws,
    close_handle_ws,
    count_ws,
    get_registry,
    get_ws_handle,
    members_session_ws,
    members_ws,
    new_session_ws_id,
    remove_keys_ws,
    revoke_session_ws,
    revoke_ws,
    rotate_session_ws_id,
    schedule_close_all_session_ws,
    send_to_ws,
    send_ws,
    session_ws,
    session_ws_middleware,
    set_data_ws,
    setup,
)
from tests.cluster._app_common import (
    USER_KEY,
    MembershipLog,
    NodeConfig,
    delivered_json,
    members_json,
    parse_data,
    report_json,
    send_report_json,
)

__all__ = ("COOKIE_NAME", "build_aiohttp_app")

#: aiohttp-session's ``SimpleCookieStorage``: readable JSON in a cookie (tests only).
COOKIE_NAME = "AIOHTTP_SESSION"

CONFIG = web.AppKey("config", NodeConfig)
RAW_SOCKETS = web.AppKey("raw_sockets", dict[str, web.WebSocketResponse])
#: This node's open sessionws sockets: handle id -> the request of the socket's handler
#: (the socket verbs ``add_keys_ws`` & co. take that request).
SOCKETS = web.AppKey("sockets", dict[str, web.Request])
EVENTS = web.AppKey("events", MembershipLog)


def _name(request: web.Request) -> str:
    return request.app[CONFIG].name


def _key(request: web.Request) -> str:
    key = request.query.get("key", "")
    if not key:
        raise web.HTTPBadRequest(text="give ?key=")
    return key


def _handle_id(request: web.Request) -> str:
    handle_id = request.query.get("handle", "")
    if not handle_id:
        raise web.HTTPBadRequest(text="give ?handle= (the id /ws sent)")
    return handle_id


def _socket_request(request: web.Request) -> web.Request:
    """The handler's request of the socket ``?handle=`` names, if this node holds it."""
    socket_request = request.app[SOCKETS].get(_handle_id(request))
    if socket_request is None:
        raise web.HTTPNotFound(text="no such socket on this node: ask the node that sent its handle")
    return socket_request


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "") in ("1", "true", "yes")


def _seconds(request: web.Request, name: str) -> float | None:
    value = request.query.get(name)
    return float(value) if value else None


async def _user(request: web.Request) -> str | None:
    user = (await aiohttp_session.get_session(request)).get(USER_KEY)
    return user if isinstance(user, str) and user else None


async def health(request: web.Request) -> web.Response:
    registry = get_registry(request)
    body = {
        "name": _name(request),
        "framework": "aiohttp",
        "node": registry.node_id,
        "healthy": registry.healthy,
        "live_nodes": sorted(registry.live_nodes()),
        "broker": registry.stats()["broker"],
        "silent_nodes": registry.stats()["silent_members"],
        "pid": os.getpid(),
    }
    return web.json_response(body, status=200 if registry.healthy else 503)


async def home(request: web.Request) -> web.Response:
    """The page that opens the websocket: ``session_ws_middleware`` gave it an id."""
    session = await aiohttp_session.get_session(request)
    return web.json_response({"user": session.get(USER_KEY)})


async def login(request: web.Request) -> web.Response:
    user = request.query.get("user", "")
    if not user:
        raise web.HTTPBadRequest(text="give ?user=")
    session = await aiohttp_session.new_session(request)
    session[USER_KEY] = user
    return web.json_response({"session": await new_session_ws_id(request), "user": user})


async def websocket(request: web.Request) -> web.StreamResponse:
    user = await _user(request)
    data = parse_data(request.query.get("data"))
    async with session_ws(request, keys=[f"user:{user}"] if user else [], data=data) as ws:
        handle = get_ws_handle(ws)
        request.app[SOCKETS][handle.id] = request
        try:
            if not handle.closing:  # registered, unless a close or revoke raced it
                await ws.send_json({"handle": handle.id, "node": _name(request)})
            async for message in ws:
                if message.type == WSMsgType.TEXT and message.data == "ping":
                    await ws.send_str("pong")
        finally:
            request.app[SOCKETS].pop(handle.id, None)
    return ws


async def join(request: web.Request) -> web.Response:
    """Add ``?key=`` to the socket ``?handle=`` (on the node that holds it)."""
    await add_keys_ws(_socket_request(request), _key(request))
    return web.json_response({"joined": True})


async def leave(request: web.Request) -> web.Response:
    await remove_keys_ws(_socket_request(request), _key(request))
    return web.json_response({"left": True})


async def set_data(request: web.Request) -> web.Response:
    await set_data_ws(_socket_request(request), parse_data(request.query.get("data")))
    return web.json_response({"data": True})


async def logout(request: web.Request) -> web.Response:
    """Close (or with ``?revoke=1`` revoke) the session's sockets everywhere; new session."""
    response = web.json_response({"logged_out": True})
    if _flag(request, "revoke"):
        await revoke_session_ws(request)
    else:
        await schedule_close_all_session_ws(request, response)  # after the response is out
    await aiohttp_session.new_session(request)
    await new_session_ws_id(request)
    return response


async def logout_others(request: web.Request) -> web.Response:
    """ "Log out my other devices": every socket of the user but the caller's own."""
    user = await _user(request)
    handle = request.query.get("handle", "")
    if user is None or not handle:
        raise web.HTTPBadRequest(text="log in first and give ?handle= (the id /ws sent)")
    report = await close_all_ws(request, f"user:{user}", exclude=handle, confirm=_flag(request, "confirm"))
    return web.json_response(report_json(report))


async def close(request: web.Request) -> web.Response:
    key = _key(request)
    called_at = time.monotonic()
    try:
        # The registry itself: the adapter's close_all_ws has no strict= (yet).
        report = await get_registry(request).close_all(
            key,
            code=int(request.query.get("code", "1000")),
            exclude=request.query.get("exclude") or None,
            confirm=_flag(request, "confirm"),
            timeout=_seconds(request, "timeout"),
            strict=_flag(request, "strict"),
        )
    except BrokerUnavailableError as error:
        return web.json_response({"error": str(error)}, status=503)
    return web.json_response({**report_json(report), "called_at": called_at})


async def revoke(request: web.Request) -> web.Response:
    report = await revoke_ws(
        request, _key(request), ttl=_seconds(request, "ttl"), confirm=_flag(request, "confirm")
    )
    return web.json_response(report_json(report))


async def rotate(request: web.Request) -> web.Response:
    """Revoke the session's id everywhere and give the session a new one.

    ``queued`` says whether the outbox held anything right after the revoke: the rotate
    does not return the revoke's report, and a revoke that waits there dies with the node.
    """
    session = await rotate_session_ws_id(request, ttl=_seconds(request, "ttl"))
    return web.json_response({"session": session, "queued": get_registry(request).stats()["outbox"] > 0})


async def send(request: web.Request) -> web.Response:
    report = await send_ws(
        request,
        _key(request),
        request.query.get("data", ""),
        exclude=request.query.get("exclude") or None,
        confirm=_flag(request, "confirm"),
        timeout=_seconds(request, "timeout"),
    )
    return web.json_response({"sent": True, **send_report_json(report)})


async def send_to(request: web.Request) -> web.Response:
    delivered = await send_to_ws(
        request, _handle_id(request), request.query.get("data", ""), timeout=_seconds(request, "timeout")
    )
    return web.json_response(delivered_json(delivered))


async def close_handle(request: web.Request) -> web.Response:
    delivered = await close_handle_ws(
        request,
        _handle_id(request),
        code=int(request.query.get("code", "1000")),
        reason=request.query.get("reason", ""),
        timeout=_seconds(request, "timeout"),
    )
    return web.json_response(delivered_json(delivered))


async def broadcast(request: web.Request) -> web.Response:
    report = await broadcast_ws(
        request, request.query.get("data", ""), exclude=request.query.get("exclude") or None
    )
    return web.json_response(send_report_json(report))


async def members(request: web.Request) -> web.Response:
    """The sockets of ``?key=`` cluster-wide; without a key, the caller's session's."""
    limit = int(request.query["limit"]) if request.query.get("limit") else None
    timeout = _seconds(request, "timeout")
    if request.query.get("key"):
        listing = await members_ws(request, _key(request), limit=limit, timeout=timeout)
    else:
        listing = await members_session_ws(request, limit=limit, timeout=timeout)
    return web.json_response(members_json(listing))


async def count(request: web.Request) -> web.Response:
    total, complete = await count_ws(request, _key(request), timeout=_seconds(request, "timeout"))
    return web.json_response({"total": total, "complete": complete})


async def membership_events(request: web.Request) -> web.Response:
    log = request.app.get(EVENTS)
    if log is None:
        raise web.HTTPNotFound(text="start the node with --record-events")
    return web.json_response({"node": get_registry(request).node_id, "events": log.events})


async def stats(request: web.Request) -> web.Response:
    registry = get_registry(request)
    return web.json_response({**registry.stats(), "local_keys": len(registry.local_keys())})


# ---------------------------------------------------------------------- for the benchmark
async def raw_websocket(request: web.Request) -> web.StreamResponse:
    """A websocket without sessionws: the floor of one websocket close."""
    sockets = request.app[RAW_SOCKETS]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    token = secrets.token_hex(8)
    sockets[token] = ws
    try:
        await ws.send_json({"id": token})
        async for _ in ws:
            pass
    finally:
        sockets.pop(token, None)
    return ws


async def raw_close(request: web.Request) -> web.Response:
    """Close one raw socket (``?id=``), or every raw socket of the node at once (``?id=all``)."""
    sockets = request.app[RAW_SOCKETS]
    token = request.query.get("id", "")
    chosen = list(sockets.values()) if token == "all" else [sockets[token]] if token in sockets else []
    if not chosen:
        raise web.HTTPNotFound(text="no such raw socket")
    called_at = time.monotonic()
    async with anyio.create_task_group() as tasks:
        for ws in chosen:
            tasks.start_soon(ws.close)
    return web.json_response({"called_at": called_at, "closed": len(chosen)})


class _Idle:
    """A connection that costs nothing to close or send to (register throughput)."""

    async def close(self, code: int, reason: str) -> None:
        return None

    async def send(self, data: str | bytes) -> None:
        return None


async def bench_register(request: web.Request) -> web.Response:
    """Register ``n`` connections under new keys, ``concurrency`` at a time: the rate."""
    registry = get_registry(request)
    total = int(request.query.get("n", "1000"))
    concurrency = int(request.query.get("concurrency", "100"))
    prefix = secrets.token_hex(6)
    handles: list[Handle] = []

    async def register(index: int) -> None:
        handles.append(await registry.register(_Idle(), [f"bench:{prefix}:{index}"]))

    start = time.perf_counter()
    for first in range(0, total, concurrency):
        async with anyio.create_task_group() as tasks:
            for index in range(first, min(total, first + concurrency)):
                tasks.start_soon(register, index)
    seconds = time.perf_counter() - start
    for handle in handles:
        await registry.unregister(handle)
    return web.json_response({"n": total, "seconds": seconds, "per_second": total / seconds})


# ---------------------------------------------------------------------- the app
@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (ValueError, TypeError, SessionWSError) as error:
        status = 403 if isinstance(error, KeyRevokedError) else 400
        return web.json_response({"error": f"{type(error).__name__}: {error}"}, status=status)


def build_aiohttp_app(
    config: NodeConfig, registry: SessionRegistry, events: MembershipLog | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[
            aiohttp_session.session_middleware(aiohttp_session.SimpleCookieStorage(cookie_name=COOKIE_NAME)),
            session_ws_middleware(paths=["/"]),
            _errors,
        ]
    )
    app[CONFIG] = config
    app[RAW_SOCKETS] = {}
    app[SOCKETS] = {}
    if events is not None:
        app[EVENTS] = events
    setup(app, registry)
    app.add_routes(
        [
            web.get("/", home),
            web.get("/health", health),
            web.post("/login", login),
            web.get("/ws", websocket),
            web.post("/logout", logout),
            web.post("/logout-others", logout_others),
            web.post("/close", close),
            web.post("/revoke", revoke),
            web.post("/rotate", rotate),
            web.post("/send", send),
            web.post("/join", join),
            web.post("/leave", leave),
            web.post("/data", set_data),
            web.get("/members", members),
            web.post("/send-to", send_to),
            web.post("/close-handle", close_handle),
            web.post("/broadcast", broadcast),
            web.get("/count", count),
            web.get("/stats", stats),
            web.get("/events", membership_events),
            web.get("/raw-ws", raw_websocket),
            web.post("/raw-close", raw_close),
            web.post("/bench/register", bench_register),
        ]
    )
    return app
