"""A small Starlette app using every verb of the adapter, as the tests drive it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import starlette.middleware.sessions
from starlette.applications import Starlette
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionws import SessionRegistry
from sessionws_starlette import (
    EPHEMERAL_SCOPE_KEY,
    SessionWSMiddleware,
    close_all_ws,
    count_session_ws,
    count_ws,
    get_registry,
    get_session_ws_id,
    revoke_session_ws,
    rotate_session_ws_id,
    schedule_close_all_session_ws,
    send_session_ws,
    send_ws,
    session_ws,
    sessionws_lifespan,
)
from tests._helpers import FAST

SECRET = "test-secret-shared-by-every-node"


def session_of(values: dict[str, Any]) -> dict[str, Any]:
    """What ``SessionMiddleware`` puts in ``scope["session"]``: a ``Session`` from Starlette 1.0
    on, a plain dict before (the lowest-versions run tests the oldest Starlette allowed)."""
    factory = getattr(starlette.middleware.sessions, "Session", dict)
    session: dict[str, Any] = factory(values)
    return session


def fast_registry(url: str, node_id: str) -> SessionRegistry:
    return SessionRegistry(url, node_id=node_id, **FAST)


async def page(request: Request) -> JSONResponse:
    return JSONResponse({"id": await get_session_ws_id(request)})


async def state(request: Request) -> JSONResponse:
    return JSONResponse({"keys": sorted(request.scope["state"]), "db": request.scope["state"].get("db")})


async def logout(request: Request) -> JSONResponse:
    response = JSONResponse({"logged_out": True})
    if request.query_params.get("with_background"):
        response.background = BackgroundTask(_record, request, "user background ran")
    await schedule_close_all_session_ws(request, response)
    request.session.clear()
    return response


def _record(request: Request, event: str) -> None:
    request.app.state.events.append(event)


async def revoke(request: Request) -> JSONResponse:
    report = await revoke_session_ws(request, confirm=True)
    return JSONResponse({"closed": report.total, "complete": report.complete})


async def rotate(request: Request) -> JSONResponse:
    after_response = BackgroundTasks()
    new_id = await rotate_session_ws_id(request, after_response)
    return JSONResponse({"id": new_id}, background=after_response)


async def send(request: Request) -> JSONResponse:
    key, text = request.query_params.get("key"), request.query_params.get("text", "hello")
    if key is None:
        await send_session_ws(request, text)
    else:
        await send_ws(request, key, text)
    return JSONResponse({"sent": True})


async def close(request: Request) -> JSONResponse:
    report = await close_all_ws(request, request.query_params["key"], code=4000, reason="closed by key")
    return JSONResponse({"closed_here": report.closed_here})


async def count(request: Request) -> JSONResponse:
    key = request.query_params.get("key")
    total, complete = await (count_session_ws(request) if key is None else count_ws(request, key))
    return JSONResponse({"total": total, "complete": complete})


async def websocket_endpoint(websocket: WebSocket) -> None:
    keys = websocket.query_params.getlist("key")
    async with session_ws(websocket, keys) as handle:
        ephemeral = bool(websocket.scope.get(EPHEMERAL_SCOPE_KEY))
        await websocket.send_text(f"registered {handle.id}{' ephemeral' if ephemeral else ''}")
        async for text in websocket.iter_text():
            await websocket.send_text(f"echo {text}")


async def late_reader_endpoint(websocket: WebSocket) -> None:
    """Reads once more after the registry closed its socket (as after a logout elsewhere):
    the block ends as if the client had left, and the endpoint carries on after it."""
    async with session_ws(websocket) as handle:
        await websocket.send_text(f"registered {handle.id}")
        await get_registry(websocket).close_all(handle.keys[0], reason="logged out elsewhere")
        while not handle.closed:
            await anyio.sleep(0.01)
        await websocket.receive_text()
    websocket.app.state.events.append("late reader ended")


async def chat_endpoint(websocket: WebSocket) -> None:
    async with session_ws(websocket, subprotocol="chat") as handle:
        await websocket.send_text(f"registered {handle.id}")
        async for text in websocket.iter_text():
            await websocket.send_text(f"echo {text}")


def make_app(
    registry: SessionRegistry,
    *,
    paths: Sequence[str] | None = None,
    ephemeral_ids: bool = False,
    session_middleware: bool = True,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[Mapping[str, Any] | None]] | None = None,
    use_lifespan: bool = True,
) -> Starlette:
    """The test app; ``use_lifespan=False`` leaves sessionws unconfigured (``app.state`` tests)."""
    middleware = [Middleware(SessionWSMiddleware, paths=paths, ephemeral_ids=ephemeral_ids)]
    if session_middleware:
        middleware.insert(0, Middleware(SessionMiddleware, secret_key=SECRET))
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/app/page", page),
            Route("/static/file", page),
            Route("/logout", logout, methods=["POST"]),
            Route("/revoke", revoke, methods=["POST"]),
            Route("/rotate", rotate, methods=["POST"]),
            Route("/send", send, methods=["POST"]),
            Route("/close", close, methods=["POST"]),
            Route("/count", count),
            Route("/state", state),
            WebSocketRoute("/ws", websocket_endpoint),
            WebSocketRoute("/ws-chat", chat_endpoint),
            WebSocketRoute("/ws-late-read", late_reader_endpoint),
        ],
        middleware=middleware,
        lifespan=sessionws_lifespan(registry, lifespan) if use_lifespan else None,
    )
    app.state.events = []
    return app
