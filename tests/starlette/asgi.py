"""Drive ASGI apps inside the test's event loop (asyncio or trio): lifespan, HTTP, websockets.

Servers run on asyncio only; this small driver lets the same Starlette apps, middleware and
session cookies run on trio too. HTTP goes through ``httpx.ASGITransport`` (which keeps
cookies in the client's jar); websockets through :func:`connect_websocket`, which speaks
the ASGI websocket protocol as a server would.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[ASGIApp]:
    """Run ``app``'s lifespan; yield an app that hands each request a copy of the lifespan
    state, as servers do."""
    state: dict[str, Any] = {}
    to_app, app_inbox = anyio.create_memory_object_stream[Message](math.inf)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](math.inf)
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}

    async def serve() -> None:
        await app(scope, app_inbox.receive, app_outbox.send)

    with to_app, app_inbox, app_outbox, from_app:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve)
            await to_app.send({"type": "lifespan.startup"})
            started = await from_app.receive()
            if started["type"] != "lifespan.startup.complete":
                raise RuntimeError(f"lifespan startup failed: {started.get('message')}")

            async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
                await app({**scope, "state": dict(state)}, receive, send)

            try:
                yield with_state
            finally:
                with anyio.CancelScope(shield=True), anyio.fail_after(10):
                    await to_app.send({"type": "lifespan.shutdown"})
                    stopped = await from_app.receive()
                if stopped["type"] != "lifespan.shutdown.complete":
                    raise RuntimeError(f"lifespan shutdown failed: {stopped.get('message')}")


def http_client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def cookie_header(cookies: httpx.Cookies) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


class WebSocketClient:
    """The client side of one ASGI websocket."""

    def __init__(self, to_app: Any, from_app: Any) -> None:
        self._to_app = to_app
        self._from_app = from_app
        #: 101 when accepted; 403 when the app closed before accepting.
        self.status = 0
        self.close_code: int | None = None
        self.close_reason = ""

    async def _handshake(self) -> None:
        await self._to_app.send({"type": "websocket.connect"})
        message = await self._from_app.receive()
        if message["type"] == "websocket.accept":
            self.status = 101
        elif message["type"] == "websocket.close":
            self.status = 403
            self.close_code = message.get("code", 1000)
        else:
            raise AssertionError(f"unexpected first message {message!r}")

    async def receive(self, timeout: float = 3.0) -> str | bytes:
        """The next text or bytes; raises :class:`Closed` when the app closes the socket."""
        with anyio.fail_after(timeout):
            try:
                message = await self._from_app.receive()
            except anyio.EndOfStream:
                raise Closed(1006, "the app returned without closing") from None
        if message["type"] == "websocket.send":
            data: str | bytes | None = message.get("text")
            return data if data is not None else message["bytes"]
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            self.close_reason = message.get("reason") or ""
            # Answer the close, as a client does.
            await self._to_app.send({"type": "websocket.disconnect", "code": self.close_code})
            raise Closed(self.close_code or 1000, self.close_reason)
        raise AssertionError(f"unexpected message {message!r}")

    async def closed(self, timeout: float = 3.0) -> tuple[int, str]:
        """Wait for the close (skipping data); return its code and reason."""
        while True:
            try:
                await self.receive(timeout)
            except Closed as closed:
                return closed.code, closed.reason

    async def send_text(self, text: str) -> None:
        await self._to_app.send({"type": "websocket.receive", "text": text})

    async def disconnect(self, code: int = 1000) -> None:
        await self._to_app.send({"type": "websocket.disconnect", "code": code})


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


@asynccontextmanager
async def connect_websocket(
    app: ASGIApp, path: str, cookies: httpx.Cookies | None = None
) -> AsyncIterator[WebSocketClient]:
    """Open a websocket on ``app``; on exit, disconnect and wait for the endpoint to return."""
    raw_path, _, query = path.partition("?")
    headers = [(b"host", b"testserver")]
    if cookies:
        headers.append((b"cookie", cookie_header(cookies).encode()))
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "subprotocols": [],
    }
    to_app, app_inbox = anyio.create_memory_object_stream[Message](math.inf)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](math.inf)

    async def serve() -> None:
        with app_outbox:
            await app(scope, app_inbox.receive, app_outbox.send)

    with to_app, app_inbox, from_app:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve)
            client = WebSocketClient(to_app, from_app)
            await client._handshake()
            try:
                yield client
            finally:
                if client.close_code is None:
                    await client.disconnect()
                with anyio.move_on_after(5) as scope_timeout:
                    # The endpoint returns once it sees the disconnect.
                    while True:
                        try:
                            await from_app.receive()
                        except anyio.EndOfStream:
                            break
                if scope_timeout.cancelled_caught:
                    tasks.cancel_scope.cancel()
