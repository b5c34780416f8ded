"""``examples/chat``: two app processes and the worker on a real Redis, real browsers' sockets.

Sockets log in over the socket (``auth``) on either node; the worker process sends to
users and prints how many sockets each node reached. A socket must get what its user
is sent, once, and nothing of a user it is no longer logged in as.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from sessionws import SessionRegistry
from tests._redis_servers import RedisServer
from tests.examples._processes import MESSAGE_TIMEOUT, ROOT, Browser, ExampleNode, next_message, running_nodes

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]

SECRET = "the chat's test secret"


def token(user: str) -> str:
    """What a real login would hand the client (see ``user_token`` in the app)."""
    return hmac.new(SECRET.encode(), user.encode(), hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
def nodes(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ExampleNode]]:
    directory = tmp_path_factory.mktemp("chat")
    with running_nodes("examples/chat/app.py", redis_server.url, SECRET, directory) as started:
        yield started


async def connect(
    stack: AsyncExitStack, browser: Browser, node: ExampleNode
) -> aiohttp.ClientWebSocketResponse:
    """A chat socket on ``node``, closed when the test ends; its ``hello`` read."""
    websocket = await stack.enter_async_context(await browser.socket(node))
    hello = await next_message(websocket)
    assert hello["type"] == "hello"
    assert hello["id"].startswith(f"{node.node_id}.")
    return websocket


async def log_in(
    websocket: aiohttp.ClientWebSocketResponse, user: str, user_token: str | None = None
) -> None:
    await websocket.send_json(
        {"type": "auth", "user": user, "token": token(user) if user_token is None else user_token}
    )
    answer = await next_message(websocket)
    assert answer["type"] == "authed", answer
    assert answer["user"] == user


async def run_worker(redis_server: RedisServer, users: list[str], texts: list[str]) -> list[dict[str, Any]]:
    """``python examples/chat/worker.py``: its printed reports, one per (user, text)."""
    command = [sys.executable, str(Path(ROOT) / "examples/chat/worker.py"), "--broker", redis_server.url]
    for user in users:
        command += ["--to", user]
    result = await anyio.run_process([*command, *texts], cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


async def test_the_workers_reply_reaches_every_socket_of_the_user_on_both_nodes(
    nodes: list[ExampleNode], redis_server: RedisServer, stack: AsyncExitStack
) -> None:
    node1, node2 = nodes
    alice = await stack.enter_async_context(Browser.open())
    bob = await stack.enter_async_context(Browser.open())
    await alice.load_page(node1)
    await bob.load_page(node2)
    alice_here, alice_there = await connect(stack, alice, node1), await connect(stack, alice, node2)
    bob_there = await connect(stack, bob, node2)
    for websocket, user in ((alice_here, "alice"), (alice_there, "alice"), (bob_there, "bob")):
        await log_in(websocket, user)

    [report] = await run_worker(redis_server, ["alice"], ["your order shipped"])

    assert report["complete"] is True
    assert report["sockets"] == 2
    assert report["nodes"] == {node1.node_id: 1, node2.node_id: 1}
    for websocket in (alice_here, alice_there):
        assert await next_message(websocket) == {
            "type": "message",
            "from": "worker",
            "to": "alice",
            "text": "your order shipped",
        }
    # Bob's socket, on the same node as one of alice's, got nothing of hers: the next
    # thing it receives is what is sent to bob afterwards.
    [report] = await run_worker(redis_server, ["bob"], ["for bob"])
    assert (report["sockets"], report["complete"]) == (1, True)
    assert (await next_message(bob_there))["text"] == "for bob"


async def test_logging_in_again_as_someone_else_moves_the_socket(
    nodes: list[ExampleNode], redis_server: RedisServer, stack: AsyncExitStack
) -> None:
    node1, node2 = nodes
    browser = await stack.enter_async_context(Browser.open())
    await browser.load_page(node1)
    first, second = await connect(stack, browser, node1), await connect(stack, browser, node2)
    await log_in(first, "carol")
    await log_in(first, "carol")  # again as the same user: still one key, one copy
    await log_in(second, "carol")
    await log_in(second, "dave")  # the socket on node 2 is dave's now, and only his

    reports = await run_worker(redis_server, ["carol", "dave"], ["one", "two"])

    assert [(report["user"], report["text"], report["sockets"]) for report in reports] == [
        ("carol", "one", 1),
        ("dave", "one", 1),
        ("carol", "two", 1),
        ("dave", "two", 1),
    ]
    assert all(report["complete"] for report in reports)
    # Each socket gets its user's two messages in order, once each, and nothing else.
    for websocket, user in ((first, "carol"), (second, "dave")):
        received = [await next_message(websocket) for _ in range(2)]
        assert [(message["to"], message["text"]) for message in received] == [(user, "one"), (user, "two")]


async def test_sockets_send_to_users_and_refuse_bad_logins(
    nodes: list[ExampleNode], redis_server: RedisServer, stack: AsyncExitStack
) -> None:
    node1, node2 = nodes
    erin = await stack.enter_async_context(Browser.open())
    frank = await stack.enter_async_context(Browser.open())
    await erin.load_page(node1)
    await frank.load_page(node2)
    erin_socket, frank_socket = await connect(stack, erin, node1), await connect(stack, frank, node2)

    await erin_socket.send_json({"type": "say", "to": "frank", "text": "before login"})
    assert "log in first" in (await next_message(erin_socket))["error"]
    await erin_socket.send_json({"type": "auth", "user": "frank", "token": token("erin")})
    assert "bad token" in (await next_message(erin_socket))["error"]
    await erin_socket.send_str("not json")
    assert (await next_message(erin_socket))["type"] == "error"

    await log_in(erin_socket, "erin")
    await log_in(frank_socket, "frank")
    await erin_socket.send_json({"type": "say", "to": "frank", "text": "hi frank"})
    sent = await next_message(erin_socket)
    assert (sent["type"], sent["sockets"], sent["complete"]) == ("sent", 1, True)
    assert await next_message(frank_socket) == {
        "type": "message",
        "from": "erin",
        "to": "frank",
        "text": "hi frank",
    }


async def test_a_revoked_user_is_logged_out_everywhere_and_cannot_log_in_again(
    nodes: list[ExampleNode], redis_server: RedisServer, stack: AsyncExitStack
) -> None:
    node1, node2 = nodes
    browser = await stack.enter_async_context(Browser.open())
    await browser.load_page(node1)
    logged_in = await connect(stack, browser, node1)
    await log_in(logged_in, "grace")
    later = await connect(stack, browser, node2)

    # An admin tool (or the app's "log out everywhere") revokes the user's key.
    async with SessionRegistry(redis_server.url, publish_only=True) as admin:
        report = await admin.revoke("user:grace", ttl=60, confirm=True)
    assert (report.total, report.complete) == (1, True)
    with anyio.fail_after(MESSAGE_TIMEOUT):
        closed = await logged_in.receive()
    assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 4401)

    # A socket of the same browser on the other node cannot log in as grace any more...
    await later.send_json({"type": "auth", "user": "grace", "token": token("grace")})
    assert "logged out everywhere" in (await next_message(later))["error"]
    # ...and is still served, as another user.
    await log_in(later, "heidi")


async def test_one_node_runs_on_the_memory_transport(tmp_path: Path, stack: AsyncExitStack) -> None:
    with running_nodes("examples/chat/app.py", "memory://", SECRET, tmp_path, count=1) as [node]:
        browser = await stack.enter_async_context(Browser.open())
        await browser.load_page(node)
        first, second = await connect(stack, browser, node), await connect(stack, browser, node)
        await log_in(first, "ivan")
        await log_in(second, "ivan")
        await first.send_json({"type": "say", "to": "ivan", "text": "note to self"})
        for websocket in (first, second):
            message = await next_message(websocket, ignore=("sent",))
            assert (message["from"], message["text"]) == ("ivan", "note to self")
        await stack.aclose()  # the sockets, before the node stops
