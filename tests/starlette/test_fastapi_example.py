"""``examples/fastapi_app.py`` behind real uvicorn servers: two FastAPI nodes, one cluster."""

from __future__ import annotations

import importlib.util
import json
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from sessionws_starlette import MISSING_ID_REASON
from tests._helpers import FAST
from tests.starlette.servers import cookie_header, uvicorn_server, ws_url
from tests.starlette.test_server import close_code

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).parents[2] / "examples" / "fastapi_app.py"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sessionws_fastapi_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # FastAPI resolves the example's annotations through it
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[str, str]]:
    example = load_example()
    url = f"memory://fastapi-{secrets.token_hex(6)}"
    async with AsyncExitStack() as stack:
        bases = []
        for name in ("node-a", "node-b"):
            app: FastAPI = example.create_app(url, secret_key="shared secret", node_id=name, **FAST)
            bases.append(await stack.enter_async_context(uvicorn_server(app)))
        async with httpx.AsyncClient(base_url=bases[0]) as client:
            with anyio.fail_after(3):
                while not (await client.get("/health")).json()["healthy"]:
                    await anyio.sleep(0.01)
        yield bases[0], bases[1]


async def open_ws(base: str, cookies: httpx.Cookies) -> tuple[ClientConnection, dict[str, str]]:
    websocket = await connect(ws_url(base), additional_headers=cookie_header(cookies))
    return websocket, json.loads(await websocket.recv())


async def test_login_notify_count_and_logout_across_two_fastapi_nodes() -> None:
    async with two_nodes() as (a, b), httpx.AsyncClient(base_url=a) as client:
        first_id = (await client.get("/")).json()["session_ws_id"]
        old_cookies = httpx.Cookies(client.cookies)
        login = (await client.post("/login", params={"user": "alice"})).json()
        assert login["user"] == "alice" and login["session_ws_id"] != first_id

        # The id from before the login was revoked: refused before the upgrade.
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(b), additional_headers=cookie_header(old_cookies))
        assert refused.value.response.status_code == 403

        on_a, hello_a = await open_ws(a, client.cookies)
        on_b, hello_b = await open_ws(b, client.cookies)
        assert hello_a["user"] == hello_b["user"] == "alice"
        assert hello_a["handle"].startswith("node-a.") and hello_b["handle"].startswith("node-b.")

        assert (await client.post("/notify", params={"text": "hi"})).json() == {"sent": True}
        assert await on_a.recv() == "hi"
        assert await on_b.recv() == "hi"
        assert (await client.get("/sockets")).json() == {"total": 2, "complete": True}

        assert (await client.post("/logout")).json() == {"logged_out": True}
        assert await close_code(on_a) == (1000, "")
        assert await close_code(on_b) == (1000, "")
        assert (await client.get("/")).json()["user"] is None


async def test_logout_everywhere_closes_every_session_of_the_user() -> None:
    async with (
        two_nodes() as (a, b),
        httpx.AsyncClient(base_url=a) as laptop,
        httpx.AsyncClient(base_url=b) as phone,
    ):
        for client in (laptop, phone):
            await client.post("/login", params={"user": "bob"})
        on_laptop, _ = await open_ws(a, laptop.cookies)
        on_phone, _ = await open_ws(b, phone.cookies)
        assert (await laptop.post("/logout-everywhere")).json() == {"closed": 1}
        assert await close_code(on_laptop) == (4001, "signed out everywhere")
        assert await close_code(on_phone) == (4001, "signed out everywhere")


async def test_a_websocket_without_a_session_is_closed_with_1008() -> None:
    async with two_nodes() as (a, _), connect(ws_url(a)) as websocket:
        assert await close_code(websocket) == (1008, MISSING_ID_REASON)
