"""Origin checks and the per-session socket cap behind real uvicorn servers, with real
websocket clients, plus the attacks tried on them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from sessionws import SessionRegistry, WebSocketGuard
from sessionws_starlette import SessionWSMiddleware, rotate_session_ws_id, sessionws_lifespan
from tests._helpers import wait_for
from tests._upgrade import upgrade_status
from tests.starlette.apps import SECRET, fast_registry, page, websocket_endpoint
from tests.starlette.servers import cookie_header, uvicorn_server, ws_url
from tests.starlette.test_server import close_code

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def secure_app(registry: SessionRegistry, *, use_lifespan: bool = True, **options: Any) -> Starlette:
    """The quick-start shape: SessionMiddleware, SessionWSMiddleware, the lifespan with ``options``."""
    return Starlette(
        routes=[Route("/", page), WebSocketRoute("/ws", websocket_endpoint)],
        middleware=[
            Middleware(SessionMiddleware, secret_key=SECRET),
            Middleware(SessionWSMiddleware, paths=["/"]),
        ],
        lifespan=sessionws_lifespan(registry, **options) if use_lifespan else None,
    )


class WithoutDenialResponses:
    """Hides the ASGI denial-response extension, as servers without it do."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "extensions": {}}
        await self.app(scope, receive, send)


@asynccontextmanager
async def served(app: ASGIApp) -> AsyncIterator[tuple[str, httpx.Cookies, str]]:
    """Serve ``app``; yield its base URL, the cookies of one visit to its page, and the id."""
    async with uvicorn_server(app) as base, httpx.AsyncClient(base_url=base) as client:
        response = await client.get("/")
        assert response.status_code == 200
        yield base, client.cookies, response.json()["id"]


async def open_ws(base: str, cookies: httpx.Cookies, origin: str | None = None) -> ClientConnection:
    websocket = await connect(
        ws_url(base),
        additional_headers=cookie_header(cookies),
        origin=None if origin is None else Origin(origin),
    )
    greeting = await websocket.recv()
    assert isinstance(greeting, str) and greeting.startswith("registered"), greeting
    return websocket


async def refused_status(base: str, cookies: httpx.Cookies, origin: str | None = None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await connect(
            ws_url(base),
            additional_headers=cookie_header(cookies),
            origin=None if origin is None else Origin(origin),
        )
    return refused.value.response.status_code


def port_of(base: str) -> int:
    port = urlsplit(base).port
    assert port is not None
    return port


def new_registry() -> SessionRegistry:
    return fast_registry(f"memory://starlette-security-{secrets.token_hex(6)}", "node")


# ---------------------------------------------------------------------- origins
async def test_a_cross_site_upgrade_gets_403_and_nothing_registered() -> None:
    registry = new_registry()
    async with served(secure_app(registry)) as (base, cookies, session_id), AsyncExitStack() as sockets:
        for evil in ("https://evil.example", f"http://localhost:{port_of(base)}", "null"):
            assert await refused_status(base, cookies, evil) == 403
        assert registry.stats()["sockets"] == 0
        assert registry.stats()["refused_by_reason"] == {"origin": 3}
        # The app's own page, and a client that sends no Origin, get in.
        sockets.push_async_callback((await open_ws(base, cookies, base)).close)
        sockets.push_async_callback((await open_ws(base, cookies)).close)
        assert registry.local_count(session_id) == 2


async def test_allowed_origins_and_the_opt_out() -> None:
    registry = new_registry()
    app = secure_app(registry, allowed_origins=["https://app.example", "https://*.partner.example"])
    async with served(app) as (base, cookies, session_id), AsyncExitStack() as sockets:
        for allowed in ("https://app.example", "https://eu.partner.example"):
            sockets.push_async_callback((await open_ws(base, cookies, allowed)).close)
        for refused in (base, "https://partner.example", "https://evil.example"):
            assert await refused_status(base, cookies, refused) == 403
        assert registry.local_count(session_id) == 2
    registry = new_registry()
    async with served(secure_app(registry, allowed_origins="*")) as (base, cookies, session_id):
        websocket = await open_ws(base, cookies, "https://evil.example")
        await websocket.close()


async def test_a_guard_in_app_state_serves_apps_without_a_lifespan() -> None:
    registry = new_registry()
    app = secure_app(registry, use_lifespan=False)
    app.state.sessionws_registry = registry
    app.state.sessionws_guard = WebSocketGuard(
        allowed_origins=["https://app.example"], max_sockets_per_session=1
    )
    async with registry, served(app) as (base, cookies, _):
        assert await refused_status(base, cookies, base) == 403
        websocket = await open_ws(base, cookies, "https://app.example")
        assert await refused_status(base, cookies, "https://app.example") == 429
        await websocket.close()


async def test_forwarded_headers_count_only_when_trusted() -> None:
    behind_proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example"}
    for trusted in (False, True):
        registry = new_registry()
        async with served(secure_app(registry, trust_forwarded=trusted)) as (base, cookies, _):
            headers = {**cookie_header(cookies), **behind_proxy}
            if trusted:
                websocket = await connect(
                    ws_url(base), additional_headers=headers, origin=Origin("https://app.example")
                )
                await websocket.close()
            else:
                with pytest.raises(InvalidStatus) as refused:
                    await connect(
                        ws_url(base), additional_headers=headers, origin=Origin("https://app.example")
                    )
                assert refused.value.response.status_code == 403


# ---------------------------------------------------------------------- the socket cap
async def test_the_socket_beyond_the_cap_gets_429_and_a_freed_slot_is_reused() -> None:
    registry = new_registry()
    async with served(secure_app(registry, max_sockets_per_session=3)) as (base, cookies, alice_id):
        alice = [await open_ws(base, cookies) for _ in range(3)]
        assert await refused_status(base, cookies) == 429
        assert registry.local_count(alice_id) == 3
        assert registry.stats()["refused_by_reason"] == {"sockets_per_session": 1}
        async with httpx.AsyncClient(base_url=base) as other:
            bob_id = (await other.get("/")).json()["id"]
            bob = [await open_ws(base, other.cookies) for _ in range(3)]
        assert registry.local_count(bob_id) == 3
        await alice[0].close()
        await wait_for(lambda: registry.local_count(alice_id) == 2)
        alice[0] = await open_ws(base, cookies)
        for websocket in alice + bob:
            await websocket.close()


async def test_racing_upgrades_of_one_session_cannot_overshoot_the_cap() -> None:
    registry = new_registry()
    async with served(secure_app(registry, max_sockets_per_session=3)) as (base, cookies, alice_id):
        statuses: list[int] = []
        opened: list[ClientConnection] = []

        async def one() -> None:
            try:
                opened.append(await connect(ws_url(base), additional_headers=cookie_header(cookies)))
                statuses.append(101)
            except InvalidStatus as refused:
                statuses.append(refused.response.status_code)

        async with anyio.create_task_group() as tasks:
            for _ in range(12):
                tasks.start_soon(one)
        assert sorted(statuses) == [101] * 3 + [429] * 9
        await wait_for(lambda: registry.local_count(alice_id) == 3)
        for websocket in opened:
            await websocket.close()


async def test_servers_without_denial_responses_refuse_with_403() -> None:
    registry = new_registry()
    app = WithoutDenialResponses(secure_app(registry, max_sockets_per_session=1))
    async with served(app) as (base, cookies, _):
        websocket = await open_ws(base, cookies)
        assert await refused_status(base, cookies) == 403
        assert await refused_status(base, cookies, "https://evil.example") == 403
        assert registry.stats()["refused_by_reason"] == {"sockets_per_session": 1, "origin": 1}
        await websocket.close()


async def test_the_default_cap_is_100_sockets_per_session() -> None:
    registry = new_registry()
    async with served(secure_app(registry)) as (base, cookies, alice_id):
        sockets = [await connect(ws_url(base), additional_headers=cookie_header(cookies)) for _ in range(100)]
        await wait_for(lambda: registry.local_count(alice_id) == 100)
        assert await refused_status(base, cookies) == 429
        for websocket in sockets:
            await websocket.close()


# ---------------------------------------------------------------------- attacks
async def test_attacks_on_the_upgrade() -> None:
    registry = new_registry()
    async with served(secure_app(registry)) as (base, cookies, _):
        port = port_of(base)
        cookie = ("Cookie", cookie_header(cookies)["Cookie"])
        # Two Origin headers: uvicorn's websockets layer answers 400 itself; a server that
        # passes them on gets 403 from the guard.
        two = [cookie, ("Origin", base), ("Origin", "https://evil.example")]
        assert await upgrade_status(port, headers=two) in (400, 403)
        for origin in (
            f"http://evil.example@127.0.0.1:{port}",
            f"{base}/ws",
            f"{base}, https://evil.example",
            "https://" + "a" * 6000 + ".example",
        ):
            assert await upgrade_status(port, headers=[cookie, ("Origin", origin)]) == 403, origin
        # A lying Host matching the attacker's Origin: only a non-browser client can send it.
        lying = [cookie, ("Origin", "http://evil.example")]
        assert await upgrade_status(port, host="evil.example", headers=lying) == 101
        # A plain GET on the websocket route never reaches the endpoint.
        assert await upgrade_status(port, upgrade=False, headers=[cookie, ("Origin", base)]) == 404
        # A large forged cookie: SessionMiddleware ignores it, so the socket has no id and is
        # closed with 1008 right after the accept. (Past 8 KB, uvicorn's websockets-sansio
        # layer never answers at all: not sessionws's to fix.)
        forged = [("Cookie", "session=" + "x" * 7_000), ("Origin", base)]
        assert await upgrade_status(port, headers=forged) == 101
        await wait_for(lambda: registry.stats()["sockets"] == 0)


async def test_the_refused_session_has_no_id_minted() -> None:
    """A cross-site upgrade of a browser that never loaded the page mints nothing."""
    registry = new_registry()
    async with served(secure_app(registry)) as (base, _, _):
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(base), origin=Origin("https://evil.example"))
        assert refused.value.response.status_code == 403
        assert "set-cookie" not in refused.value.response.headers
        assert registry.stats()["registered"] == 0


# ---------------------------------------------------------------------- session fixation
async def readme_login(request: Request) -> RedirectResponse:
    """The README's login: the user in the session, the session-ws id rotated."""
    request.session["user"] = "alice"
    response = RedirectResponse("/", status_code=303)
    await rotate_session_ws_id(request, response)
    return response


async def test_rotating_at_login_shuts_out_whoever_knew_the_old_id() -> None:
    registry = new_registry()
    app = secure_app(registry)
    app.router.routes.append(Route("/login", readme_login, methods=["POST"]))
    async with served(app) as (base, planted_cookies, planted), httpx.AsyncClient(base_url=base) as victim:
        victim.cookies = httpx.Cookies(planted_cookies)
        spy = await open_ws(base, planted_cookies)  # the attacker holds the planted cookie
        assert (await victim.post("/login")).status_code == 303
        assert await close_code(spy) == (1000, "session id rotated")
        assert await refused_status(base, planted_cookies) == 403
        assert (await victim.get("/")).json()["id"] not in (None, planted)
        websocket = await open_ws(base, victim.cookies)
        await websocket.close()
