"""The demo served by Starlette (endpoints: see the package's docstring).

The same page and endpoints as the aiohttp version, on ``sessionws_starlette``. One
difference users see: a websocket that arrives before its session has an id is closed
with 1008 (the page mints the id, and reconnects), where aiohttp mints one on the upgrade.
The session cookie (``sessionws_demo``) is the aiohttp version's too, so aiohttp and
Starlette nodes given the same ``--secret`` share sessions.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

import sessionws_starlette as sw
from sessionws import SessionRegistry

from ._metrics import DemoMetrics
from ._options import (
    COOKIE_MAX_AGE,
    COOKIE_NAME,
    REVOKE_TTL,
    STATIC_DIR,
    USER_NAME,
    DemoOptions,
    announce,
    broker_failure,
    broker_unreachable,
    public_transport,
    url_for_humans,
)

__all__ = ("create_app", "make_app", "run")

logger = logging.getLogger("sessionws.demo")


def _short(session_ws_id: str | None) -> str | None:
    return session_ws_id[:8] if session_ws_id else None


def _options(connection: HTTPConnection) -> DemoOptions:
    options: DemoOptions = connection.app.state.demo_options
    return options


async def _state(request: Request) -> dict[str, Any]:
    registry = sw.get_registry(request)
    session_ws_id = await sw.get_session_ws_id(request)
    revoked = session_ws_id is not None and await registry.is_revoked(session_ws_id)
    total, complete = await sw.count_session_ws(request)
    return {
        "session": _short(session_ws_id),
        "user": request.session.get("user"),
        "node": request.app.state.node_name,
        "transport": public_transport(_options(request).transport),
        "revoked": revoked,
        "count": total,
        "complete": complete,
    }


async def _push_count(connection: HTTPConnection) -> None:
    """Tell every socket of the session, on every node, how many it has now."""
    try:
        total, complete = await sw.count_session_ws(connection)
        message = json.dumps({"type": "count", "count": total, "complete": complete})
        await sw.send_session_ws(connection, message)
    except Exception:  # a count is a nicety: never let it break the socket's handler
        logger.exception("sessionws demo: pushing the socket count failed")


async def page(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})


async def state(request: Request) -> JSONResponse:
    return JSONResponse(await _state(request))


async def reset(request: Request) -> JSONResponse:
    after_response = BackgroundTasks()
    await sw.schedule_close_all_session_ws(request, after_response)
    await sw.new_session_ws_id(request)
    return JSONResponse(await _state(request), background=after_response)


async def login(request: Request) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        body = None
    user = body.get("user") if isinstance(body, dict) else None
    if not isinstance(user, str) or not USER_NAME.fullmatch(user):
        return JSONResponse({"error": "a name of 1-32 letters, digits, '_', '.' or '-'"}, status_code=400)
    request.session["user"] = user
    # A new id at login: the old one is revoked (whoever learnt it cannot attach), and
    # this session's sockets close after the response and reconnect with the new one.
    after_response = BackgroundTasks()
    await sw.rotate_session_ws_id(request, after_response)
    return JSONResponse(await _state(request), background=after_response)


async def logout(request: Request) -> JSONResponse:
    report = await sw.revoke_session_ws(request, ttl=REVOKE_TTL)
    request.session.pop("user", None)
    return JSONResponse({"closed": report.closed_here})


async def broadcast(request: Request) -> JSONResponse:
    note = {"type": "note", "text": f"a tab said hello (via {request.app.state.node_name})"}
    await sw.send_session_ws(request, json.dumps(note))
    return JSONResponse({"sent": True})


async def metrics_endpoint(request: Request) -> Response:
    metrics: DemoMetrics = request.app.state.metrics
    return Response(metrics.render(), headers={"Content-Type": metrics.content_type})


async def websocket_endpoint(websocket: WebSocket) -> None:
    user = websocket.session.get("user")
    keys = [f"user:{user}"] if isinstance(user, str) else []
    async with sw.session_ws(websocket, keys):
        hello = {
            "type": "hello",
            "node": websocket.app.state.node_name,
            "session": _short(await sw.get_session_ws_id(websocket)),
            "user": user,
        }
        await websocket.send_json(hello)
        await _push_count(websocket)
        async for text in websocket.iter_text():
            if text == "count":
                total, complete = await sw.count_session_ws(websocket)
                await websocket.send_json({"type": "count", "count": total, "complete": complete})
    await _push_count(websocket)  # the socket has left: tell the session's other tabs


def make_app(options: DemoOptions) -> Starlette:
    """The demo as a Starlette application (its registry runs with the app's lifespan)."""
    metrics = DemoMetrics.create()
    registry = SessionRegistry(
        options.transport,
        namespace=options.namespace,
        node_id=options.node,
        revoke_ttl=REVOKE_TTL,
        on_event=metrics.on_event if metrics is not None else None,
    )
    routes = [Route("/metrics", metrics_endpoint)] if metrics is not None else []
    if metrics is not None:
        metrics.watch(registry)
    app = Starlette(
        routes=[
            *routes,
            Route("/", page),
            Route("/api/state", state),
            Route("/api/reset", reset, methods=["POST"]),
            Route("/api/login", login, methods=["POST"]),
            Route("/api/logout", logout, methods=["POST"]),
            Route("/api/broadcast", broadcast, methods=["POST"]),
            WebSocketRoute("/ws", websocket_endpoint),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=options.secret or secrets.token_hex(32),
                session_cookie=COOKIE_NAME,
                max_age=COOKIE_MAX_AGE,
            ),
            # Only the page mints ids (before its first websocket: Safari ignores
            # cookies on the upgrade); static files and the API do not.
            Middleware(sw.SessionWSMiddleware, paths=["/"]),
        ],
        lifespan=_remembering_broker_failure(sw.sessionws_lifespan(registry)),
    )
    app.state.demo_options = options
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.node_name = options.node or registry.node_id
    return app


def create_app(transport_url: str, node_name: str) -> Starlette:
    """The demo app on ``transport_url``, shown as node ``node_name`` (a random cookie secret)."""
    return make_app(DemoOptions(transport=transport_url, node=node_name))


def run(options: DemoOptions) -> int:
    """Serve with uvicorn until Ctrl-C or SIGTERM."""
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise SystemExit("the starlette demo runs on uvicorn: pip install uvicorn") from None

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = make_app(options)
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((options.host, options.port))
    # Listen before printing the URL: whoever reads it may connect at once, and uvicorn
    # listens only after the lifespan (the registry) has started. Until then connections
    # wait in the backlog instead of being refused.
    listener.listen(2048)
    host, port = listener.getsockname()[:2]
    announce("starlette", url_for_humans(host, port), options, app.state.node_name)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    # An unreachable broker fails the lifespan: say so in two lines, not uvicorn's traceback.
    quiet = _QuietAfterBrokerFailure(app)
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addFilter(quiet)
    try:
        with listener:
            server.run(sockets=[listener])  # a failed startup raises SystemExit(3)
    except SystemExit:
        failure: Exception | None = getattr(app.state, "broker_failure", None)
        if failure is None:
            raise
        raise SystemExit(broker_unreachable(options, failure)) from None
    finally:
        uvicorn_errors.removeFilter(quiet)
    return 0


class _QuietAfterBrokerFailure(logging.Filter):
    """Drops uvicorn's error records once the lifespan failed for an unreachable broker."""

    def __init__(self, app: Starlette) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(self.app.state, "broker_failure", None) is None


def _remembering_broker_failure(
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[dict[str, Any]]],
) -> Callable[[Starlette], AbstractAsyncContextManager[dict[str, Any]]]:
    """``lifespan``, noting on ``app.state.broker_failure`` a broker it could not reach at start."""

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        entered = False
        try:
            async with lifespan(app) as state:
                entered = True
                yield state
        except BaseException as error:
            if not entered:
                app.state.broker_failure = broker_failure(error)
            raise

    return run
