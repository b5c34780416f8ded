"""The verbs on one socket (keys that change, per-socket data), presence, one socket
anywhere, broadcast and confirmed sends: two aiohttp nodes, real clients, over the
memory hub and over a real Redis."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import sessionws_aiohttp as sw
from sessionws import KeyRevokedError
from tests._helpers import wait_for
from tests._redis_servers import RedisServer, running_redis
from tests.aiohttp.helpers import Browser, closed_with, fast_registry, hub_url, make_app, serve

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return hub_url()
    server: RedisServer = request.getfixturevalue("redis_server")
    return str(server.url)


# ---------------------------------------------------------------------- the test app
async def handle_room_socket(request: web.Request) -> web.WebSocketResponse:
    """A socket that joins and leaves rooms and changes its data as its client asks."""
    name = request.query.get("name", "anonymous")
    async with sw.session_ws(request, request.query.get("key", ()), data={"name": name}) as websocket:
        handle = sw.get_ws_handle(websocket)
        await websocket.send_json({"id": handle.id, "session": handle.keys[0]})
        async for message in websocket:
            ask = json.loads(message.data)
            try:
                if "join" in ask:
                    await sw.add_keys_ws(request, ask["join"])
                elif "leave" in ask:
                    await sw.remove_keys_ws(request, ask["leave"])
                elif "data" in ask:
                    await sw.set_data_ws(request, ask["data"])
            except (TypeError, ValueError, KeyRevokedError) as error:
                await websocket.send_json({"error": f"{type(error).__name__}: {error}"})
            else:
                await websocket.send_json({"done": sorted(sw.get_ws_handle(websocket).keys[1:])})
    return websocket


async def handle_my_sockets(request: web.Request) -> web.Response:
    listing = await sw.members_session_ws(request)
    return web.json_response(
        {"ids": sorted(member.handle_id for member in listing.members), "complete": listing.complete}
    )


async def handle_send_confirmed(request: web.Request) -> web.Response:
    report = await sw.send_session_ws(request, await request.text(), confirm=True)
    return web.json_response({"total": report.total, "complete": report.complete})


async def handle_join_without_socket(request: web.Request) -> web.Response:
    try:
        await sw.add_keys_ws(request, "room:1")
    except LookupError as error:
        return web.Response(status=409, text=str(error))
    return web.Response(text="joined?")


EXTRA_ROUTES = [
    web.get("/room", handle_room_socket),
    web.get("/my-sockets", handle_my_sockets),
    web.post("/send-confirmed", handle_send_confirmed),
    web.post("/join-without-socket", handle_join_without_socket),
]


@asynccontextmanager
async def two_nodes(url: str) -> AsyncIterator[tuple[TestServer, TestServer]]:
    namespace = f"verbs-{secrets.token_hex(4)}"
    async with AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(
                serve(
                    make_app(
                        fast_registry(url, node_id=f"node{index}", namespace=namespace),
                        extra_routes=EXTRA_ROUTES,
                    )
                )
            )
            for index in range(2)
        ]
        registries = [sw.get_registry(server.app) for server in (a, b)]
        await wait_for(lambda: all(len(registry.live_nodes()) == 1 for registry in registries), 10)
        yield a, b


class Socket:
    """One client socket of ``/room``, with its handle id."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse, handle_id: str, session: str) -> None:
        self.websocket = websocket
        self.id = handle_id
        self.session = session

    @classmethod
    async def open(cls, browser: Browser, server: TestServer, query: str) -> Socket:
        websocket = await browser.websocket(server, f"/room?{query}")
        greeting = await websocket.receive_json(timeout=3)
        return cls(websocket, str(greeting["id"]), str(greeting["session"]))

    async def ask(self, **ask: Any) -> dict[str, Any]:
        await self.websocket.send_json(ask)
        answer: dict[str, Any] = await self.websocket.receive_json(timeout=5)
        return answer

    async def next_text(self) -> str:
        return await self.websocket.receive_str(timeout=5)


async def test_rooms_that_change_presence_and_data_across_two_nodes(broker_url: str) -> None:
    async with two_nodes(broker_url) as (a, b), Browser() as alices, Browser() as bobs:
        await alices.get(a, "/")
        await bobs.get(b, "/")
        alice = await Socket.open(alices, a, "name=alice")
        bob = await Socket.open(bobs, b, "name=bob")

        assert await alice.ask(join="room:1") == {"done": ["room:1"]}
        assert await bob.ask(join=["room:1", "room:2"]) == {"done": ["room:1", "room:2"]}
        assert await bob.ask(join="room:1") == {"done": ["room:1", "room:2"]}  # idempotent
        listing = await sw.members_ws(a.app, "room:1")
        assert listing.complete
        assert sorted((member.handle_id, member.node, member.data) for member in listing.members) == [
            (alice.id, "node0", {"name": "alice"}),
            (bob.id, "node1", {"name": "bob"}),
        ]

        assert await bob.ask(data={"name": "robert"}) == {"done": ["room:1", "room:2"]}
        listing = await sw.members_ws(a.app, "room:2")
        assert [(member.handle_id, member.data) for member in listing.members] == [
            (bob.id, {"name": "robert"})
        ]

        report = await sw.send_ws(a.app, "room:1", "to room 1", confirm=True)
        assert (report.total, report.complete) == (2, True)
        assert [await alice.next_text(), await bob.next_text()] == ["to room 1", "to room 1"]

        assert await bob.ask(leave="room:1") == {"done": ["room:2"]}
        assert [member.handle_id for member in (await sw.members_ws(b.app, "room:1")).members] == [alice.id]
        report = await sw.send_ws(b.app, "room:1", "without bob", confirm=True)
        assert (report.total, report.complete) == (1, True)
        # Bob no longer holds room:1: the next text he receives is the broadcast.
        assert (await sw.broadcast_ws(a.app, "everyone")).sent_here == 1
        assert [await alice.next_text(), await alice.next_text()] == ["without bob", "everyone"]
        assert await bob.next_text() == "everyone"


async def test_one_socket_anywhere_by_its_handle_id(broker_url: str) -> None:
    async with two_nodes(broker_url) as (a, b), Browser() as alices, Browser() as bobs:
        alice = await Socket.open(alices, a, "name=alice")
        bob = await Socket.open(bobs, b, "name=bob")
        other_tab = await Socket.open(bobs, b, "name=bob")

        delivered = await sw.send_to_ws(a.app, bob.id, b"\x01direct")
        assert (delivered.found, delivered.node, delivered.complete) == (True, "node1", True)
        assert await bob.websocket.receive_bytes(timeout=5) == b"\x01direct"

        kicked = await sw.close_handle_ws(a.app, bob.id, code=4000, reason="kicked")
        assert (kicked.found, kicked.node) == (True, "node1")
        assert await closed_with(bob.websocket) == (4000, "kicked")
        await wait_for(lambda: sw.get_registry(b.app).stats()["sockets"] == 1)

        gone = await sw.send_to_ws(a.app, bob.id, "too late")
        assert (gone.found, gone.complete) == (False, True)
        # The same session's other tab and the other node's socket were not touched.
        assert (await sw.send_to_ws(b.app, other_tab.id, "still here")).found
        assert await other_tab.next_text() == "still here"
        assert (await sw.send_to_ws(b.app, alice.id, "hello alice")).found
        assert await alice.next_text() == "hello alice"


async def test_the_sessions_sockets_listed_and_a_confirmed_send(broker_url: str) -> None:
    async with two_nodes(broker_url) as (a, b), Browser() as alices, Browser() as bobs:
        await alices.get(a, "/")
        tabs = [await Socket.open(alices, server, "name=alice") for server in (a, b)]
        stranger = await Socket.open(bobs, a, "name=bob")

        status, body = await alices.get(b, "/my-sockets")
        assert status == 200
        assert json.loads(body) == {"ids": sorted(tab.id for tab in tabs), "complete": True}

        status, body = await alices.post(a, "/send-confirmed", "to my tabs")
        assert json.loads(body) == {"total": 2, "complete": True}
        assert [await tab.next_text() for tab in tabs] == ["to my tabs"] * 2
        assert (await sw.broadcast_ws(b.app, "after")).sent_here == 1
        assert await stranger.next_text() == "after"  # not "to my tabs"


async def test_bad_input_is_refused_with_a_clear_error() -> None:
    async with two_nodes(hub_url()) as (a, _), Browser() as browser:
        socket = await Socket.open(browser, a, "name=x")

        too_many = [f"room:{number}" for number in range(256)]
        answer = await socket.ask(join=too_many)
        assert answer["error"].startswith("ValueError: a socket may hold at most 256 keys")
        assert await socket.ask(join="room:ok") == {"done": ["room:ok"]}  # nothing was added
        answer = await socket.ask(data={"name": "x" * 5000})
        assert answer["error"].startswith("ValueError: per-socket data takes")
        answer = await socket.ask(join=[""])
        assert answer["error"] == "ValueError: a key must be a non-empty string"
        answer = await socket.ask(leave=socket.session)
        assert answer["error"].startswith("ValueError: the first key of a connection")

        await sw.revoke_ws(a.app, "room:banned")
        answer = await socket.ask(join="room:banned")
        assert answer["error"].startswith("KeyRevokedError")

        with pytest.raises(ValueError, match="not a handle id"):
            await sw.send_to_ws(a.app, "no-such-handle", "x")
        with pytest.raises(ValueError, match="not a handle id"):
            await sw.close_handle_ws(a.app, "node0.x")
        with pytest.raises(ValueError, match="close code 999"):
            await sw.close_handle_ws(a.app, socket.id, code=999)
        assert not (await sw.send_to_ws(a.app, "node0.999999", "x")).found  # unknown: not found
        with pytest.raises(TypeError, match="str or bytes"):
            await sw.broadcast_ws(a.app, 42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="limit"):
            await sw.members_ws(a.app, "room:ok", limit=0)

        status, text = await browser.post(a, "/join-without-socket")
        assert status == 409 and "inside `async with session_ws(request)`" in text

        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await browser.websocket(a, "/ws?key=room:banned")
        assert refused.value.status == 403
        # The socket is still open, and its keys are what the successful calls left.
        assert await socket.ask(join="room:ok") == {"done": ["room:ok"]}
