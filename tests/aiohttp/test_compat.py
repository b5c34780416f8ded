"""Everything aiohttp_session_ws 1.1.1 did, as outcomes a client can observe.

Each test runs real servers and real websocket clients; the old library's tests
mocked the websocket (and one of them could not fail).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import aiohttp_session
import pytest
from aiohttp import web

import sessionws_aiohttp as sw
from sessionws import CLOSE_SHUTDOWN, SessionRegistry
from tests._helpers import FAST, wait_for
from tests.aiohttp.helpers import (
    Browser,
    closed_with,
    fast_registry,
    hub_url,
    make_app,
    serve,
    session_cookie_id,
)

pytestmark = pytest.mark.anyio


def compat_registry(**options: Any) -> sw.SessionWSRegistry:
    return sw.SessionWSRegistry(transport=hub_url(), **{**FAST, **options})


async def test_the_id_is_created_on_the_first_request_and_kept() -> None:
    async with serve(make_app(compat_registry())) as server, Browser() as browser:
        status, first = await browser.get(server, "/")
        assert status == 200
        assert len(first) == 32 and uuid.UUID(hex=first)  # uuid4().hex, as before
        assert session_cookie_id(browser, "aiohttp_session_ws_id") == first  # the old session key
        assert (await browser.get(server, "/"))[1] == first
        _, on_socket = await browser.hello(server)
        assert on_socket == first


async def test_the_id_is_created_on_the_first_websocket_and_its_cookie_rides_on_the_101() -> None:
    app = make_app(fast_registry(), middleware=None)
    async with serve(app) as server, Browser() as browser:
        assert browser.cookie() is None
        _, first = await browser.hello(server)
        assert session_cookie_id(browser) == first  # set by the upgrade response
        _, second = await browser.hello(server)
        assert second == first
        assert (await browser.get(server, "/"))[1] == first


async def test_an_existing_id_is_kept_by_the_middleware_and_the_websocket() -> None:
    async with serve(make_app(fast_registry())) as server, Browser() as browser:
        _, first = await browser.get(server, "/")
        cookie = browser.cookie()
        for _ in range(3):
            assert (await browser.get(server, "/"))[1] == first
            _, on_socket = await browser.hello(server)
            assert on_socket == first
        assert browser.cookie() == cookie  # nothing re-minted or re-saved


async def test_the_helpers_inside_a_handler() -> None:
    async def handle_helpers(request: web.Request) -> web.Response:
        steps: dict[str, Any] = {"start": await sw.get_session_ws_id(request)}
        steps["new"] = await sw.new_session_ws_id(request)
        steps["after_new"] = await sw.get_session_ws_id(request)
        steps["ensure_keeps"] = await sw.ensure_session_ws_id(request)
        await sw.delete_session_ws_id(request)
        steps["after_delete"] = await sw.get_session_ws_id(request)
        steps["ensure_makes"] = await sw.ensure_session_ws_id(request)
        return web.json_response(steps)

    app = make_app(compat_registry(), middleware=None, extra_routes=[web.get("/helpers", handle_helpers)])
    async with serve(app) as server, Browser() as browser:
        status, body = await browser.get(server, "/helpers")
        assert status == 200
        steps = json.loads(body)
        assert steps["start"] is None
        assert steps["new"] == steps["after_new"] == steps["ensure_keeps"]
        assert steps["after_delete"] is None
        assert steps["ensure_makes"] not in (None, steps["new"])
        assert session_cookie_id(browser, "aiohttp_session_ws_id") == steps["ensure_makes"]


async def test_reset_closes_both_sockets_with_1000_after_its_response_and_reconnects_get_a_new_id() -> None:
    registry = compat_registry()
    async with serve(make_app(registry)) as server, Browser() as browser, Browser() as stranger:
        await browser.get(server, "/")
        (one, old), (two, _) = await browser.hello(server), await browser.hello(server)
        other, other_id = await stranger.hello(server)
        assert set(registry) == {old, other_id}
        assert len(registry[old]) == 2

        events: list[str] = []

        async def watch(websocket: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
            result = await closed_with(websocket)
            events.append("close")
            return result

        watchers = [asyncio.ensure_future(watch(one)), asyncio.ensure_future(watch(two))]
        status, body = await browser.post(server, "/reset")
        events.append("response")
        assert (status, body) == (200, "reset")
        assert [await watcher for watcher in watchers] == [(1000, ""), (1000, "")]
        assert events == ["response", "close", "close"]

        _, new = await browser.hello(server)
        assert new != old
        await wait_for(lambda: old not in registry)
        assert not other.closed  # another session is untouched


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_sync_and_async_id_factories(kind: str) -> None:
    made: list[str] = []

    def sync_factory(request: web.Request) -> str:
        made.append(f"sync-{len(made)}")
        return made[-1]

    async def async_factory(request: web.Request) -> str:
        await asyncio.sleep(0)
        made.append(f"async-{len(made)}")
        return made[-1]

    factory = sync_factory if kind == "sync" else async_factory
    async with serve(make_app(compat_registry(id_factory=factory))) as server, Browser() as browser:
        assert (await browser.get(server, "/"))[1] == f"{kind}-0"
        await browser.post(server, "/reset")
        _, after_reset = await browser.hello(server)
        assert after_reset == f"{kind}-1"


async def test_a_custom_session_key() -> None:
    async with serve(make_app(compat_registry(session_key="ws"))) as server, Browser() as browser:
        _, first = await browser.get(server, "/")
        assert session_cookie_id(browser, "ws") == first


async def test_shutdown_sends_1001_and_empties_the_registry() -> None:
    registry = compat_registry()
    async with Browser() as browser:
        async with serve(make_app(registry)) as server:
            sockets = [(await browser.hello(server))[0] for _ in range(3)]
            assert len(registry.registry.local_keys()) == 1
            closing = [asyncio.ensure_future(closed_with(websocket)) for websocket in sockets]
        codes = [await close for close in closing]
        assert codes == [(CLOSE_SHUTDOWN, "server shutting down")] * 3
        assert len(registry) == 0
        assert not registry.registry.running
        assert registry.registry.stats()["sockets"] == 0


async def test_the_mapping_and_the_old_methods() -> None:
    registry = compat_registry()

    async def handle_plain_websocket(request: web.Request) -> web.WebSocketResponse:
        # Registered by hand, as subclasses of the old class did.
        websocket = web.WebSocketResponse()
        await websocket.prepare(request)
        session_ws_id = await registry.ensure_id(request)
        await registry.register(session_ws_id, websocket)
        try:
            await websocket.send_json({"id": session_ws_id})
            async for _ in websocket:
                pass
        finally:
            await registry.unregister(session_ws_id, websocket)
            await registry.unregister("unknown", websocket)  # no error, as before
        return websocket

    app = make_app(registry, extra_routes=[web.get("/plain", handle_plain_websocket)])
    async with serve(app) as server, Browser() as alice, Browser() as bob:
        (a1, alice_id), (a2, _) = await alice.hello(server), await alice.hello(server, "/plain")
        b1, bob_id = await bob.hello(server)
        assert sorted(registry) == sorted([alice_id, bob_id])
        assert len(registry) == 2
        assert all(isinstance(websocket, web.WebSocketResponse) for websocket in registry[alice_id])
        assert len(registry[alice_id]) == 2 and len(registry[bob_id]) == 1
        with pytest.raises(KeyError):
            registry["nobody"]
        assert registry.get("nobody") is None

        await registry.close_all_session(alice_id)
        assert [await closed_with(a1), await closed_with(a2)] == [(1000, "")] * 2
        assert not b1.closed
        await wait_for(lambda: alice_id not in registry)

        await registry.close_all()  # every socket of every session
        assert await closed_with(b1) == (1000, "")
        await wait_for(lambda: len(registry) == 0)


async def test_schedule_close_all_session_on_the_class_and_a_redirect() -> None:
    registry = compat_registry()

    async def handle_logout(request: web.Request) -> web.Response:
        response = web.HTTPFound("/")
        await registry.schedule_close_all_session(request, response)
        await aiohttp_session.new_session(request)
        await registry.new_id(request)
        raise response

    app = make_app(registry, extra_routes=[web.get("/logout", handle_logout)])
    async with serve(app) as server, Browser() as browser:
        websocket, old = await browser.hello(server)
        async with browser.http.get(server.make_url("/logout"), allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Connection"] == "close"
        assert await closed_with(websocket) == (1000, "")
        _, new = await browser.hello(server)
        assert new != old


async def test_setup_takes_a_session_registry_and_the_default_key_is_sessionws_id() -> None:
    registry = SessionRegistry(hub_url(), **FAST)
    async with serve(make_app(registry)) as server, Browser() as browser:
        _, first = await browser.get(server, "/")
        assert len(first) == 22  # secrets.token_urlsafe(16)
        assert session_cookie_id(browser, "sessionws_id") == first
        assert sw.get_registry(server.app) is registry
