"""Origin checks and the per-session socket cap, over real sockets, plus the attacks
tried on them (two Origin headers, userinfo, a lying Host, a plain GET, huge headers)."""

from __future__ import annotations

from typing import Any

import aiohttp
import aiohttp_session
import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import sessionws_aiohttp as sw
from sessionws import SessionRegistry
from tests._helpers import wait_for
from tests._upgrade import upgrade_status
from tests.aiohttp.helpers import (
    Browser,
    closed_with,
    fast_registry,
    handle_page,
    handle_websocket,
    serve,
    session_cookie_id,
)

pytestmark = pytest.mark.anyio


def secure_app(registry: SessionRegistry, **options: Any) -> web.Application:
    """The quick-start shape: aiohttp-session, the middleware, ``setup`` with ``options``."""
    app = web.Application(
        middlewares=[
            aiohttp_session.session_middleware(aiohttp_session.SimpleCookieStorage()),
            sw.session_ws_middleware(paths=["/"]),
        ]
    )
    app.add_routes([web.get("/", handle_page), web.get("/ws", handle_websocket)])
    sw.setup(app, registry, **options)
    return app


def own_origin(server: TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def refused_status(browser: Browser, server: TestServer, **options: Any) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await browser.websocket(server, **options)
    return refused.value.status


async def session_of(browser: Browser, server: TestServer) -> str:
    assert (await browser.get(server, "/"))[0] == 200
    session_id = session_cookie_id(browser)
    assert session_id is not None
    return session_id


# ---------------------------------------------------------------------- origins
async def test_a_cross_site_upgrade_gets_403_and_nothing_registered() -> None:
    registry = fast_registry()
    async with serve(secure_app(registry)) as server, Browser() as alice:
        alice_id = await session_of(alice, server)
        cookie_before = alice.cookie()
        for evil in ("https://evil.example", f"http://localhost:{server.port}", "null"):
            assert await refused_status(alice, server, origin=evil) == 403
        assert registry.local_count(alice_id) == 0
        assert registry.stats()["sockets"] == 0
        assert registry.stats()["refused_by_reason"] == {"origin": 3}
        assert alice.cookie() == cookie_before  # the session was not touched
        # The app's own page, and a client that sends no Origin (not a browser), get in.
        _, same_site_id = await alice.hello(server, "/ws")
        websocket = await alice.websocket(server, origin=own_origin(server))
        assert (await websocket.receive_json(timeout=3))["id"] == alice_id == same_site_id
        assert registry.local_count(alice_id) == 2


async def test_allowed_origins_replace_the_own_origin_and_match_subdomains() -> None:
    registry = fast_registry()
    options = {"allowed_origins": ["https://app.example", "https://*.partner.example"]}
    async with serve(secure_app(registry, **options)) as server, Browser() as alice:
        session_id = await session_of(alice, server)
        for allowed in ("https://app.example", "HTTPS://APP.EXAMPLE:443", "https://eu.partner.example"):
            await alice.websocket(server, origin=allowed)
        for refused in (
            own_origin(server),
            "https://partner.example",
            "http://app.example",
            "https://evil.example",
        ):
            assert await refused_status(alice, server, origin=refused) == 403
        await wait_for(lambda: registry.local_count(session_id) == 3)


async def test_the_opt_out_allows_any_origin() -> None:
    registry = fast_registry()
    async with serve(secure_app(registry, allowed_origins="*")) as server, Browser() as alice:
        session_id = await session_of(alice, server)
        await alice.websocket(server, origin="https://evil.example")
        await alice.websocket(server, origin="null")
        await wait_for(lambda: registry.local_count(session_id) == 2)


async def test_require_origin_refuses_clients_without_one() -> None:
    async with serve(secure_app(fast_registry(), require_origin=True)) as server, Browser() as alice:
        await session_of(alice, server)
        assert await refused_status(alice, server) == 403
        await alice.websocket(server, origin=own_origin(server))


async def test_forwarded_headers_count_only_when_trusted() -> None:
    behind_proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example"}
    for trusted in (False, True):
        registry = fast_registry()
        async with serve(secure_app(registry, trust_forwarded=trusted)) as server, Browser() as alice:
            await session_of(alice, server)
            if trusted:
                await alice.websocket(server, origin="https://app.example", headers=behind_proxy)
                assert (
                    await refused_status(alice, server, origin=own_origin(server), headers=behind_proxy)
                    == 403
                )
            else:
                assert (
                    await refused_status(alice, server, origin="https://app.example", headers=behind_proxy)
                    == 403
                )
                await alice.websocket(server, origin=own_origin(server), headers=behind_proxy)


# ---------------------------------------------------------------------- the socket cap
async def test_the_socket_beyond_the_cap_gets_429_and_a_freed_slot_is_reused() -> None:
    registry = fast_registry()
    async with (
        serve(secure_app(registry, max_sockets_per_session=3)) as server,
        Browser() as alice,
        Browser() as bob,
    ):
        alice_id = await session_of(alice, server)
        sockets = [(await alice.hello(server, "/ws?key=room:1"))[0] for _ in range(3)]
        assert await refused_status(alice, server) == 429
        assert registry.local_count(alice_id) == 3
        assert registry.stats()["refused_by_reason"] == {"sockets_per_session": 1}
        # Another session is not affected, and rooms are not capped.
        for _ in range(3):
            await bob.hello(server, "/ws?key=room:1")
        assert registry.local_count("room:1") == 6
        # A freed slot can be used again.
        await sockets[0].close()
        await wait_for(lambda: registry.local_count(alice_id) == 2)
        await alice.hello(server)
        assert registry.local_count(alice_id) == 3


async def test_racing_upgrades_of_one_session_cannot_overshoot_the_cap() -> None:
    registry = fast_registry()
    async with serve(secure_app(registry, max_sockets_per_session=3)) as server, Browser() as alice:
        alice_id = await session_of(alice, server)
        statuses: list[int] = []

        async def one() -> None:
            try:
                await alice.websocket(server)
                statuses.append(101)
            except aiohttp.WSServerHandshakeError as refused:
                statuses.append(refused.status)

        async with anyio.create_task_group() as tasks:
            for _ in range(12):
                tasks.start_soon(one)
        assert sorted(statuses) == [101] * 3 + [429] * 9, repr((statuses, registry.stats()))
        assert registry.local_count(alice_id) == 3


async def test_the_default_cap_is_100_sockets_per_session() -> None:
    registry = fast_registry()
    async with serve(secure_app(registry)) as server, Browser() as alice:
        alice_id = await session_of(alice, server)
        for _ in range(100):
            await alice.websocket(server)
        await wait_for(lambda: registry.local_count(alice_id) == 100)
        # (Through a connection of its own: the client's pool holds 100 connections.)
        assert server.port is not None
        assert await upgrade_status(server.port, headers=[("Cookie", alice.cookie_header())]) == 429


async def test_no_cap_with_none() -> None:
    registry = fast_registry()
    async with serve(secure_app(registry, max_sockets_per_session=None)) as server, Browser() as alice:
        alice_id = await session_of(alice, server)
        for _ in range(3):
            await alice.websocket(server)
        await wait_for(lambda: registry.local_count(alice_id) == 3)


def test_bad_options_fail_at_setup() -> None:
    with pytest.raises(ValueError, match="no scheme"):
        secure_app(fast_registry(), allowed_origins=["app.example"])
    with pytest.raises(ValueError, match="max_sockets_per_session"):
        secure_app(fast_registry(), max_sockets_per_session=0)


# ---------------------------------------------------------------------- attacks
async def test_attacks_on_the_upgrade() -> None:
    registry = fast_registry()
    async with serve(secure_app(registry)) as server, Browser() as alice:
        await session_of(alice, server)
        port = server.port
        assert port is not None
        cookie = ("Cookie", alice.cookie_header())
        own = own_origin(server)
        # Two Origin headers, one of them our own: refused (which one would a proxy check?).
        assert (
            await upgrade_status(port, headers=[cookie, ("Origin", own), ("Origin", "https://evil.example")])
            == 403
        )
        assert await upgrade_status(port, headers=[cookie, ("Origin", own), ("Origin", own)]) == 403
        # Userinfo, a path, a list in one header, garbage, a huge value: malformed, refused.
        for origin in (
            f"http://evil.example@127.0.0.1:{port}",
            f"{own}/ws",
            f"{own}, https://evil.example",
            "https://" + "a" * 6000 + ".example",
        ):
            assert await upgrade_status(port, headers=[cookie, ("Origin", origin)]) == 403, origin
        # Control characters: aiohttp's parser answers 400 before any handler runs.
        assert await upgrade_status(port, headers=[cookie, ("Origin", "\x01\x02")]) == 400
        # A Host that lies to match the attacker's Origin passes the own-origin check: only a
        # non-browser client can send it, and such a client needs no Origin at all.
        lying = [cookie, ("Origin", "http://evil.example")]
        assert await upgrade_status(port, host="evil.example", headers=lying) == 101
        # A plain GET on the websocket route: 400, nothing registered.
        assert await upgrade_status(port, upgrade=False, headers=[cookie, ("Origin", own)]) == 400
        # A huge cookie: aiohttp refuses the request line before any handler runs.
        assert await upgrade_status(port, headers=[("Cookie", "AIOHTTP_SESSION=" + "x" * 20_000)]) in (
            400,
            431,
        )
        await wait_for(lambda: registry.stats()["sockets"] == 0)
        assert registry.stats()["refused_by_reason"] == {"origin": 6}


async def test_pinned_origins_ignore_a_lying_host() -> None:
    registry = fast_registry()
    async with serve(secure_app(registry, allowed_origins=["https://app.example"])) as server:
        assert server.port is not None
        origin = ("Origin", "http://evil.example")
        assert await upgrade_status(server.port, host="evil.example", headers=[origin]) == 403


# ---------------------------------------------------------------------- session fixation
async def readme_login(request: web.Request) -> web.Response:
    """The README's login: the user in the session, the session-ws id rotated."""
    session = await aiohttp_session.get_session(request)
    session["user"] = "alice"
    response = web.HTTPFound("/")
    await sw.rotate_session_ws_id(request, response)
    raise response


async def test_rotating_at_login_shuts_out_whoever_knew_the_old_id() -> None:
    registry = fast_registry()
    app = secure_app(registry)
    app.router.add_post("/login", readme_login)
    async with serve(app) as server, Browser() as victim, Browser() as attacker:
        planted = await session_of(victim, server)
        # The attacker holds the very cookie planted in the victim's browser.
        attacker.http.cookie_jar.update_cookies({"AIOHTTP_SESSION": victim.cookie() or ""})
        spy, spy_id = await attacker.hello(server)
        assert spy_id == planted
        async with victim.http.post(server.make_url("/login"), allow_redirects=False) as response:
            assert response.status == 302
        assert await closed_with(spy) == (1000, "session id rotated")
        assert await refused_status(attacker, server) == 403  # the planted id is revoked
        _, new_id = await victim.hello(server)
        assert new_id != planted
