"""The Starlette adapter on asyncio and trio: real Starlette apps, middleware and session
cookies, driven in-process (see ``asgi.py``), over the memory transport."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionws import CLOSE_REVOKED, NotConfiguredError, SessionRegistry
from sessionws_starlette import MISSING_ID_REASON
from tests.starlette.apps import SECRET, fast_registry, make_app
from tests.starlette.asgi import connect_websocket, http_client, running

pytestmark = pytest.mark.anyio


class Node:
    def __init__(self, registry: SessionRegistry, app: Starlette, served: ASGIApp) -> None:
        self.registry = registry
        self.app = app
        self.served = served

    def client(self, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
        client = http_client(self.served)
        if cookies is not None:
            client.cookies = cookies
        return client


@asynccontextmanager
async def nodes(count: int = 1, **app_options: Any) -> AsyncIterator[list[Node]]:
    """``count`` Starlette apps whose registries share one in-process hub (a cluster)."""
    url = f"memory://starlette-{secrets.token_hex(6)}"
    async with AsyncExitStack() as stack:
        result = []
        for index in range(count):
            registry = fast_registry(url, f"node{index}")
            app = make_app(registry, **app_options)
            result.append(Node(registry, app, await stack.enter_async_context(running(app))))
        with anyio.fail_after(3):
            while not all(len(node.registry.live_nodes()) >= count - 1 for node in result):
                await anyio.sleep(0.01)
        yield result


async def load_page(node: Node, path: str = "/") -> tuple[httpx.Cookies, str | None]:
    async with node.client() as client:
        response = await client.get(path)
        assert response.status_code == 200
        return client.cookies, response.json()["id"]


async def test_a_page_mints_the_id_and_a_websocket_registers_under_it() -> None:
    async with nodes(1) as (node,):
        cookies, session_id = await load_page(node)
        assert session_id
        assert "session" in cookies
        async with connect_websocket(node.served, "/ws", cookies) as websocket:
            assert websocket.status == 101
            assert str(await websocket.receive()).startswith("registered node0.")
            assert node.registry.local_count(session_id) == 1
            await websocket.send_text("hi")
            assert await websocket.receive() == "echo hi"
        assert node.registry.stats()["sockets"] == 0


async def test_the_id_is_kept_across_pages() -> None:
    async with nodes(1) as (node,):
        cookies, first = await load_page(node)
        async with node.client(cookies) as client:
            assert (await client.get("/")).json()["id"] == first


async def test_logout_on_a_closes_the_sessions_sockets_on_b_and_c_and_spares_others() -> None:
    async with nodes(3) as (a, b, c):
        cookies, session_id = await load_page(a)
        other_cookies, _ = await load_page(b)
        async with (
            connect_websocket(b.served, "/ws", cookies) as on_b,
            connect_websocket(c.served, "/ws", cookies) as on_c,
            connect_websocket(c.served, "/ws", other_cookies) as other,
        ):
            for websocket in (on_b, on_c, other):
                assert str(await websocket.receive()).startswith("registered")
            async with a.client(cookies) as client:
                response = await client.post("/logout")
                assert response.json() == {"logged_out": True}
                assert "session=null" in response.headers["set-cookie"]
            assert await on_b.closed() == (1000, "")
            assert await on_c.closed() == (1000, "")
            await other.send_text("still here")
            assert await other.receive() == "echo still here"
        assert session_id is not None
        assert [node.registry.local_count(session_id) for node in (a, b, c)] == [0, 0, 0]


async def test_a_revoked_id_is_refused_with_403_on_another_node() -> None:
    async with nodes(3) as (a, b, c):
        cookies, session_id = await load_page(a)
        async with connect_websocket(b.served, "/ws", cookies) as on_b:
            assert str(await on_b.receive()).startswith("registered")
            async with a.client(cookies) as client:
                response = await client.post("/revoke")
            assert response.json() == {"closed": 1, "complete": True}
            assert await on_b.closed() == (CLOSE_REVOKED, "session revoked")
        async with connect_websocket(c.served, "/ws", cookies) as on_c:
            assert on_c.status == 403
        assert session_id is not None
        assert await c.registry.is_revoked(session_id)


async def test_rotate_revokes_the_old_id_everywhere_and_assigns_a_new_one() -> None:
    async with nodes(2) as (a, b):
        old_cookies, old_id = await load_page(a)
        async with connect_websocket(b.served, "/ws", old_cookies) as old_socket:
            assert str(await old_socket.receive()).startswith("registered")
            async with a.client(old_cookies) as client:
                new_id = (await client.post("/rotate")).json()["id"]
                new_cookies = client.cookies
            assert new_id != old_id
            # Closed with 1000 after the response, so the page reconnects with its new id.
            assert await old_socket.closed() == (1000, "session id rotated")
        async with connect_websocket(b.served, "/ws", old_cookies) as refused:
            assert refused.status == 403
        async with connect_websocket(b.served, "/ws", new_cookies) as fresh:
            assert str(await fresh.receive()).startswith("registered")
            assert b.registry.local_count(new_id) == 1


async def test_send_and_count_reach_every_node_and_extra_keys() -> None:
    async with nodes(3) as (a, b, c):
        cookies, _ = await load_page(a)
        async with (
            connect_websocket(b.served, "/ws?key=room-1", cookies) as on_b,
            connect_websocket(c.served, "/ws", cookies) as on_c,
        ):
            for websocket in (on_b, on_c):
                assert str(await websocket.receive()).startswith("registered")
            async with a.client(cookies) as client:
                assert (await client.get("/count")).json() == {"total": 2, "complete": True}
                assert (await client.get("/count?key=room-1")).json() == {"total": 1, "complete": True}
                assert (await client.post("/send?text=to-all")).json() == {"sent": True}
                assert await on_b.receive() == "to-all"
                assert await on_c.receive() == "to-all"
                await client.post("/send?text=to-room&key=room-1")
                assert await on_b.receive() == "to-room"
                assert (await client.post("/close?key=room-1")).json() == {"closed_here": 0}
                assert await on_b.closed() == (4000, "closed by key")
                await on_c.send_text("still open")
                assert await on_c.receive() == "echo still open"


async def test_logout_closes_after_the_response_and_keeps_the_users_background() -> None:
    async with nodes(1) as (node,):
        cookies, _ = await load_page(node)
        sent: list[str] = []

        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            async def record(message: Message) -> None:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    sent.append("response sent")
                elif message["type"] == "websocket.close":
                    sent.append("websocket closed")
                await send(message)

            await node.served(scope, receive, record)

        async with connect_websocket(recording, "/ws", cookies) as websocket:
            assert str(await websocket.receive()).startswith("registered")
            async with http_client(recording) as client:
                client.cookies = cookies
                response = await client.post("/logout?with_background=1")
            assert response.status_code == 200
            assert await websocket.closed() == (1000, "")
        assert sent == ["response sent", "websocket closed"]
        assert node.app.state.events == ["user background ran"]


async def test_a_websocket_without_an_id_is_closed_with_1008_and_a_log_naming_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with nodes(1) as (node,):
        with caplog.at_level(logging.WARNING, logger="sessionws.starlette"):
            async with connect_websocket(node.served, "/ws") as websocket:
                assert websocket.status == 101
                assert await websocket.closed() == (1008, MISSING_ID_REASON)
        assert "SessionWSMiddleware" in caplog.text
        assert "ephemeral_ids=True" in caplog.text
        assert node.registry.stats()["sockets"] == 0


async def test_ephemeral_ids_register_a_websocket_that_arrives_without_one() -> None:
    async with nodes(1, ephemeral_ids=True) as (node,):
        async with connect_websocket(node.served, "/ws") as websocket:
            greeting = str(await websocket.receive())
            assert greeting.startswith("registered") and greeting.endswith("ephemeral")
            assert node.registry.stats()["sockets"] == 1
        # A page still gets a lasting id, and its websocket is not ephemeral.
        cookies, _ = await load_page(node)
        async with connect_websocket(node.served, "/ws", cookies) as websocket:
            assert not str(await websocket.receive()).endswith("ephemeral")


async def test_paths_limit_where_ids_are_minted() -> None:
    async with nodes(1, paths=["/app/{rest:path}", "/ws"]) as (node,), node.client() as client:
        response = await client.get("/static/file")
        assert response.json() == {"id": None}
        assert "set-cookie" not in response.headers
        response = await client.get("/app/page")
        assert response.json()["id"]
        assert "set-cookie" in response.headers


async def test_a_cancelled_endpoint_is_unregistered() -> None:
    async with nodes(1) as (node,):
        cookies, session_id = await load_page(node)
        assert session_id is not None
        with anyio.CancelScope() as scope:
            async with connect_websocket(node.served, "/ws", cookies) as websocket:
                assert str(await websocket.receive()).startswith("registered")
                assert node.registry.local_count(session_id) == 1
                scope.cancel()
                await anyio.sleep_forever()
        assert node.registry.stats()["sockets"] == 0


async def test_shutdown_closes_open_sockets_with_1001() -> None:
    registry = fast_registry(f"memory://starlette-{secrets.token_hex(6)}", "solo")
    app = make_app(registry)
    closes: list[tuple[int, str]] = []
    async with anyio.create_task_group() as tasks, running(app) as served:
        async with http_client(served) as client:
            await client.get("/")
            cookies = client.cookies
        registered = anyio.Event()

        async def hold_a_socket() -> None:
            async with connect_websocket(served, "/ws", cookies) as websocket:
                await websocket.receive()
                registered.set()
                closes.append(await websocket.closed())

        tasks.start_soon(hold_a_socket)
        await registered.wait()
        # Leaving `running` ran the lifespan shutdown with the socket still open.
    assert closes == [(1001, "server shutting down")]
    assert not registry.running


async def test_user_lifespan_composes_state_and_teardown_order() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        events.append("user startup")
        yield {"db": "connected"}
        events.append("user teardown")

    registry = fast_registry(f"memory://starlette-{secrets.token_hex(6)}", "solo")
    original_close_local = registry.close_local

    async def close_local(**options: Any) -> int:
        events.append("sockets closed")
        return await original_close_local(**options)

    registry.close_local = close_local  # type: ignore[method-assign]
    app = make_app(registry, lifespan=lifespan)
    async with running(app) as served:
        assert registry.running
        async with http_client(served) as client:
            state = (await client.get("/state")).json()
        assert state == {
            "db": "connected",
            "keys": ["db", "sessionws_guard", "sessionws_id_provider", "sessionws_registry"],
        }
    # (Leaving the registry closes whatever is left once more: a no-op here.)
    assert events[:3] == ["user startup", "sockets closed", "user teardown"]
    assert not registry.running


async def test_without_session_middleware_the_error_names_the_fix() -> None:
    async with nodes(1, session_middleware=False) as (node, *_), node.client() as client:
        with pytest.raises(NotConfiguredError, match=r"add Middleware\(SessionMiddleware"):
            await client.get("/")


async def test_without_setup_the_error_says_what_to_add() -> None:
    registry = fast_registry("memory://", "solo")
    app = make_app(registry, use_lifespan=False)
    async with running(app) as served, http_client(served) as client:
        await client.get("/")  # the id needs only the session
        with pytest.raises(NotConfiguredError, match=r"add lifespan=sessionws_lifespan\(registry\) to your"):
            await client.post("/send")


async def test_app_state_serves_apps_without_a_lifespan() -> None:
    registry = fast_registry("memory://", "solo")
    app = make_app(registry, use_lifespan=False)
    app.state.sessionws_registry = registry
    async with registry, running(app) as served:
        async with http_client(served) as client:
            await client.get("/")
            cookies = client.cookies
        async with connect_websocket(served, "/ws", cookies) as websocket:
            assert str(await websocket.receive()).startswith("registered")
            async with http_client(served) as client:
                client.cookies = cookies
                await client.post("/logout")
            assert await websocket.closed() == (1000, "")


async def test_the_session_cookie_carries_the_id_signed_not_encrypted() -> None:
    """Documented: Starlette signs its session cookie; the id is readable by its owner."""
    import base64
    import json

    import itsdangerous

    async with nodes(1) as (node,):
        cookies, session_id = await load_page(node)
        payload = itsdangerous.TimestampSigner(SECRET).unsign(cookies["session"])
        assert json.loads(base64.b64decode(payload)) == {"sessionws_id": session_id}
