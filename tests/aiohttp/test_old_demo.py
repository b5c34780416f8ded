"""The demo of aiohttp_session_ws 1.1.1, with only its imports changed, behaves as before."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import anyio
import pytest
from aiohttp import web

from sessionws import CLOSE_SHUTDOWN
from tests.aiohttp import old_demo
from tests.aiohttp.helpers import Browser, closed_with, serve, session_cookie_id

pytestmark = pytest.mark.anyio

OLD_KEY = "aiohttp_session_ws_id"


def old_app() -> web.Application:
    app = old_demo.make_app()  # type: ignore[no-untyped-call]  # the old code, untyped as it was
    assert isinstance(app, web.Application)
    return app


async def announced_id(websocket: aiohttp.ClientWebSocketResponse) -> str:
    """The id in the demo's "Websocket associated with session [...]" message."""
    with anyio.fail_after(3):
        text = await websocket.receive_str()
    found = re.fullmatch(r"Websocket associated with session \[(\w+)\] connected for \d+", text)
    assert found, text
    return found.group(1)


async def test_the_page_the_sockets_and_reset() -> None:
    async with serve(old_app()) as server, Browser() as browser:
        status, page = await browser.get(server, "/")
        assert status == 200 and "aiohttp_session_ws demo" in page
        first = session_cookie_id(browser, OLD_KEY)
        assert first is not None

        sockets = [await browser.websocket(server), await browser.websocket(server)]
        assert [await announced_id(websocket) for websocket in sockets] == [first, first]

        closing = [asyncio.ensure_future(closed_with(websocket)) for websocket in sockets]
        status, text = await browser.get(server, "/reset")
        assert (status, text) == (200, f"Reset called on session {first}!")
        assert [await close for close in closing] == [(1000, "")] * 2

        second = session_cookie_id(browser, OLD_KEY)
        assert second not in (None, first)
        assert await announced_id(await browser.websocket(server)) == second


# The README's logout returns the HTTPFound (aiohttp has since deprecated that in
# favour of raising it); the warning is aiohttp's, about the old code, not ours.
@pytest.mark.filterwarnings("ignore:returning HTTPException object is deprecated:DeprecationWarning")
async def test_the_readme_logout_pattern() -> None:
    app = old_app()
    app.router.add_get("/logout", old_demo.handle_logout)
    async with serve(app) as server, Browser() as browser:
        await browser.get(server, "/")
        first = session_cookie_id(browser, OLD_KEY)
        websocket = await browser.websocket(server)
        assert await announced_id(websocket) == first
        async with browser.http.get(server.make_url("/logout"), allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"] == "/"
        assert await closed_with(websocket) == (1000, "")
        second = session_cookie_id(browser, OLD_KEY)
        assert second not in (None, first)
        assert await announced_id(await browser.websocket(server)) == second


async def test_shutdown_closes_the_demo_sockets() -> None:
    async with Browser() as browser:
        async with serve(old_app()) as server:
            websocket = await browser.websocket(server)
            await announced_id(websocket)
            closing = asyncio.ensure_future(closed_with(websocket))
        assert await closing == (CLOSE_SHUTDOWN, "server shutting down")
