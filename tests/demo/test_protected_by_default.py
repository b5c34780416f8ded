"""The apps the project ships — both demos and the FastAPI example — refuse a cross-site
websocket (403, nothing registered) and a session's socket beyond the default cap (429)
without any configuration, and let their own pages in."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from sessionws import DEFAULT_MAX_SOCKETS_PER_SESSION
from sessionws_demo import DemoOptions
from sessionws_demo._aiohttp_app import serve as serve_aiohttp_demo
from sessionws_demo._starlette_app import make_app as make_starlette_demo
from tests._helpers import FAST
from tests.starlette.servers import cookie_header, uvicorn_server, ws_url
from tests.starlette.test_fastapi_example import load_example

pytestmark = pytest.mark.anyio

EVIL = Origin("https://evil.example")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn


@asynccontextmanager
async def aiohttp_demo() -> AsyncIterator[str]:
    options = DemoOptions(transport=f"memory://protected-{secrets.token_hex(6)}", port=0, secret="s" * 32)
    async with anyio.create_task_group() as tasks:
        listening = await tasks.start(serve_aiohttp_demo, options)
        yield str(listening.url).rstrip("/")
        tasks.cancel_scope.cancel()


@asynccontextmanager
async def starlette_demo() -> AsyncIterator[str]:
    options = DemoOptions(transport=f"memory://protected-{secrets.token_hex(6)}", node="a", secret="s" * 32)
    async with uvicorn_server(make_starlette_demo(options)) as base:
        yield base


@asynccontextmanager
async def fastapi_example() -> AsyncIterator[str]:
    app = load_example().create_app(
        f"memory://protected-{secrets.token_hex(6)}", secret_key="k" * 32, node_id="a", **FAST
    )
    async with uvicorn_server(app) as base:
        yield base


APPS = {"aiohttp demo": aiohttp_demo, "starlette demo": starlette_demo, "fastapi example": fastapi_example}


async def status_of(base: str, cookies: httpx.Cookies, origin: Origin | None) -> int:
    try:
        websocket = await connect(ws_url(base), additional_headers=cookie_header(cookies), origin=origin)
    except InvalidStatus as refused:
        return refused.response.status_code
    await websocket.close()
    return 101


@pytest.mark.parametrize("name", APPS)
async def test_a_cross_site_socket_is_refused_and_the_own_page_gets_in(name: str) -> None:
    async with APPS[name]() as base, httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/")).status_code == 200
        assert await status_of(base, client.cookies, EVIL) == 403
        assert await status_of(base, client.cookies, Origin(base)) == 101
        host = urlsplit(base).hostname
        assert await status_of(base, client.cookies, Origin(base.replace(str(host), "localhost"))) == 403


@pytest.mark.parametrize(
    "name",
    [
        # The demos push the session's socket count to each of its sockets whenever one
        # joins: 100 sockets cost about 5,000 messages, some 50 s here.
        pytest.param("aiohttp demo", marks=pytest.mark.slow),
        pytest.param("starlette demo", marks=pytest.mark.slow),
        "fastapi example",
    ],
)
async def test_the_default_cap_refuses_the_101st_socket_of_a_session(name: str) -> None:
    async with APPS[name]() as base, httpx.AsyncClient(base_url=base) as client, AsyncExitStack() as stack:
        assert (await client.get("/")).status_code == 200
        sockets: list[ClientConnection] = []
        for _ in range(DEFAULT_MAX_SOCKETS_PER_SESSION):
            websocket = await connect(ws_url(base), additional_headers=cookie_header(client.cookies))
            stack.push_async_callback(websocket.close)
            sockets.append(websocket)
        assert await status_of(base, client.cookies, None) == 429
        async with httpx.AsyncClient(base_url=base) as other:
            assert (await other.get("/")).status_code == 200
            assert await status_of(base, other.cookies, None) == 101
