"""The verbs on one socket (keys that change, per-socket data), presence, one socket
anywhere, broadcast and confirmed sends: two uvicorn nodes, real websocket clients,
over the memory hub and over a real Redis.

uvicorn runs on asyncio only, so these tests pin the asyncio backend.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import sessionws_starlette as sw
from sessionws import KeyRevokedError, SessionRegistry
from tests._helpers import FAST
from tests._redis_servers import RedisServer, running_redis
from tests.starlette.apps import SECRET
from tests.starlette.servers import cookie_header, uvicorn_server, ws_url

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://starlette-verbs-{secrets.token_hex(6)}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return str(server.url)


# ---------------------------------------------------------------------- the test app
async def page(request: Request) -> JSONResponse:
    return JSONResponse({"id": await sw.get_session_ws_id(request)})


async def room_socket(websocket: WebSocket) -> None:
    """A socket that joins and leaves rooms and changes its data as its client asks."""
    name = websocket.query_params.get("name", "anonymous")
    async with sw.session_ws(websocket, websocket.query_params.get("key", ()), data={"name": name}) as handle:
        assert sw.get_ws_handle(websocket) is handle
        await websocket.send_json({"id": handle.id, "session": handle.keys[0]})
        async for text in websocket.iter_text():
            ask = json.loads(text)
            try:
                if "join" in ask:
                    await sw.add_keys_ws(websocket, ask["join"])
                elif "leave" in ask:
                    await sw.remove_keys_ws(websocket, ask["leave"])
                elif "data" in ask:
                    await sw.set_data_ws(websocket, ask["data"])
            except (TypeError, ValueError, KeyRevokedError) as error:
                await websocket.send_json({"error": f"{type(error).__name__}: {error}"})
            else:
                await websocket.send_json({"done": sorted(handle.keys[1:])})


async def my_sockets(request: Request) -> JSONResponse:
    listing = await sw.members_session_ws(request)
    ids = sorted(member.handle_id for member in listing.members)
    return JSONResponse({"ids": ids, "complete": listing.complete})


async def send_confirmed(request: Request) -> JSONResponse:
    report = await sw.send_session_ws(request, (await request.body()).decode(), confirm=True)
    return JSONResponse({"total": report.total, "complete": report.complete})


async def app_verb(request: Request) -> JSONResponse:
    """The key- and handle-level verbs, called from a request of this node."""
    ask = await request.json()
    try:
        return await _app_verb(request, ask.pop("verb"), ask)
    except ValueError as error:
        return JSONResponse({"error": str(error)}, status_code=400)


async def _app_verb(request: Request, verb: str, ask: dict[str, Any]) -> JSONResponse:
    if verb == "revoke":
        return JSONResponse({"closed": (await sw.revoke_ws(request, ask["key"])).closed_here})
    if verb == "members":
        listing = await sw.members_ws(request, ask["key"])
        members = sorted([member.handle_id, member.node, member.data] for member in listing.members)
        return JSONResponse({"members": members, "complete": listing.complete})
    if verb == "send":
        report = await sw.send_ws(request, ask["key"], ask["data"], confirm=True)
        return JSONResponse({"total": report.total, "complete": report.complete})
    if verb == "broadcast":
        return JSONResponse({"sent_here": (await sw.broadcast_ws(request, ask["data"])).sent_here})
    if verb == "send_to":
        delivered = await sw.send_to_ws(request, ask["handle"], ask["data"])
    else:
        delivered = await sw.close_handle_ws(request, ask["handle"], code=4000, reason="kicked")
    return JSONResponse({"found": delivered.found, "node": delivered.node, "complete": delivered.complete})


def make_app(registry: SessionRegistry) -> Starlette:
    return Starlette(
        routes=[
            Route("/", page),
            Route("/my-sockets", my_sockets),
            Route("/send-confirmed", send_confirmed, methods=["POST"]),
            Route("/verb", app_verb, methods=["POST"]),
            WebSocketRoute("/room", room_socket),
        ],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET), Middleware(sw.SessionWSMiddleware)],
        lifespan=sw.sessionws_lifespan(registry),
    )


@asynccontextmanager
async def two_nodes(url: str) -> AsyncIterator[tuple[str, str]]:
    namespace = f"verbs-{secrets.token_hex(4)}"
    async with AsyncExitStack() as stack:
        registries = [
            SessionRegistry(url, node_id=f"node{index}", namespace=namespace, **FAST) for index in range(2)
        ]
        a, b = [
            await stack.enter_async_context(uvicorn_server(make_app(registry))) for registry in registries
        ]
        with anyio.fail_after(10):
            while not all(len(registry.live_nodes()) == 1 for registry in registries):
                await anyio.sleep(0.01)
        yield a, b


class Client:
    """One browser: a session cookie, HTTP requests and websockets of ``/room``."""

    def __init__(self) -> None:
        self.cookies = httpx.Cookies()

    async def get(self, base: str, path: str = "/") -> Any:
        async with httpx.AsyncClient(base_url=base, cookies=self.cookies) as client:
            response = await client.get(path)
            self.cookies.update(client.cookies)
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, base: str, path: str, **body: Any) -> Any:
        async with httpx.AsyncClient(base_url=base, cookies=self.cookies) as client:
            response = await client.post(path, json=body) if body else await client.post(path)
        assert response.status_code == 200, response.text
        return response.json()

    async def post_text(self, base: str, path: str, text: str) -> Any:
        async with httpx.AsyncClient(base_url=base, cookies=self.cookies) as client:
            response = await client.post(path, content=text)
        return response.json()

    async def socket(self, base: str, query: str) -> Socket:
        if not self.cookies:
            await self.get(base)
        websocket = await connect(
            ws_url(base, f"/room?{query}"), additional_headers=cookie_header(self.cookies)
        )
        greeting = json.loads(await websocket.recv())
        return Socket(websocket, greeting["id"], greeting["session"])


class Socket:
    def __init__(self, websocket: ClientConnection, handle_id: str, session: str) -> None:
        self.websocket = websocket
        self.id = handle_id
        self.session = session

    async def ask(self, **ask: Any) -> dict[str, Any]:
        await self.websocket.send(json.dumps(ask))
        with anyio.fail_after(5):
            answer: dict[str, Any] = json.loads(await self.websocket.recv())
        return answer

    async def next_message(self) -> str | bytes:
        with anyio.fail_after(5):
            return await self.websocket.recv()

    async def closed_with(self) -> tuple[int | None, str | None]:
        with anyio.fail_after(5):
            try:
                while True:
                    await self.websocket.recv()
            except ConnectionClosed as closed:
                frame = closed.rcvd
                return (frame.code, frame.reason) if frame is not None else (None, None)


async def test_rooms_that_change_presence_and_data_across_two_nodes(broker_url: str) -> None:
    async with two_nodes(broker_url) as (a, b):
        alice = await Client().socket(a, "name=alice")
        bob = await Client().socket(b, "name=bob")

        assert await alice.ask(join="room:1") == {"done": ["room:1"]}
        assert await bob.ask(join=["room:1", "room:2"]) == {"done": ["room:1", "room:2"]}
        assert await bob.ask(join="room:1") == {"done": ["room:1", "room:2"]}  # idempotent
        anyone = Client()
        assert await anyone.post(a, "/verb", verb="members", key="room:1") == {
            "members": sorted([[alice.id, "node0", {"name": "alice"}], [bob.id, "node1", {"name": "bob"}]]),
            "complete": True,
        }

        assert await bob.ask(data={"name": "robert"}) == {"done": ["room:1", "room:2"]}
        listing = await anyone.post(a, "/verb", verb="members", key="room:2")
        assert listing["members"] == [[bob.id, "node1", {"name": "robert"}]]

        assert await anyone.post(a, "/verb", verb="send", key="room:1", data="to room 1") == {
            "total": 2,
            "complete": True,
        }
        assert [await alice.next_message(), await bob.next_message()] == ["to room 1", "to room 1"]

        assert await bob.ask(leave="room:1") == {"done": ["room:2"]}
        listing = await anyone.post(b, "/verb", verb="members", key="room:1")
        assert [member[0] for member in listing["members"]] == [alice.id]
        sent = await anyone.post(b, "/verb", verb="send", key="room:1", data="without bob")
        assert sent == {"total": 1, "complete": True}
        # Bob no longer holds room:1: the next message he receives is the broadcast.
        assert await anyone.post(a, "/verb", verb="broadcast", data="everyone") == {"sent_here": 1}
        assert [await alice.next_message(), await alice.next_message()] == ["without bob", "everyone"]
        assert await bob.next_message() == "everyone"


async def test_one_socket_anywhere_by_its_handle_id(broker_url: str) -> None:
    async with two_nodes(broker_url) as (a, b):
        alice = await Client().socket(a, "name=alice")
        bobs = Client()
        bob, other_tab = await bobs.socket(b, "name=bob"), await bobs.socket(b, "name=bob")
        anyone = Client()

        delivered = await anyone.post(a, "/verb", verb="send_to", handle=bob.id, data="direct")
        assert delivered == {"found": True, "node": "node1", "complete": True}
        assert await bob.next_message() == "direct"

        kicked = await anyone.post(a, "/verb", verb="close_handle", handle=bob.id)
        assert kicked == {"found": True, "node": "node1", "complete": True}
        assert await bob.closed_with() == (4000, "kicked")

        with anyio.fail_after(5):
            while (await anyone.post(a, "/verb", verb="send_to", handle=bob.id, data="late"))["found"]:
                await anyio.sleep(0.01)  # until node1 has unregistered the closed socket
        assert (await anyone.post(a, "/verb", verb="send_to", handle=other_tab.id, data="still"))["found"]
        assert await other_tab.next_message() == "still"
        assert (await anyone.post(b, "/verb", verb="send_to", handle=alice.id, data="hi alice"))["found"]
        assert await alice.next_message() == "hi alice"


async def test_the_sessions_sockets_listed_and_a_confirmed_send(broker_url: str) -> None:
    async with two_nodes(broker_url) as (a, b):
        alices = Client()
        tabs = [await alices.socket(a, "name=alice"), await alices.socket(b, "name=alice")]
        stranger = await Client().socket(a, "name=bob")

        assert await alices.get(b, "/my-sockets") == {"ids": sorted(tab.id for tab in tabs), "complete": True}
        assert await alices.post_text(a, "/send-confirmed", "to my tabs") == {"total": 2, "complete": True}
        assert [await tab.next_message() for tab in tabs] == ["to my tabs"] * 2
        assert await Client().post(b, "/verb", verb="broadcast", data="after") == {"sent_here": 1}
        assert await stranger.next_message() == "after"  # not "to my tabs"


async def test_one_key_as_a_str_and_bad_input_refused_with_a_clear_error() -> None:
    async with two_nodes(f"memory://starlette-verbs-{secrets.token_hex(6)}") as (a, _):
        client = Client()
        socket = await client.socket(a, "name=x&key=room:one")  # session_ws(websocket, "room:one")
        assert await socket.ask(join=[]) == {"done": ["room:one"]}  # one key, not its letters

        too_many = [f"room:{number}" for number in range(256)]
        answer = await socket.ask(join=too_many)
        assert answer["error"].startswith("ValueError: a socket may hold at most 256 keys")
        answer = await socket.ask(data={"name": "x" * 5000})
        assert answer["error"].startswith("ValueError: per-socket data takes")
        answer = await socket.ask(join=[""])
        assert answer["error"] == "ValueError: a key must be a non-empty string"
        answer = await socket.ask(leave=socket.session)
        assert answer["error"].startswith("ValueError: the first key of a connection")

        assert await client.post(a, "/verb", verb="revoke", key="room:banned") == {"closed": 0}
        answer = await socket.ask(join="room:banned")
        assert answer["error"].startswith("KeyRevokedError")

        async with httpx.AsyncClient(base_url=a) as http:
            response = await http.post(
                "/verb", json={"verb": "send_to", "handle": "no-such-handle", "data": ""}
            )
        assert response.status_code == 400
        assert "'no-such-handle' is not a handle id" in response.json()["error"]
        unknown = await client.post(a, "/verb", verb="send_to", handle="node0.999999", data="x")
        assert unknown == {"found": False, "node": "node0", "complete": True}

        with pytest.raises(InvalidStatus) as refused:
            await connect(
                ws_url(a, "/room?key=room:banned"), additional_headers=cookie_header(client.cookies)
            )
        assert refused.value.response.status_code == 403
        # The socket is still open, and its keys are what the successful calls left.
        assert await socket.ask(join="room:ok") == {"done": ["room:ok", "room:one"]}
