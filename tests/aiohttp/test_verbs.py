"""The new verbs (revoke, rotate, send, count, any key), extra keys, the limited
middleware, sub-applications and the app's lifetime."""

from __future__ import annotations

import asyncio
import json
import warnings

import aiohttp
import pytest
from aiohttp import web

import sessionws_aiohttp as sw
from sessionws import CLOSE_REVOKED, SessionRegistry
from tests._helpers import wait_for
from tests.aiohttp.helpers import (
    Browser,
    closed_with,
    fast_registry,
    make_app,
    serve,
    session_cookie_id,
)

pytestmark = pytest.mark.anyio


async def nothing_arrives(websocket: aiohttp.ClientWebSocketResponse, seconds: float = 0.2) -> bool:
    try:
        message = await websocket.receive(timeout=seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"expected nothing, got {message}")


async def test_send_and_count_reach_only_the_sessions_sockets() -> None:
    async with serve(make_app(fast_registry())) as server, Browser() as alice, Browser() as bob:
        (a1, _), (a2, _) = await alice.hello(server), await alice.hello(server)
        b1, _ = await bob.hello(server)
        assert await alice.post(server, "/send", "hello") == (200, "sent")
        assert [await a1.receive_str(timeout=2), await a2.receive_str(timeout=2)] == ["hello", "hello"]
        assert await nothing_arrives(b1)
        status, body = await alice.get(server, "/count")
        assert status == 200
        assert json.loads(body) == {"total": 2, "complete": True}


async def test_revoke_closes_with_4401_and_refuses_the_id_with_403() -> None:
    registry = fast_registry()
    async with serve(make_app(registry)) as server, Browser() as alice, Browser() as bob:
        (a1, alice_id), (a2, _) = await alice.hello(server), await alice.hello(server)
        b1, _ = await bob.hello(server)
        assert await alice.post(server, "/logout") == (200, '{"closed_here": 2}')
        assert [await closed_with(a1), await closed_with(a2)] == [(CLOSE_REVOKED, "session revoked")] * 2
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await alice.websocket(server)
        assert refused.value.status == 403
        assert registry.local_count(alice_id) == 0
        assert await nothing_arrives(b1)


async def test_rotate_revokes_the_old_id_after_the_response_and_assigns_a_new_one() -> None:
    registry = fast_registry()
    async with serve(make_app(registry)) as server, Browser() as alice, Browser() as thief:
        websocket, old = await alice.hello(server)
        stolen = alice.cookie()
        assert stolen is not None
        closing = asyncio.ensure_future(closed_with(websocket))
        status, new = await alice.post(server, "/login")
        assert status == 200 and new not in ("", old)
        assert await closing == (1000, "session id rotated")
        _, again = await alice.hello(server)
        assert again == new
        # Whoever learnt the old id (a fixated or stolen cookie) cannot attach with it.
        thief.http.cookie_jar.update_cookies({"AIOHTTP_SESSION": stolen}, server.make_url("/"))
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await thief.websocket(server)
        assert refused.value.status == 403


async def test_extra_keys_and_the_verbs_on_any_key() -> None:
    async with serve(make_app(fast_registry())) as server, Browser() as laptop, Browser() as phone:
        user_laptop, _ = await laptop.hello(server, "/ws?key=user:7&key=room:1")
        user_phone, _ = await phone.hello(server, "/ws?key=user:7")
        other, _ = await phone.hello(server, "/ws?key=user:8&key=room:1")
        app = server.app

        assert await sw.count_ws(app, "user:7") == (2, True)
        assert await sw.count_ws(app, "room:1") == (2, True)
        await sw.send_ws(app, "room:1", b"\x00bytes")
        assert await user_laptop.receive_bytes(timeout=2) == b"\x00bytes"
        assert await other.receive_bytes(timeout=2) == b"\x00bytes"
        assert await nothing_arrives(user_phone)

        report = await sw.close_all_ws(app, "user:7", code=4000, reason="password changed")
        assert report.closed_here == 2
        assert await closed_with(user_laptop) == (4000, "password changed")
        assert await closed_with(user_phone) == (4000, "password changed")
        assert await nothing_arrives(other)

        await sw.revoke_ws(app, "user:8")
        assert await closed_with(other) == (CLOSE_REVOKED, "session revoked")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await phone.websocket(server, "/ws?key=user:8")
        assert refused.value.status == 403


async def test_exclude_spares_the_callers_socket() -> None:
    async def handle_devices(request: web.Request) -> web.WebSocketResponse:
        async with sw.session_ws(request) as websocket:
            async for message in websocket:
                if message.data == "log out my other devices":
                    report = await sw.close_all_session_ws(request, exclude=sw.get_ws_handle(websocket))
                    await websocket.send_str(f"closed {report.closed_here}")
        return websocket

    app = make_app(fast_registry(), extra_routes=[web.get("/devices", handle_devices)])
    async with serve(app) as server, Browser() as browser:
        await browser.get(server, "/")
        others = [(await browser.hello(server))[0] for _ in range(2)]
        mine = await browser.websocket(server, "/devices")
        await mine.send_str("log out my other devices")
        assert await mine.receive_str(timeout=2) == "closed 2"
        assert [await closed_with(websocket) for websocket in others] == [(1000, "")] * 2
        await mine.send_str("still here?")
        assert await nothing_arrives(mine)
        assert not mine.closed


async def test_schedule_close_for_any_key_after_the_response() -> None:
    async def handle_kick_room(request: web.Request) -> web.Response:
        response = web.Response(text="kicked")
        await sw.schedule_close_all_ws(request, response, "room:1", code=4001, reason="room closed")
        return response

    app = make_app(fast_registry(), extra_routes=[web.post("/kick", handle_kick_room)])
    async with serve(app) as server, Browser() as browser:
        websocket, _ = await browser.hello(server, "/ws?key=room:1")
        closing = asyncio.ensure_future(closed_with(websocket))
        assert await browser.post(server, "/kick") == (200, "kicked")
        assert await closing == (4001, "room closed")


@pytest.mark.parametrize(
    "middleware",
    [
        sw.session_ws_middleware(paths=["/", "/rooms/{room}"]),
        sw.session_ws_middleware(when=lambda request: request.path in ("/", "/rooms/5")),
    ],
)
async def test_the_middleware_limited_to_chosen_routes(middleware: object) -> None:
    async def handle_asset(request: web.Request) -> web.Response:
        return web.Response(text="body { }")

    async def handle_room(request: web.Request) -> web.Response:
        return web.Response(text=await sw.get_session_ws_id(request) or "")

    app = make_app(
        fast_registry(),
        middleware=middleware,
        extra_routes=[web.get("/static/app.css", handle_asset), web.get("/rooms/{room}", handle_room)],
    )
    async with serve(app) as server:
        async with Browser() as browser:
            assert await browser.get(server, "/static/app.css") == (200, "body { }")
            assert browser.cookie() is None  # static files do not mint sessions
            _, made = await browser.get(server, "/")
            assert made and session_cookie_id(browser) == made
        async with Browser() as browser:
            _, made = await browser.get(server, "/rooms/5")
            assert made and session_cookie_id(browser) == made


def test_the_middlewares_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="paths= or when="):
        sw.session_ws_middleware()
    with pytest.raises(TypeError, match="not a str"):
        sw.session_ws_middleware(paths="/")
    with pytest.raises(ValueError, match="starting with '/'"):
        sw.session_ws_middleware(paths=["rooms"])


async def test_a_sub_application_finds_its_parents_registry() -> None:
    registry = fast_registry()
    child = web.Application()
    child.router.add_get("/ws", _child_ws)
    parent = make_app(registry)
    parent.add_subapp("/child", child)
    async with serve(parent) as server, Browser() as browser:
        _, session_ws_id = await browser.get(server, "/")
        websocket = await browser.websocket(server, "/child/ws")
        assert (await websocket.receive_json(timeout=2))["id"] == session_ws_id
        assert registry.local_count(session_ws_id) == 1
        assert sw.get_registry(parent) is registry


async def _child_ws(request: web.Request) -> web.WebSocketResponse:
    async with sw.session_ws(request) as websocket:
        await websocket.send_json({"id": await sw.get_session_ws_id(request)})
        async for _ in websocket:
            pass
    return websocket


async def test_no_string_keys_of_ours() -> None:
    """aiohttp warns (NotAppKeyWarning) for string keys; only aiohttp-session's own remain."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with serve(make_app(fast_registry())) as server, Browser() as browser:
            await browser.get(server, "/")
            websocket, _ = await browser.hello(server)
            await browser.post(server, "/reset")
            await closed_with(websocket)
    ours = [
        warning
        for warning in caught
        if issubclass(warning.category, web.NotAppKeyWarning) and "aiohttp_session" not in warning.filename
    ]
    assert ours == []


async def test_a_registry_entered_by_its_owner_outlives_the_app() -> None:
    registry = fast_registry()
    async with registry:
        async with serve(make_app(registry)) as server, Browser() as browser:
            await browser.hello(server)
        assert registry.running
        await wait_for(lambda: registry.stats()["sockets"] == 0)
    assert not registry.running


def test_setup_checks_its_arguments() -> None:
    app = web.Application()
    with pytest.raises(TypeError, match="SessionRegistry or SessionWSRegistry"):
        sw.setup(app, "memory://")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"web\.Application"):
        sw.setup(object(), SessionRegistry())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="id_factory"):
        sw.setup(app, sw.SessionWSRegistry(), id_provider=sw.SessionWSRegistry().id_provider)
    sw.setup(app, SessionRegistry())
    with pytest.raises(RuntimeError, match="already called"):
        sw.setup(app, SessionRegistry())


async def test_a_custom_id_provider_the_users_id_from_a_header() -> None:
    class UserIdProvider:
        """Id = the user id of a (pretend) verified token: every session of a user shares it."""

        async def get_id(self, request: web.Request) -> str | None:
            user = request.headers.get("X-User")
            return f"user:{user}" if user else None

        async def new_id(self, request: web.Request) -> str:
            raise web.HTTPUnauthorized(text="log in first")

        async def delete_id(self, request: web.Request) -> None:
            pass

        async def ensure_id(self, request: web.Request) -> str:
            found = await self.get_id(request)
            return found if found is not None else await self.new_id(request)

    registry = fast_registry()
    app = make_app(registry, id_provider=UserIdProvider(), middleware=None)
    async with serve(app) as server, Browser() as laptop, Browser() as phone:
        one = await laptop.http.ws_connect(server.make_url("/ws"), headers={"X-User": "42"})
        two = await phone.http.ws_connect(server.make_url("/ws"), headers={"X-User": "42"})
        laptop.sockets.append(one)
        phone.sockets.append(two)
        assert (await one.receive_json(timeout=2))["id"] == "user:42"
        await two.receive_json(timeout=2)
        assert await sw.count_ws(server.app, "user:42") == (2, True)
        await sw.close_all_ws(server.app, "user:42")
        assert [await closed_with(one), await closed_with(two)] == [(1000, "")] * 2
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await laptop.websocket(server)
        assert refused.value.status == 401
        assert laptop.cookie() is None


async def test_strict_verbs_raise_while_the_broker_is_unreachable() -> None:
    """``strict=True`` passes through: the remote part is refused instead of queued."""
    from sessionws import BrokerUnavailableError, MemoryTransport

    registry = fast_registry()
    async with serve(make_app(registry)) as server, Browser() as alice:
        websocket, alice_id = await alice.hello(server)
        transport = registry.transport
        assert isinstance(transport, MemoryTransport)
        transport.cut()
        await wait_for(lambda: not registry.healthy)
        with pytest.raises(BrokerUnavailableError):
            await sw.close_all_ws(server.app, alice_id, strict=True)
        assert await closed_with(websocket) == (1000, "")
        with pytest.raises(BrokerUnavailableError):
            await sw.revoke_ws(server.app, "user:nobody", strict=True)
        report = await sw.close_all_ws(server.app, "user:nobody")
        assert report.queued
        transport.restore()
        await wait_for(lambda: registry.healthy)
