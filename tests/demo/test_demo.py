"""The demo: its page, its endpoints and its websocket, driven by real HTTP and websocket
clients against the aiohttp version on a free port (and ``python -m sessionws_demo``)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from yarl import URL

from sessionws import CLOSE_REVOKED
from sessionws_demo import DemoOptions
from sessionws_demo.__main__ import load_framework
from sessionws_demo._aiohttp_app import serve
from sessionws_demo._options import COOKIE_NAME
from tests.aiohttp.helpers import Browser, closed_with, hub_url

pytestmark = pytest.mark.anyio

SECRET = "a secret shared by the demo's nodes"


class DemoServer:
    """The demo served as ``python -m sessionws_demo`` serves it (``serve``), on a free port."""

    def __init__(self, url: str) -> None:
        self.url = URL(url)

    def make_url(self, path: str) -> URL:
        return self.url.join(URL(path))


@asynccontextmanager
async def demo(url: str | None = None, node: str = "demo1") -> AsyncIterator[DemoServer]:
    options = DemoOptions(transport=url or hub_url(), port=0, node=node, secret=SECRET)
    async with anyio.create_task_group() as tasks:
        listening = await tasks.start(serve, options)
        assert listening.node == node
        yield DemoServer(listening.url)
        tasks.cancel_scope.cancel()


async def state(browser: Browser, server: DemoServer) -> dict[str, Any]:
    status, body = await browser.get(server, "/api/state")
    assert status == 200
    result: dict[str, Any] = json.loads(body)
    return result


async def post(browser: Browser, server: DemoServer, path: str, body: object = None) -> tuple[int, Any]:
    async with browser.http.post(server.make_url(path), json=body) as response:
        return response.status, await response.json()


async def next_of(websocket: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next JSON message of type ``kind`` (skipping others, e.g. counts in flight)."""
    with anyio.fail_after(3):
        while True:
            message: dict[str, Any] = await websocket.receive_json()
            if message["type"] == kind:
                return message


async def open_tab(
    browser: Browser, server: DemoServer
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    websocket = await browser.websocket(server)
    return websocket, await next_of(websocket, "hello")


async def test_the_page_has_its_elements_and_no_external_assets() -> None:
    async with demo() as server, Browser() as browser, Browser() as assets_only:
        status, page = await browser.get(server, "/")
        assert status == 200
        for element in (
            "session-id",
            "socket-state",
            "socket-count",
            "node",
            "log",
            "reset",
            "login-form",
            "logout",
        ):
            assert f'id="{element}"' in page
        assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
        for asset in ("/static/demo.js", "/static/demo.css"):
            status, body = await assets_only.get(server, asset)
            assert status == 200 and "http://" not in body and "https://" not in body
        assert assets_only.cookie(COOKIE_NAME) is None  # static files mint no session
        # The page itself delivered the session's id, before any websocket.
        current = await state(browser, server)
        assert (
            current["session"] and current["node"] == "demo1" and current["transport"].startswith("memory://")
        )
        assert (current["revoked"], current["user"], current["count"]) == (False, None, 0)


async def test_the_websocket_says_hello_and_pushes_the_sessions_count() -> None:
    async with demo() as server, Browser() as browser:
        await browser.get(server, "/")
        session = (await state(browser, server))["session"]
        first, hello = await open_tab(browser, server)
        assert hello == {"type": "hello", "node": "demo1", "session": session, "user": None}
        assert (await next_of(first, "count"))["count"] == 1
        second, _ = await open_tab(browser, server)
        assert (await next_of(first, "count"))["count"] == 2
        await second.close()
        assert await next_of(first, "count") == {"type": "count", "count": 1, "complete": True}
        # The client may ask; anything else it sends is ignored.
        await first.send_bytes(b"\x00\xff")
        await first.send_str("{not json")
        await first.send_str("count")
        assert (await next_of(first, "count"))["count"] == 1


async def test_reset_closes_every_tab_with_1000_and_the_next_socket_has_a_new_id() -> None:
    async with demo() as server, Browser() as browser:
        await browser.get(server, "/")
        tabs = [(await open_tab(browser, server))[0] for _ in range(2)]
        old = (await state(browser, server))["session"]
        closing = [asyncio.ensure_future(closed_with(tab)) for tab in tabs]
        status, after = await post(browser, server, "/api/reset")
        assert status == 200 and after["session"] not in (None, old)
        assert [await close for close in closing] == [(1000, "")] * 2
        _, hello = await open_tab(browser, server)
        assert hello["session"] == after["session"]


async def test_logout_closes_with_4401_and_refuses_sockets_until_login() -> None:
    async with demo() as server, Browser() as browser:
        await browser.get(server, "/")
        tabs = [(await open_tab(browser, server))[0] for _ in range(2)]
        status, result = await post(browser, server, "/api/logout")
        assert (status, result) == (200, {"closed": 2})
        assert [await closed_with(tab) for tab in tabs] == [(CLOSE_REVOKED, "session revoked")] * 2
        for _ in range(2):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await browser.websocket(server)
            assert refused.value.status == 403
        assert (await state(browser, server))["revoked"] is True

        assert (await post(browser, server, "/api/login", {"user": "not a name!"}))[0] == 400
        status, logged_in = await post(browser, server, "/api/login", {"user": "alice"})
        assert status == 200 and logged_in["user"] == "alice" and logged_in["revoked"] is False
        _, hello = await open_tab(browser, server)
        assert (hello["user"], hello["session"]) == ("alice", logged_in["session"])


async def test_login_rotates_the_id_and_the_open_tabs_reconnect() -> None:
    async with demo() as server, Browser() as browser:
        await browser.get(server, "/")
        tab, hello = await open_tab(browser, server)
        closing = asyncio.ensure_future(closed_with(tab))
        status, logged_in = await post(browser, server, "/api/login", {"user": "bob"})
        assert status == 200 and logged_in["session"] != hello["session"]
        assert await closing == (1000, "session id rotated")
        _, again = await open_tab(browser, server)
        assert (again["user"], again["session"]) == ("bob", logged_in["session"])


async def test_a_message_reaches_every_tab_of_the_session_only() -> None:
    async with demo() as server, Browser() as browser, Browser() as stranger:
        await browser.get(server, "/")
        tabs = [(await open_tab(browser, server))[0] for _ in range(2)]
        other, _ = await open_tab(stranger, server)
        assert await post(browser, server, "/api/broadcast") == (200, {"sent": True})
        for tab in tabs:
            assert (await next_of(tab, "note"))["text"].startswith("a tab said hello")
        with pytest.raises(TimeoutError):
            await next_of_within(other, "note", 0.2)


async def next_of_within(websocket: aiohttp.ClientWebSocketResponse, kind: str, seconds: float) -> None:
    with anyio.fail_after(seconds):
        await next_of(websocket, kind)


async def test_two_demo_nodes_form_a_cluster() -> None:
    url = hub_url()
    async with AsyncExitStack() as stack, Browser() as browser:
        one = await stack.enter_async_context(demo(url, "one"))
        two = await stack.enter_async_context(demo(url, "two"))
        await browser.get(server=one, path="/")
        tab_one, hello_one = await open_tab(browser, one)
        tab_two, hello_two = await open_tab(browser, two)
        assert (hello_one["node"], hello_two["node"]) == ("one", "two")
        assert hello_one["session"] == hello_two["session"]  # one session on both nodes
        await post(browser, one, "/api/logout")
        assert await closed_with(tab_two) == (CLOSE_REVOKED, "session revoked")
        assert await closed_with(tab_one) == (CLOSE_REVOKED, "session revoked")
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await browser.websocket(two)


async def test_python_m_sessionws_demo_prints_its_url_serves_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "sessionws_demo", "--port", "0", "--node", "cli"]
    async with await anyio.open_process(command) as process:
        assert process.stdout is not None
        with anyio.fail_after(15):
            line = b""
            while b"\n" not in line:
                line += await process.stdout.receive()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line.decode())
        assert found, line
        async with aiohttp.ClientSession() as client, client.get(found.group(0)) as response:
            assert response.status == 200
            assert "sessionws demo" in await response.text()
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await process.wait() == 0


def test_each_framework_version_is_a_module_with_make_app_and_run() -> None:
    module = load_framework("aiohttp")
    assert callable(module.make_app) and callable(module.run)
    with pytest.raises(SystemExit, match="the tornado version of the demo is not available yet"):
        load_framework("tornado")
