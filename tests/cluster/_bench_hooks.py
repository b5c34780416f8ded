"""What the benchmarks ask of an aiohttp node beyond the app's own endpoints.

* ``POST /bench/close-local-first?key=K``: ``close_all(K)`` with the node's own sockets'
  CLOSE frames written *before* the broker command (the core queues them and writes
  the command first); the order of local and remote work, measured by ``bench.peers``.
* ``GET /bench/bare-ws``: the node's websocket without sessionws (the session loaded by
  aiohttp-session's middleware as for ``/ws``, the same hello, nothing registered): the
  floor of ``bench.connect_storm``.
* With ``--bench-trace`` (``python -m tests.cluster.node --bench-trace``): timestamps at
  the steps of a close's path (wrappers around a few library functions, installed by
  :func:`install`; nothing is wrapped without the flag), served and forgotten at
  ``GET /bench/trace``. ``bench.peers --trace`` reads them after each round. Every
  timestamp is ``time.monotonic()``, one clock for every process of the machine.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = ("bench_routes", "install")

_EVENTS: list[tuple[str, float]] = []
_LIMIT = 1000


def _note(name: str) -> None:
    if len(_EVENTS) < _LIMIT:
        _EVENTS.append((name, time.monotonic()))


def _on_entry(owner: Any, attribute: str, name: str) -> None:
    original: Callable[..., Any] = getattr(owner, attribute)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _note(name)
        return original(*args, **kwargs)

    setattr(owner, attribute, wrapper)


def _on_entry_and_exit(owner: Any, attribute: str, name: str) -> None:
    original: Callable[..., Any] = getattr(owner, attribute)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        _note(name)
        try:
            return await original(*args, **kwargs)
        finally:
            _note(f"{name}.returned")

    setattr(owner, attribute, wrapper)


def install() -> None:
    """Wrap the steps of a close's path with timestamps (call before the app starts)."""
    from aiohttp._websocket.writer import WebSocketWriter
    from redis.asyncio.connection import AbstractConnection

    from sessionws import SessionRegistry
    from sessionws._delivery import Delivery

    _on_entry_and_exit(SessionRegistry, "close_all", "close_all")
    _on_entry(SessionRegistry, "message_received", "command_received")
    _on_entry(Delivery, "_close", "worker_closes")
    _on_entry(WebSocketWriter, "close", "close_frame_written")
    _on_entry(AbstractConnection, "send_packed_command", "redis_write")
    try:
        from nats.aio.transport import TcpTransport

        from sessionws_nats._transport import NatsTransport
    except ImportError:
        return
    _on_entry(TcpTransport, "writelines", "nats_write")
    _on_entry(TcpTransport, "write", "nats_write")
    _on_entry_and_exit(NatsTransport, "mark", "nats_kv_put")
    _on_entry_and_exit(NatsTransport, "publish", "nats_publish")


async def _trace(request: web.Request) -> web.Response:
    events = list(_EVENTS)
    _EVENTS.clear()
    return web.json_response({"events": events})


async def _response_prepared(request: web.Request, response: web.StreamResponse) -> None:
    if request.path in ("/close", "/bench/close-local-first"):
        _note("http_answer_prepared")


async def _close_local_first(request: web.Request) -> web.Response:
    """Write the CLOSE frames of this node's sockets of ``key``, then ``close_all(key)``.

    The frames go out in one loop turn (aiohttp writes the frame, then waits for the
    client's answer); ``close_all`` then finds those sockets closed (a no-op for them,
    they are unregistered as usual) and sends the command to the other nodes."""
    from sessionws_aiohttp import get_registry

    key = request.query.get("key", "")
    if not key:
        raise web.HTTPBadRequest(text="give ?key=")
    registry = get_registry(request)
    called_at = time.monotonic()
    local = [
        asyncio.ensure_future(handle.connection.close(1000, "")) for handle in registry.local_handles(key)
    ]
    if local:
        await asyncio.sleep(0)  # one turn: every frame is written
    report = await registry.close_all(key)
    await asyncio.gather(*local, return_exceptions=True)
    return web.json_response({"closed_here": report.closed_here, "called_at": called_at})


async def _bare_websocket(request: web.Request) -> web.StreamResponse:
    """What ``/ws`` does, without sessionws."""
    import aiohttp_session

    session = await aiohttp_session.get_session(request)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_json({"handle": "", "node": "", "user": session.get("user")})
    async for _ in ws:
        pass
    return ws


def bench_routes(app: web.Application, *, traced: bool) -> None:
    """The benchmark's endpoints; with ``traced``, ``GET /bench/trace`` and a timestamp
    when the answer to a close is prepared."""
    app.router.add_post("/bench/close-local-first", _close_local_first)
    app.router.add_get("/bench/bare-ws", _bare_websocket)
    if traced:
        app.router.add_get("/bench/trace", _trace)
        app.on_response_prepare.append(_response_prepared)
