"""Testing an aiohttp app that uses sessionws: pytest-asyncio and sessionws's pytest plugin.

    pip install 'sessionws[aiohttp]' pytest pytest-asyncio
    pytest examples/testing/test_aiohttp_app.py

Two nodes of the app run on real ports, each with a registry of one in-memory cluster
(the ``sessionws_cluster`` fixture); one aiohttp client session is the browser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import aiohttp
import aiohttp_session
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import sessionws_aiohttp as sw
from sessionws import SessionRegistry
from sessionws.testing import MemoryCluster


def create_app(registry: SessionRegistry) -> web.Application:
    """The app under test (yours would come from your package)."""

    async def login(request: web.Request) -> web.Response:
        session = await aiohttp_session.get_session(request)
        session["user"] = request.query["user"]
        return web.json_response({"user": session["user"]})

    async def logout(request: web.Request) -> web.Response:
        response = web.json_response({"logged_out": True})
        await sw.schedule_close_all_session_ws(request, response)  # every node, after the response
        (await aiohttp_session.get_session(request)).invalidate()
        return response

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        user = (await aiohttp_session.get_session(request)).get("user")
        async with sw.session_ws(request, keys=[f"user:{user}"] if user else []) as ws:
            async for message in ws:
                await ws.send_str(f"echo {message.data}")
        return ws

    app = web.Application(
        middlewares=[
            aiohttp_session.session_middleware(aiohttp_session.SimpleCookieStorage()),
            sw.session_ws_middleware(paths=["/login"]),
        ]
    )
    app.add_routes([web.post("/login", login), web.post("/logout", logout), web.get("/ws", websocket)])
    sw.setup(app, registry)
    return app


@asynccontextmanager
async def serve_nodes(registries: Iterable[SessionRegistry]) -> AsyncIterator[list[TestServer]]:
    """One app server per registry (node of the cluster), on free ports of 127.0.0.1."""
    async with AsyncExitStack() as stack:
        servers = []
        for registry in registries:
            server = TestServer(create_app(registry), host="127.0.0.1")
            await server.start_server()
            stack.push_async_callback(server.close)
            servers.append(server)
        yield servers


async def open_tab(browser: aiohttp.ClientSession, server: TestServer) -> aiohttp.ClientWebSocketResponse:
    """A websocket, once registered: the handler answers only after ``session_ws`` registered it
    (the client gets its 101 before that)."""
    ws = await browser.ws_connect(server.make_url("/ws"))
    await ws.send_str("ping")
    assert await ws.receive_str(timeout=10) == "echo ping"
    return ws


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int:
    """The code of the server's close frame."""
    message = await ws.receive(timeout=10)
    assert message.type is aiohttp.WSMsgType.CLOSE, message
    code: int = message.data
    return code


@pytest.mark.asyncio
async def test_logout_closes_the_sessions_sockets_on_every_node(
    sessionws_cluster: Callable[..., AbstractAsyncContextManager[MemoryCluster]],
) -> None:
    async with (
        sessionws_cluster(2) as cluster,
        serve_nodes(cluster) as (one, two),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
    ):
        await browser.post(one.make_url("/login?user=alice"))
        tab_on_one = await open_tab(browser, one)
        tab_on_two = await open_tab(browser, two)

        await browser.post(one.make_url("/logout"))

        assert await close_code(tab_on_one) == 1000
        assert await close_code(tab_on_two) == 1000


@pytest.mark.asyncio
async def test_a_node_cut_off_during_the_logout_closes_the_socket_when_it_returns(
    sessionws_cluster: Callable[..., AbstractAsyncContextManager[MemoryCluster]],
) -> None:
    async with (
        sessionws_cluster(2) as cluster,
        serve_nodes(cluster) as (one, two),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
    ):
        await browser.post(one.make_url("/login?user=alice"))
        tab_on_two = await open_tab(browser, two)
        async with cluster.cut_off(1):  # node two loses the broker, and gets it back at the end
            await browser.post(one.make_url("/logout"))
            assert cluster[1].local_count("user:alice") == 1  # it has not heard of the logout
        # Back on the broker, node two has reconciled: the close it missed reached the socket.
        assert await close_code(tab_on_two) == 1000


@pytest.mark.asyncio
async def test_an_admin_closes_every_socket_of_a_user(
    sessionws_cluster: Callable[..., AbstractAsyncContextManager[MemoryCluster]],
) -> None:
    """A third node without a web app (a worker, the admin CLI) closes a user's sockets."""
    async with (
        sessionws_cluster(3) as cluster,
        serve_nodes(cluster.nodes[:2]) as (one, _),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
    ):
        await browser.post(one.make_url("/login?user=bob"))
        tab = await open_tab(browser, one)
        report = await cluster[2].close_all("user:bob", code=4000, reason="password changed", confirm=True)
        assert report.complete and report.total == 1
        assert await close_code(tab) == 4000
