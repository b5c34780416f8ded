"""Cross-site websocket hijacking, tried for real in headless Chromium: a page served from
another origin (another port of 127.0.0.1, so the browser sends the demo's session cookie
with the upgrade) opens a websocket to the demo. The demo refuses it before the upgrade and
registers nothing; its own page connects as before. Runs on both demo frameworks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from tests.browser._harness import DemoNode, Sessions, expect

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

#: The attacker's page: opens a socket to the target, and tells what happened in
#: ``data-events`` (a JSON list), ending with ``"close <code>"``.
EVIL_PAGE = """<!doctype html>
<title>not the demo</title>
<body data-events="[]">
<script>
  const events = [];
  const note = (event) => { events.push(event); document.body.dataset.events = JSON.stringify(events); };
  const ws = new WebSocket(%s);
  ws.onopen = () => note("open");
  ws.onmessage = (message) => note("message " + message.data);
  ws.onerror = () => note("error");
  ws.onclose = (close) => note("close " + close.code);
</script>
</body>
"""


@asynccontextmanager
async def evil_site(target_ws_url: str) -> AsyncIterator[str]:
    """A page on another port of 127.0.0.1 (another origin, the same site)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=EVIL_PAGE % json.dumps(target_ws_url), content_type="text/html")

    app = web.Application()
    app.add_routes([web.get("/", page)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()


async def state_of(sessions: Sessions, demo: DemoNode, index: int = 0) -> dict[str, Any]:
    """The demo's ``/api/state`` as the victim's browser context sees it."""
    response = await sessions.opened[index].context.request.get(demo.url + "api/state")
    assert response.ok
    result: dict[str, Any] = await response.json()
    return result


async def test_a_page_of_another_origin_cannot_open_a_socket_with_the_victims_cookie(
    demo: DemoNode, sessions: Sessions
) -> None:
    victim = await sessions.new()
    tab = await victim.open(demo.url, "the demo's own page")
    await expect(tab.count).to_have_text("1")
    session = await tab.session_id()
    assert (await state_of(sessions, demo))["count"] == 1

    target = demo.url.replace("http://", "ws://") + "ws"
    async with evil_site(target) as evil_url:
        assert evil_url.split(":")[2] != demo.url.split(":")[2]  # another port: another origin
        evil = await victim.context.new_page()
        await evil.goto(evil_url)
        body = evil.locator("body")
        await expect(body).to_have_attribute("data-events", '["error","close 1006"]')

    # Nothing was registered: the session still has the demo's own socket only, and the
    # demo says why it refused (once, with the origin it saw).
    assert (await state_of(sessions, demo))["count"] == 1
    await expect(tab.count).to_have_text("1")
    assert await tab.session_id() == session
    assert f"origin {evil_url.rstrip('/')} is not the request's own origin" in demo.output()

    # The demo's own page still connects: a second tab of the session.
    second = await victim.open(demo.url, "a second tab of the demo")
    await expect(second.count).to_have_text("2")
    assert await second.session_id() == session
