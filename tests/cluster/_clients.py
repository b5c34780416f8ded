"""Real websocket clients for the cluster suite (aiohttp's client).

A :class:`Browser` is one device: it keeps its session cookie and sends it to every
node (the nodes share nothing but the broker, as behind a load balancer). Each
:class:`Socket` reads its websocket in a task owned by :class:`Clients`, recording
the close code the server sent (1006 when the connection dropped without one), and
answers :meth:`Socket.ping` only while it is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import WSMsgType

from tests.cluster._cluster import Cluster

__all__ = ("ABNORMAL", "Browser", "Clients", "Socket", "assert_closed", "assert_open", "new_user")

#: What a client records when its connection dropped without a close frame.
ABNORMAL = 1006
_TIMEOUT = aiohttp.ClientTimeout(total=15)


def new_user() -> str:
    """A user name no other test uses (the cluster lives for the whole session)."""
    return f"user-{secrets.token_hex(4)}"


class Socket:
    """One websocket to one node."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, node: int) -> None:
        self.ws = ws
        self.node = node
        self.handle = ""
        self.code: int | None = None
        self.reason = ""
        self.closed = asyncio.Event()
        self.hello = asyncio.Event()
        self.messages: list[str] = []
        self._arrived = asyncio.Event()
        #: ``time.monotonic()`` when the handle arrived (registered) and when the
        #: connection ended, for checkers that order events.
        self.registered_at: float | None = None
        self.closed_at: float | None = None
        self._pongs: asyncio.Queue[None] = asyncio.Queue()

    def __repr__(self) -> str:
        state = "open" if self.code is None else f"closed {self.code}"
        return f"<Socket {self.handle or '?'} on node{self.node + 1} {state}>"

    async def read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message.type == WSMsgType.TEXT:
                    self._text(message.data)
                elif message.type == WSMsgType.CLOSE:
                    self.code, self.reason = int(message.data), str(message.extra or "")
                elif message.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                    return
        finally:
            if self.code is None:
                self.code = self.ws.close_code or ABNORMAL
            self.closed_at = time.monotonic()
            self.closed.set()
            self.hello.set()
            self._arrived.set()

    def _text(self, data: str) -> None:
        if data == "pong":
            self._pongs.put_nowait(None)
        elif not self.handle and data.startswith("{"):
            self.handle = str(json.loads(data).get("handle", ""))
            self.registered_at = time.monotonic()
            self.hello.set()
        else:
            self.messages.append(data)
            self._arrived.set()

    async def wait_closed(self, timeout: float = 10.0) -> int:
        """The close code, once the socket is closed (fails after ``timeout``)."""
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self!r} was not closed within {timeout} s") from None
        assert self.code is not None
        return self.code

    async def wait_message(self, text: str, timeout: float = 10.0) -> None:
        """Wait until the socket received ``text`` (fails after ``timeout``, or if it closed)."""

        async def arrived() -> None:
            while text not in self.messages:
                if self.closed.is_set():
                    raise AssertionError(f"{self!r} closed before {text!r} arrived; got {self.messages}")
                self._arrived.clear()
                await self._arrived.wait()

        try:
            await asyncio.wait_for(arrived(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self!r} did not get {text!r} within {timeout} s; got {self.messages}"
            ) from None

    async def ping(self, timeout: float = 5.0) -> None:
        """Prove the socket is open: the node answers ``ping`` with ``pong``."""
        if self.closed.is_set():
            raise AssertionError(f"{self!r} should be open")
        try:
            await self.ws.send_str("ping")
            pong = asyncio.ensure_future(self._pongs.get())
            closed = asyncio.ensure_future(self.closed.wait())
            try:
                done, _ = await asyncio.wait(
                    {pong, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                pong.cancel()
                closed.cancel()
        except ConnectionError:
            raise AssertionError(f"{self!r} should be open") from None
        if pong not in done:
            raise AssertionError(f"{self!r} should be open (no pong within {timeout} s)")

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await self.ws.close()


async def assert_closed(sockets: Iterable[Socket], code: int | Iterable[int], timeout: float = 10.0) -> None:
    """Every socket ends closed with ``code`` (or one of the codes)."""
    codes = {code} if isinstance(code, int) else set(code)
    sockets = list(sockets)
    got = await asyncio.gather(*(socket.wait_closed(timeout) for socket in sockets))
    wrong = [socket for socket, value in zip(sockets, got, strict=True) if value not in codes]
    assert not wrong, f"expected close codes {sorted(codes)}, got {wrong}"


async def assert_open(sockets: Iterable[Socket]) -> None:
    """Every socket is open (each answers a ping)."""
    await asyncio.gather(*(socket.ping() for socket in sockets))


class Browser:
    """One device: its own session cookie, sent to whichever node it talks to."""

    def __init__(self, clients: Clients) -> None:
        self._clients = clients
        self.cookies: dict[str, str] = {}
        self.session_id = ""

    def headers(self) -> dict[str, str]:
        """The ``Cookie`` header this browser sends."""
        if not self.cookies:
            return {}
        return {"Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items())}

    def _keep_cookies(self, response: aiohttp.ClientResponse) -> None:
        for name, morsel in response.cookies.items():
            if morsel.value and morsel["max-age"] != "0":
                self.cookies[name] = morsel.coded_value
            else:
                self.cookies.pop(name, None)

    async def request(self, method: str, node: int, path: str, **params: str) -> tuple[int, Any]:
        """``method`` ``path`` on node ``node`` with this browser's cookie: status and JSON."""
        url = f"{self._clients.cluster.url(node)}{path}"
        async with self._clients.http.request(method, url, params=params, headers=self.headers()) as response:
            self._keep_cookies(response)
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    async def post(self, node: int, path: str, **params: str) -> tuple[int, Any]:
        return await self.request("POST", node, path, **params)

    async def login(self, node: int, user: str) -> str:
        """Log in as ``user`` on node ``node``; the new session's session-ws id."""
        status, body = await self.post(node, "/login", user=user)
        assert status == 200, (status, body)
        self.session_id = str(body["session"])
        return self.session_id

    async def try_connect(self, node: int, **params: str) -> Socket | int:
        """Open a websocket to node ``node`` (``params``: the query, e.g. ``data``): the
        socket, or the HTTP status that refused it."""
        url = f"{self._clients.cluster.url(node)}/ws"
        try:
            ws = await self._clients.http.ws_connect(
                url, headers=self.headers(), autoping=True, params=params
            )
        except aiohttp.WSServerHandshakeError as error:
            return error.status
        return self._clients.adopt(ws, node)

    async def connect(self, node: int, **params: str) -> Socket:
        """Open a websocket to node ``node`` and wait for its handle (fails if refused)."""
        socket = await self.try_connect(node, **params)
        assert isinstance(socket, Socket), f"node{node + 1} refused the websocket with HTTP {socket}"
        await asyncio.wait_for(socket.hello.wait(), 10)
        assert socket.handle, f"{socket!r} was closed before it was registered (code {socket.code})"
        return socket


class Clients:
    """Browsers, their sockets and the tasks reading them, for one test."""

    def __init__(self, cluster: Cluster, *, connections: int = 100, timeout: float | None = None) -> None:
        """``connections`` bounds the HTTP connections in flight (0: no bound);
        ``timeout`` bounds each request (default 15 s)."""
        self.cluster = cluster
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=_TIMEOUT if timeout is None else aiohttp.ClientTimeout(total=timeout),
        )
        self.sockets: list[Socket] = []
        self._readers: set[asyncio.Task[None]] = set()
        self._admin = Browser(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close_all_sockets()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        await self.http.close()

    def browser(self) -> Browser:
        return Browser(self)

    def adopt(self, ws: aiohttp.ClientWebSocketResponse, node: int) -> Socket:
        socket = Socket(ws, node)
        self.sockets.append(socket)
        reader = asyncio.create_task(socket.read())
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        return socket

    async def close_all_sockets(self) -> None:
        """The clients leave: close every socket still open and wait for the readers."""
        await asyncio.gather(*(socket.close() for socket in self.sockets if not socket.closed.is_set()))
        await asyncio.gather(*list(self._readers), return_exceptions=True)

    async def post(self, node: int, path: str, **params: str) -> tuple[int, Any]:
        """A request without a session (the app's admin side)."""
        return await self._admin.post(node, path, **params)

    async def get(self, node: int, path: str, **params: str) -> tuple[int, Any]:
        return await self._admin.request("GET", node, path, **params)

    async def close_key(self, node: int, key: str, **options: str) -> dict[str, Any]:
        """``close_all(key)`` on node ``node``; the report (asserts HTTP 200)."""
        status, body = await self.post(node, "/close", key=key, **options)
        assert status == 200, (status, body)
        return dict(body)

    async def count(self, node: int, key: str) -> tuple[int, bool]:
        status, body = await self.get(node, "/count", key=key)
        assert status == 200, (status, body)
        return int(body["total"]), bool(body["complete"])
