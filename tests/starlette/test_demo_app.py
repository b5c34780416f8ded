"""The demo's Starlette version (``sessionws_demo._starlette_app``): two uvicorn nodes, one hub."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from sessionws_demo._options import COOKIE_NAME, DemoOptions
from sessionws_demo._starlette_app import create_app, make_app
from sessionws_starlette import MISSING_ID_REASON
from tests.starlette.servers import cookie_header, uvicorn_server, ws_url
from tests.starlette.test_server import close_code

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[str, str]]:
    transport, secret = f"memory://demo-{secrets.token_hex(6)}", secrets.token_hex(16)
    async with AsyncExitStack() as stack:
        bases = [
            await stack.enter_async_context(
                uvicorn_server(make_app(DemoOptions(transport=transport, node=name, secret=secret)))
            )
            for name in ("a", "b")
        ]
        yield bases[0], bases[1]


async def messages(websocket: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of ``kind`` (count updates come and go)."""
    with anyio.fail_after(5):
        while True:
            message: dict[str, Any] = json.loads(await websocket.recv())
            if message["type"] == kind:
                return message


async def test_the_page_and_a_socket_on_the_other_node() -> None:
    async with two_nodes() as (a, b), httpx.AsyncClient(base_url=a) as client:
        page = await client.get("/")
        assert page.status_code == 200 and "sessionws demo" in page.text
        assert COOKIE_NAME in client.cookies
        static = await client.get("/static/demo.css")
        assert static.status_code == 200 and "set-cookie" not in static.headers
        state = (await client.get("/api/state")).json()
        assert state["node"] == "a" and state["transport"].startswith("memory://")
        assert len(state["session"]) == 8 and state["user"] is None and state["revoked"] is False

        async with connect(ws_url(b), additional_headers=cookie_header(client.cookies)) as websocket:
            hello = await messages(websocket, "hello")
            assert hello == {"type": "hello", "node": "b", "session": state["session"], "user": None}
            assert (await messages(websocket, "count"))["count"] == 1
            assert (await client.post("/api/broadcast")).json() == {"sent": True}
            assert (await messages(websocket, "note"))["text"] == "a tab said hello (via a)"
            await websocket.send("count")
            assert await messages(websocket, "count") == {"type": "count", "count": 1, "complete": True}

            # Reset: the session's sockets close after the response; a new id.
            reset = (await client.post("/api/reset")).json()
            assert reset["session"] != state["session"]
            assert await close_code(websocket) == (1000, "")


async def test_login_rotates_and_logout_revokes_across_nodes() -> None:
    async with two_nodes() as (a, b), httpx.AsyncClient(base_url=a) as client:
        await client.get("/")
        bad = await client.post("/api/login", json={"user": "no spaces"})
        assert bad.status_code == 400 and "error" in bad.json()

        async with connect(ws_url(b), additional_headers=cookie_header(client.cookies)) as websocket:
            await messages(websocket, "hello")
            login = (await client.post("/api/login", json={"user": "alice"})).json()
            assert login["user"] == "alice"
            assert await close_code(websocket) == (1000, "session id rotated")

        async with connect(ws_url(b), additional_headers=cookie_header(client.cookies)) as websocket:
            assert (await messages(websocket, "hello"))["user"] == "alice"
            assert (await client.post("/api/logout")).json() == {"closed": 0}
            assert await close_code(websocket) == (4401, "session revoked")
        state = (await client.get("/api/state")).json()
        assert state["revoked"] is True and state["user"] is None
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(b), additional_headers=cookie_header(client.cookies))
        assert refused.value.response.status_code == 403


async def test_a_socket_before_the_page_is_closed_with_1008() -> None:
    app = create_app(f"memory://demo-{secrets.token_hex(6)}", "solo")
    assert app.state.node_name == "solo"
    async with uvicorn_server(app) as base, connect(ws_url(base)) as websocket:
        assert await close_code(websocket) == (1008, MISSING_ID_REASON)
