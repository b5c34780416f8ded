"""Real aiohttp servers on free loopback ports, and "browsers" talking to them.

A :class:`Browser` is one aiohttp ``ClientSession`` with its own cookie jar: one
user-agent, so one session. Websockets are aiohttp's real client; :func:`raw_websocket`
is a hand-rolled client for the misbehaving cases (garbage frames, vanishing peers).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
import aiohttp_session
import anyio
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

import sessionws_aiohttp as sw
from sessionws import IdProvider, SessionRegistry
from tests._helpers import FAST


def hub_url() -> str:
    """A ``memory://`` URL of a hub no other test shares."""
    return f"memory://aiohttp-{secrets.token_hex(6)}"


def fast_registry(url: str | None = None, **options: Any) -> SessionRegistry:
    return SessionRegistry(url or hub_url(), **{**FAST, **options})


@asynccontextmanager
async def serve(app: web.Application, **server_options: Any) -> AsyncIterator[TestServer]:
    """Run ``app`` on a free loopback port until the block ends (then shut it down)."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**server_options)
    try:
        yield server
    finally:
        await server.close()


class Server(Protocol):
    """Anything serving HTTP at a base URL (aiohttp's TestServer, the demo's server)."""

    def make_url(self, path: str) -> URL: ...


class Browser:
    """One user-agent: a cookie jar (one session), HTTP requests and websockets."""

    def __init__(self) -> None:
        # unsafe=True: keep cookies set by an IP-address host (127.0.0.1).
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A server handler that never reads would not answer our close: do not wait long.
        for websocket in self.sockets:
            with anyio.move_on_after(0.5):
                await websocket.close()
        await self.http.close()

    def cookie(self, name: str = "AIOHTTP_SESSION") -> str | None:
        for morsel in self.http.cookie_jar:
            if morsel.key == name:
                return morsel.value
        return None

    def cookie_header(self) -> str:
        """The ``Cookie`` header this browser would send (for hand-rolled clients)."""
        return "; ".join(f"{morsel.key}={morsel.coded_value}" for morsel in self.http.cookie_jar)

    async def get(self, server: Server, path: str) -> tuple[int, str]:
        async with self.http.get(server.make_url(path)) as response:
            return response.status, await response.text()

    async def post(self, server: Server, path: str, data: str = "") -> tuple[int, str]:
        async with self.http.post(server.make_url(path), data=data) as response:
            return response.status, await response.text()

    async def websocket(
        self, server: Server, path: str = "/ws", **options: Any
    ) -> aiohttp.ClientWebSocketResponse:
        websocket: aiohttp.ClientWebSocketResponse = await self.http.ws_connect(
            server.make_url(path), **options
        )
        self.sockets.append(websocket)
        return websocket

    async def hello(self, server: Server, path: str = "/ws") -> tuple[aiohttp.ClientWebSocketResponse, str]:
        """Open a websocket on the test app and read the session id it announces."""
        websocket = await self.websocket(server, path)
        with anyio.fail_after(3):
            greeting = await websocket.receive_json()
        return websocket, str(greeting["id"])


async def closed_with(websocket: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> tuple[int, str]:
    """Read until the server closes ``websocket``; return the close code and reason."""
    with anyio.fail_after(timeout):
        while True:
            message = await websocket.receive()
            if message.type is aiohttp.WSMsgType.CLOSE:
                return int(message.data), str(message.extra or "")
            if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return int(websocket.close_code or 0), ""


# ---------------------------------------------------------------------- the test app
async def handle_page(request: web.Request) -> web.Response:
    return web.Response(text=await sw.get_session_ws_id(request) or "")


async def handle_websocket(request: web.Request) -> web.WebSocketResponse:
    keys = request.query.getall("key", [])
    async with sw.session_ws(request, keys=keys) as websocket:
        session_ws_id = await sw.get_session_ws_id(request)
        await websocket.send_json({"id": session_ws_id, "node": sw.get_registry(request).node_id})
        async for message in websocket:
            if message.type is aiohttp.WSMsgType.TEXT:
                await websocket.send_str(f"echo:{message.data}")
    return websocket


async def handle_reset(request: web.Request) -> web.Response:
    """aiohttp_session_ws's logout pattern: schedule the close, then a new session and id."""
    response = web.Response(text="reset")
    await sw.schedule_close_all_session_ws(request, response)
    await aiohttp_session.new_session(request)
    await sw.new_session_ws_id(request)
    return response


async def handle_logout(request: web.Request) -> web.Response:
    report = await sw.revoke_session_ws(request)
    return web.json_response({"closed_here": report.closed_here})


async def handle_login(request: web.Request) -> web.Response:
    response = web.Response()
    new = await sw.rotate_session_ws_id(request, response)
    response.text = new
    return response


async def handle_count(request: web.Request) -> web.Response:
    total, complete = await sw.count_session_ws(request)
    return web.json_response({"total": total, "complete": complete})


async def handle_send(request: web.Request) -> web.Response:
    await sw.send_session_ws(request, await request.text())
    return web.Response(text="sent")


def make_app(
    registry: SessionRegistry | sw.SessionWSRegistry,
    *,
    id_provider: IdProvider[web.Request] | None = None,
    middleware: Any = sw.session_ws_middleware,
    extra_routes: Iterable[web.RouteDef] = (),
) -> web.Application:
    """The test app: aiohttp-session with a plain cookie storage, sessionws set up."""
    middlewares = [aiohttp_session.session_middleware(aiohttp_session.SimpleCookieStorage())]
    if middleware is not None:
        middlewares.append(middleware)
    app = web.Application(middlewares=middlewares)
    app.add_routes(
        [
            web.get("/", handle_page),
            web.get("/ws", handle_websocket),
            web.post("/reset", handle_reset),
            web.post("/logout", handle_logout),
            web.post("/login", handle_login),
            web.get("/count", handle_count),
            web.post("/send", handle_send),
            *extra_routes,
        ]
    )
    if isinstance(registry, sw.SessionWSRegistry) or id_provider is None:
        sw.setup(app, registry)
    else:
        sw.setup(app, registry, id_provider=id_provider)
    return app


def session_cookie_id(browser: Browser, session_key: str = "sessionws_id") -> str | None:
    """The id stored in the browser's (plain JSON) session cookie."""
    cookie = browser.cookie()
    if cookie is None:
        return None
    value = json.loads(cookie).get("session", {}).get(session_key)
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------- a raw client
class RawWebSocket:
    """A hand-rolled websocket client: the handshake, then frames (or garbage) by hand."""

    def __init__(self, stream: anyio.abc.SocketStream, buffered: bytes) -> None:
        self.stream = stream
        self.buffer = buffered

    async def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += await self.stream.receive()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def read_frame(self, timeout: float = 3.0) -> tuple[int, bytes]:
        """The next frame from the server (unmasked, as servers send them): opcode, payload."""
        with anyio.fail_after(timeout):
            first, second = await self._read(2)
            size = second & 0x7F
            if size == 126:
                size = int.from_bytes(await self._read(2), "big")
            elif size == 127:
                size = int.from_bytes(await self._read(8), "big")
            return first & 0x0F, await self._read(size)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)


@asynccontextmanager
async def raw_websocket(
    server: TestServer, path: str = "/ws", *, cookie_header: str = ""
) -> AsyncIterator[RawWebSocket]:
    """Open a websocket by hand (the 101 is checked); the TCP connection ends with the block."""
    assert server.port is not None
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if cookie_header:
        lines.append(f"Cookie: {cookie_header}")
    stream = await anyio.connect_tcp("127.0.0.1", server.port)
    async with stream:
        await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        with anyio.fail_after(3):
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head[:100]
        yield RawWebSocket(stream, rest)


def client_frame(opcode: int, payload: bytes, *, first_byte: int | None = None) -> bytes:
    """One masked client frame (payload under 126 bytes); ``first_byte`` overrides FIN/RSV/opcode."""
    assert len(payload) < 126
    mask = secrets.token_bytes(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    head = first_byte if first_byte is not None else 0x80 | opcode
    return bytes([head, 0x80 | len(payload)]) + mask + masked
