"""The demo served by aiohttp (endpoints: see the package's docstring)."""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
import signal
from typing import Any, NamedTuple

import aiohttp_session
import anyio
from aiohttp import WSMsgType, web
from anyio.abc import TaskStatus

import sessionws_aiohttp as sw
from sessionws import SessionRegistry

from ._metrics import DemoMetrics
from ._options import (
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
from ._signed_cookies import SignedCookieStorage

__all__ = ("Listening", "make_app", "run", "serve")

logger = logging.getLogger("sessionws.demo")

_OPTIONS_KEY = web.AppKey("sessionws_demo_options", DemoOptions)
_METRICS_KEY = web.AppKey("sessionws_demo_metrics", DemoMetrics)


def _short(session_ws_id: str | None) -> str | None:
    return session_ws_id[:8] if session_ws_id else None


async def _state(request: web.Request) -> dict[str, Any]:
    session = await aiohttp_session.get_session(request)
    registry = sw.get_registry(request)
    session_ws_id = await sw.get_session_ws_id(request)
    revoked = session_ws_id is not None and await registry.is_revoked(session_ws_id)
    total, complete = await sw.count_session_ws(request)
    return {
        "session": _short(session_ws_id),
        "user": session.get("user"),
        "node": registry.node_id,
        "transport": public_transport(request.app[_OPTIONS_KEY].transport),
        "revoked": revoked,
        "count": total,
        "complete": complete,
    }


async def _push_count(request: web.Request) -> None:
    """Tell every socket of the session, on every node, how many it has now."""
    try:
        total, complete = await sw.count_session_ws(request)
        await sw.send_session_ws(request, json.dumps({"type": "count", "count": total, "complete": complete}))
    except Exception:  # a count is a nicety: never let it break the socket's handler
        logger.exception("sessionws demo: pushing the socket count failed")


async def handle_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})


async def handle_state(request: web.Request) -> web.Response:
    return web.json_response(await _state(request))


async def handle_reset(request: web.Request) -> web.Response:
    response = web.json_response()
    await sw.schedule_close_all_session_ws(request, response)
    await sw.new_session_ws_id(request)
    response.text = json.dumps(await _state(request))
    return response


async def handle_login(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    user = body.get("user") if isinstance(body, dict) else None
    if not isinstance(user, str) or not USER_NAME.fullmatch(user):
        return web.json_response({"error": "a name of 1-32 letters, digits, '_', '.' or '-'"}, status=400)
    session = await aiohttp_session.get_session(request)
    session["user"] = user
    response = web.json_response()
    # A new id at login: the old one is revoked (whoever learnt it cannot attach), and
    # this session's sockets close after the response and reconnect with the new one.
    await sw.rotate_session_ws_id(request, response)
    response.text = json.dumps(await _state(request))
    return response


async def handle_logout(request: web.Request) -> web.Response:
    report = await sw.revoke_session_ws(request, ttl=REVOKE_TTL)
    session = await aiohttp_session.get_session(request)
    session.pop("user", None)
    return web.json_response({"closed": report.closed_here})


async def handle_broadcast(request: web.Request) -> web.Response:
    node = sw.get_registry(request).node_id
    await sw.send_session_ws(request, json.dumps({"type": "note", "text": f"a tab said hello (via {node})"}))
    return web.json_response({"sent": True})


async def handle_metrics(request: web.Request) -> web.Response:
    metrics = request.app[_METRICS_KEY]
    return web.Response(body=metrics.render(), headers={"Content-Type": metrics.content_type})


async def handle_websocket(request: web.Request) -> web.WebSocketResponse:
    session = await aiohttp_session.get_session(request)
    user = session.get("user")
    keys = [f"user:{user}"] if isinstance(user, str) else []
    async with sw.session_ws(request, keys=keys, heartbeat=30.0) as websocket:
        hello = {
            "type": "hello",
            "node": sw.get_registry(request).node_id,
            "session": _short(await sw.get_session_ws_id(request)),
            "user": user,
        }
        await websocket.send_json(hello)
        await _push_count(request)
        async for message in websocket:
            if message.type is WSMsgType.TEXT and message.data == "count":
                total, complete = await sw.count_session_ws(request)
                await websocket.send_json({"type": "count", "count": total, "complete": complete})
    # The socket has left: tell the session's other tabs. (A server running with
    # handler_cancellation=True may cancel this handler first; the page also asks.)
    await _push_count(request)
    return websocket


def make_app(options: DemoOptions) -> web.Application:
    """The demo as an aiohttp application (its registry runs with the app)."""
    storage = SignedCookieStorage(options.secret or secrets.token_hex(32))
    app = web.Application(
        middlewares=[
            aiohttp_session.session_middleware(storage),
            # Only the page mints ids (before its first websocket: Safari ignores
            # cookies on the upgrade); static files and the API do not.
            sw.session_ws_middleware(paths=["/"]),
        ]
    )
    app[_OPTIONS_KEY] = options
    app.add_routes(
        [
            web.get("/", handle_page),
            web.get("/api/state", handle_state),
            web.post("/api/reset", handle_reset),
            web.post("/api/login", handle_login),
            web.post("/api/logout", handle_logout),
            web.post("/api/broadcast", handle_broadcast),
            web.get("/ws", handle_websocket),
            web.static("/static", STATIC_DIR),
        ]
    )
    metrics = DemoMetrics.create()
    registry = SessionRegistry(
        options.transport,
        namespace=options.namespace,
        node_id=options.node,
        revoke_ttl=REVOKE_TTL,
        on_event=metrics.on_event if metrics is not None else None,
    )
    if metrics is not None:
        metrics.watch(registry)
        app[_METRICS_KEY] = metrics
        app.router.add_get("/metrics", handle_metrics)
    sw.setup(app, registry)
    return app


class Listening(NamedTuple):
    url: str
    node: str


async def serve(
    options: DemoOptions, *, task_status: TaskStatus[Listening] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve until cancelled; ``await task_group.start(serve, options)`` returns once
    listening, with the URL (``--port 0`` picks a free port)."""
    runner = web.AppRunner(make_app(options), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        task_status.started(Listening(url_for_humans(host, port), sw.get_registry(runner.app).node_id))
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


def run(options: DemoOptions) -> int:
    """Serve until Ctrl-C or SIGTERM."""

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            listening = await tasks.start(serve, options)
            announce("aiohttp", listening.url, options, listening.node)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            tasks.cancel_scope.cancel()

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        # uvloop when installed (``pip install 'sessionws[speed]'``), as uvicorn does for
        # the Starlette version.
        anyio.run(main, backend_options={"use_uvloop": importlib.util.find_spec("uvloop") is not None})
    except BaseException as error:
        unreachable = broker_failure(error)
        if unreachable is None:
            raise
        raise SystemExit(broker_unreachable(options, unreachable)) from None
    return 0
