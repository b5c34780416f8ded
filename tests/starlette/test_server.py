"""The Starlette adapter behind real uvicorn servers, with real websocket clients.

uvicorn runs on asyncio only, so these tests pin the asyncio backend.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from sessionws import SessionRegistry
from sessionws_starlette import MISSING_ID_REASON
from tests.starlette.apps import fast_registry, make_app
from tests.starlette.servers import cookie_header, uvicorn_server, ws_url

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def cluster(count: int) -> AsyncIterator[list[tuple[str, SessionRegistry]]]:
    url = f"memory://starlette-server-{secrets.token_hex(6)}"
    async with AsyncExitStack() as stack:
        nodes = []
        for index in range(count):
            registry = fast_registry(url, f"node{index}")
            base = await stack.enter_async_context(uvicorn_server(make_app(registry)))
            nodes.append((base, registry))
        with anyio.fail_after(3):
            while not all(len(registry.live_nodes()) >= count - 1 for _, registry in nodes):
                await anyio.sleep(0.01)
        yield nodes


async def login(base: str) -> httpx.Cookies:
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.get("/")
        assert response.status_code == 200
        return client.cookies


async def open_ws(base: str, cookies: httpx.Cookies, path: str = "/ws") -> ClientConnection:
    websocket = await connect(ws_url(base, path), additional_headers=cookie_header(cookies))
    greeting = await websocket.recv()
    assert isinstance(greeting, str) and greeting.startswith("registered"), greeting
    return websocket


async def close_code(websocket: ClientConnection) -> tuple[int | None, str | None]:
    with anyio.fail_after(3):
        try:
            while True:
                await websocket.recv()
        except ConnectionClosed as closed:
            frame = closed.rcvd
            return (frame.code, frame.reason) if frame is not None else (None, None)


async def test_logout_on_a_closes_the_sessions_sockets_on_b_and_c_after_the_response() -> None:
    async with cluster(3) as ((a, registry_a), (b, registry_b), (c, registry_c)):
        cookies = await login(a)
        other = await open_ws(c, await login(b))
        on_b, on_c = await open_ws(b, cookies), await open_ws(c, cookies)
        async with httpx.AsyncClient(base_url=a, cookies=cookies) as client:
            response = await client.post("/logout")
        assert response.json() == {"logged_out": True}
        assert await close_code(on_b) == (1000, "")
        assert await close_code(on_c) == (1000, "")
        await other.send("ping")
        assert await other.recv() == "echo ping"
        await other.close()
        with anyio.fail_after(3):
            while registry_b.stats()["sockets"] or registry_c.stats()["sockets"]:
                await anyio.sleep(0.01)
        assert registry_a.stats()["sockets"] == 0


async def test_a_revoked_id_is_refused_with_http_403_on_another_node() -> None:
    async with cluster(3) as ((a, _), (b, _), (c, registry_c)):
        cookies = await login(a)
        on_b = await open_ws(b, cookies)
        async with httpx.AsyncClient(base_url=a, cookies=cookies) as client:
            assert (await client.post("/revoke")).json() == {"closed": 1, "complete": True}
        assert await close_code(on_b) == (4401, "session revoked")
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(c), additional_headers=cookie_header(cookies))
        assert refused.value.response.status_code == 403
        assert registry_c.stats()["sockets"] == 0


async def test_a_websocket_without_an_id_is_closed_with_1008_and_the_reason() -> None:
    registry = fast_registry("memory://", "solo")
    async with uvicorn_server(make_app(registry)) as base, connect(ws_url(base)) as websocket:
        assert await close_code(websocket) == (1008, MISSING_ID_REASON)
    assert registry.stats()["registered"] == 0


async def test_a_plain_get_on_the_websocket_route_registers_nothing() -> None:
    registry = fast_registry("memory://", "solo")
    async with uvicorn_server(make_app(registry)) as base:
        cookies = await login(base)
        async with httpx.AsyncClient(base_url=base, cookies=cookies) as client:
            response = await client.get("/ws")
        assert response.status_code == 404
        assert registry.stats()["registered"] == 0


async def test_a_client_that_vanishes_mid_close_does_not_disturb_the_others() -> None:
    registry = fast_registry("memory://", "solo")
    async with uvicorn_server(make_app(registry)) as base:
        cookies = await login(base)
        vanishing, staying = await open_ws(base, cookies), await open_ws(base, cookies)
        vanishing.transport.abort()  # no close frame, no FIN: the client is simply gone
        async with httpx.AsyncClient(base_url=base, cookies=cookies) as client:
            assert (await client.post("/logout")).status_code == 200
            assert await close_code(staying) == (1000, "")
            with anyio.fail_after(3):
                while registry.stats()["sockets"]:
                    await anyio.sleep(0.01)
            assert (await client.get("/")).status_code == 200


async def test_accept_options_reach_the_handshake() -> None:
    registry = fast_registry("memory://", "solo")
    async with uvicorn_server(make_app(registry)) as base:
        cookies = await login(base)
        chat = [Subprotocol("chat")]
        async with connect(
            ws_url(base, "/ws-chat"), additional_headers=cookie_header(cookies), subprotocols=chat
        ) as websocket:
            assert websocket.subprotocol == "chat"
            assert str(await websocket.recv()).startswith("registered")


async def test_uvicorn_closes_websockets_with_1012_before_the_lifespan_ends() -> None:
    """Documented: uvicorn closes open websockets itself (1012) before lifespan shutdown,
    so the registry's 1001 close reaches only sockets the server left open."""
    registry = fast_registry("memory://", "solo")
    async with uvicorn_server(make_app(registry)) as base:
        websocket = await open_ws(base, await login(base))
    assert await close_code(websocket) == (1012, "")
    assert not registry.running
    assert registry.stats()["sockets"] == 0


async def test_an_endpoint_reading_after_the_registry_closed_its_socket_ends_cleanly() -> None:
    registry = fast_registry(f"memory://late-{secrets.token_hex(4)}", "node0")
    app = make_app(registry)
    async with uvicorn_server(app) as base:
        cookies = await login(base)
        websocket = await open_ws(base, cookies, "/ws-late-read")
        with pytest.raises(ConnectionClosed) as closed:
            await websocket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == "logged out elsewhere"
        with anyio.fail_after(5):
            while "late reader ended" not in app.state.events:
                await anyio.sleep(0.02)
