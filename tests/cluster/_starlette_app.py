"""The node app on Starlette (under uvicorn), through ``sessionws_starlette``.

It serves the same endpoints as the aiohttp node (``/rotate``, ``/events`` and the
benchmark's excepted; ``test_node_apps.py`` holds them to it),
and reads and writes the *same session cookie*: aiohttp-session's ``SimpleCookieStorage``
format (``AIOHTTP_SESSION`` = JSON ``{"created": ..., "session": {...}}``). So a browser
logged in on an aiohttp node opens websockets on a Starlette node of the same cluster,
as behind a load balancer in front of a mixed fleet. Readable cookies: tests only.
"""

from __future__ import annotations

import json
import os
import time
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from sessionws import BrokerUnavailableError, KeyRevokedError, SessionRegistry, SessionWSError
from sessionws_starlette import (
    SessionWSMiddleware,
    add_keys_ws,
    broadcast_ws,
    close_all_ws,
    close_handle_ws,
    count_ws,
    get_registry,
    members_session_ws,
    members_ws,
    new_session_ws_id,
    remove_keys_ws,
    revoke_session_ws,
    revoke_ws,
    schedule_close_all_session_ws,
    send_to_ws,
    send_ws,
    session_ws,
    sessionws_lifespan,
    set_data_ws,
)
from tests.cluster._app_common import (
    USER_KEY,
    NodeConfig,
    delivered_json,
    members_json,
    parse_data,
    report_json,
    send_report_json,
)

__all__ = ("SimpleCookieSessionMiddleware", "build_starlette_app")

COOKIE_NAME = "AIOHTTP_SESSION"


class SimpleCookieSessionMiddleware:
    """``scope["session"]`` from (and back to) an aiohttp-session ``SimpleCookieStorage`` cookie.

    Pure ASGI, like Starlette's ``SessionMiddleware``: the session is loaded before the
    app runs and, when it changed, written back on the HTTP response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        session = _load(scope)
        scope["session"] = session
        loaded = json.dumps(session, sort_keys=True)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                current = scope["session"]
                if json.dumps(current, sort_keys=True) != loaded:
                    cookie: SimpleCookie = SimpleCookie()
                    cookie[COOKIE_NAME] = json.dumps({"created": int(time.time()), "session": current})
                    cookie[COOKIE_NAME]["path"] = "/"
                    cookie[COOKIE_NAME]["httponly"] = True
                    MutableHeaders(scope=message).append("set-cookie", cookie.output(header="").strip())
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _load(scope: Scope) -> dict[str, Any]:
    header = next((value for name, value in scope["headers"] if name == b"cookie"), b"")
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(header.decode("latin-1"))
        morsel = cookie.get(COOKIE_NAME)
        data = json.loads(morsel.value) if morsel is not None else {}
    except (CookieError, ValueError):
        return {}
    session = data.get("session") if isinstance(data, dict) else None
    return dict(session) if isinstance(session, dict) else {}


def _config(connection: Request | WebSocket) -> NodeConfig:
    config: NodeConfig = connection.app.state.config
    return config


def _key(request: Request) -> str:
    key = request.query_params.get("key", "")
    if not key:
        raise ValueError("give ?key=")
    return key


def _handle_id(request: Request) -> str:
    handle_id = request.query_params.get("handle", "")
    if not handle_id:
        raise ValueError("give ?handle= (the id /ws sent)")
    return handle_id


def _sockets(connection: Request | WebSocket) -> dict[str, WebSocket]:
    """This node's open sessionws sockets by handle id (the socket verbs take the websocket)."""
    sockets: dict[str, WebSocket] = connection.app.state.sockets
    return sockets


def _socket(request: Request) -> WebSocket:
    """The websocket ``?handle=`` names, if this node holds it."""
    websocket = _sockets(request).get(_handle_id(request))
    if websocket is None:
        raise HTTPException(404, "no such socket on this node: ask the node that sent its handle")
    return websocket


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "") in ("1", "true", "yes")


def _seconds(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    return float(value) if value else None


def _registry(connection: Request | WebSocket) -> SessionRegistry:
    registry = get_registry(connection)
    if not isinstance(registry, SessionRegistry):
        raise TypeError("the node app runs a SessionRegistry")
    return registry


async def health(request: Request) -> JSONResponse:
    registry = _registry(request)
    body = {
        "name": _config(request).name,
        "framework": "starlette",
        "node": registry.node_id,
        "healthy": registry.healthy,
        "live_nodes": sorted(registry.live_nodes()),
        "broker": registry.stats()["broker"],
        "silent_nodes": registry.stats()["silent_members"],
        "pid": os.getpid(),
    }
    return JSONResponse(body, status_code=200 if registry.healthy else 503)


async def home(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.session.get(USER_KEY)})


async def login(request: Request) -> JSONResponse:
    user = request.query_params.get("user", "")
    if not user:
        raise ValueError("give ?user=")
    request.session.clear()
    request.session[USER_KEY] = user
    return JSONResponse({"session": await new_session_ws_id(request), "user": user})


async def websocket(ws: WebSocket) -> None:
    user = ws.session.get(USER_KEY)
    keys = [f"user:{user}"] if isinstance(user, str) and user else []
    async with session_ws(ws, keys, data=parse_data(ws.query_params.get("data"))) as handle:
        _sockets(ws)[handle.id] = ws
        try:
            if not handle.closing:  # registered, unless a close or revoke raced it
                await ws.send_text(json.dumps({"handle": handle.id, "node": _config(ws).name}))
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") == "ping" and not handle.closing:
                    await ws.send_text("pong")
        finally:
            _sockets(ws).pop(handle.id, None)


async def join(request: Request) -> JSONResponse:
    """Add ``?key=`` to the socket ``?handle=`` (on the node that holds it)."""
    await add_keys_ws(_socket(request), _key(request))
    return JSONResponse({"joined": True})


async def leave(request: Request) -> JSONResponse:
    await remove_keys_ws(_socket(request), _key(request))
    return JSONResponse({"left": True})


async def set_data(request: Request) -> JSONResponse:
    await set_data_ws(_socket(request), parse_data(request.query_params.get("data")))
    return JSONResponse({"data": True})


async def logout(request: Request) -> JSONResponse:
    response = JSONResponse({"logged_out": True})
    if _flag(request, "revoke"):
        await revoke_session_ws(request)
    else:
        await schedule_close_all_session_ws(request, response)  # after the response is out
    request.session.clear()
    await new_session_ws_id(request)
    return response


async def logout_others(request: Request) -> JSONResponse:
    user = request.session.get(USER_KEY)
    handle = request.query_params.get("handle", "")
    if not isinstance(user, str) or not user or not handle:
        raise ValueError("log in first and give ?handle= (the id /ws sent)")
    report = await close_all_ws(request, f"user:{user}", exclude=handle, confirm=_flag(request, "confirm"))
    return JSONResponse(report_json(report))


async def close(request: Request) -> JSONResponse:
    key = _key(request)
    called_at = time.monotonic()
    try:
        report = await _registry(request).close_all(
            key,
            code=int(request.query_params.get("code", "1000")),
            exclude=request.query_params.get("exclude") or None,
            confirm=_flag(request, "confirm"),
            timeout=_seconds(request, "timeout"),
            strict=_flag(request, "strict"),
        )
    except BrokerUnavailableError as error:
        return JSONResponse({"error": str(error)}, status_code=503)
    return JSONResponse({**report_json(report), "called_at": called_at})


async def revoke(request: Request) -> JSONResponse:
    report = await revoke_ws(
        request, _key(request), ttl=_seconds(request, "ttl"), confirm=_flag(request, "confirm")
    )
    return JSONResponse(report_json(report))


async def send(request: Request) -> JSONResponse:
    report = await send_ws(
        request,
        _key(request),
        request.query_params.get("data", ""),
        exclude=request.query_params.get("exclude") or None,
        confirm=_flag(request, "confirm"),
        timeout=_seconds(request, "timeout"),
    )
    return JSONResponse({"sent": True, **send_report_json(report)})


async def send_to(request: Request) -> JSONResponse:
    delivered = await send_to_ws(
        request,
        _handle_id(request),
        request.query_params.get("data", ""),
        timeout=_seconds(request, "timeout"),
    )
    return JSONResponse(delivered_json(delivered))


async def close_handle(request: Request) -> JSONResponse:
    delivered = await close_handle_ws(
        request,
        _handle_id(request),
        code=int(request.query_params.get("code", "1000")),
        reason=request.query_params.get("reason", ""),
        timeout=_seconds(request, "timeout"),
    )
    return JSONResponse(delivered_json(delivered))


async def broadcast(request: Request) -> JSONResponse:
    report = await broadcast_ws(
        request, request.query_params.get("data", ""), exclude=request.query_params.get("exclude") or None
    )
    return JSONResponse(send_report_json(report))


async def members(request: Request) -> JSONResponse:
    """The sockets of ``?key=`` cluster-wide; without a key, the caller's session's."""
    limit = int(request.query_params["limit"]) if request.query_params.get("limit") else None
    timeout = _seconds(request, "timeout")
    if request.query_params.get("key"):
        listing = await members_ws(request, _key(request), limit=limit, timeout=timeout)
    else:
        listing = await members_session_ws(request, limit=limit, timeout=timeout)
    return JSONResponse(members_json(listing))


async def count(request: Request) -> JSONResponse:
    total, complete = await count_ws(request, _key(request), timeout=_seconds(request, "timeout"))
    return JSONResponse({"total": total, "complete": complete})


async def stats(request: Request) -> JSONResponse:
    registry = _registry(request)
    return JSONResponse({**registry.stats(), "local_keys": len(registry.local_keys())})


async def _bad_request(request: Request, error: Exception) -> JSONResponse:
    status = 403 if isinstance(error, KeyRevokedError) else 400
    return JSONResponse({"error": f"{type(error).__name__}: {error}"}, status_code=status)


def build_starlette_app(config: NodeConfig, registry: SessionRegistry) -> Starlette:
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/health", health),
            Route("/login", login, methods=["POST"]),
            WebSocketRoute("/ws", websocket),
            Route("/logout", logout, methods=["POST"]),
            Route("/logout-others", logout_others, methods=["POST"]),
            Route("/close", close, methods=["POST"]),
            Route("/revoke", revoke, methods=["POST"]),
            Route("/send", send, methods=["POST"]),
            Route("/join", join, methods=["POST"]),
            Route("/leave", leave, methods=["POST"]),
            Route("/data", set_data, methods=["POST"]),
            Route("/members", members),
            Route("/send-to", send_to, methods=["POST"]),
            Route("/close-handle", close_handle, methods=["POST"]),
            Route("/broadcast", broadcast, methods=["POST"]),
            Route("/count", count),
            Route("/stats", stats),
        ],
        middleware=[
            Middleware(SimpleCookieSessionMiddleware),  # outside: loads and saves the session
            Middleware(SessionWSMiddleware, paths=["/"]),  # inside: the page mints the id
        ],
        exception_handlers={ValueError: _bad_request, TypeError: _bad_request, SessionWSError: _bad_request},
        lifespan=sessionws_lifespan(registry),
    )
    app.state.config = config
    app.state.sockets = {}
    return app
