"""``examples/rooms``: two uvicorn processes on a real Redis, real browsers' sockets.

Presence, group sends, direct messages and broadcast must hold across the nodes: what a
socket on one node does is seen by sockets on the other, and reaches exactly the sockets
it should. "Did not receive" is checked by order: after the message a socket must not get,
something it must get is sent, and that is the next thing of its kind it receives.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests._redis_servers import RedisServer
from tests.examples._processes import Browser, ExampleNode, Inbox, running_nodes

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]

SECRET = "the rooms' test secret"
#: What a socket is sent by others (member lists and answers to itself aside).
DELIVERIES = ("message", "direct", "broadcast")


@pytest.fixture(scope="module")
def nodes(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ExampleNode]]:
    directory = tmp_path_factory.mktemp("rooms")
    with running_nodes("examples/rooms/app.py", redis_server.url, SECRET, directory) as started:
        yield started


@dataclass
class Person:
    """One socket of the rooms app, and what it received."""

    name: str
    id: str
    inbox: Inbox
    websocket: aiohttp.ClientWebSocketResponse

    async def send(self, **message: Any) -> dict[str, Any]:
        """Send ``message``; the answer to it (the first message that is not someone else's)."""
        await self.websocket.send_json(message)
        return await self.inbox.next_of(
            "joined", "left", "sent", "delivered", "broadcast_sent", "who", "error"
        )

    async def join(self, room: str) -> None:
        assert await self.send(type="join", room=room) == {"type": "joined", "room": room}

    async def leave(self, room: str) -> None:
        assert await self.send(type="leave", room=room) == {"type": "left", "room": room}

    async def sees_members(self, room: str, people: list[Person]) -> None:
        """Wait for a member list of ``room`` naming exactly ``people``' sockets."""
        expected = sorted((person.name, person.id) for person in people)

        def matches(body: dict[str, Any]) -> bool:
            return (
                body["type"] == "members"
                and body["room"] == room
                and sorted((member["name"], member["id"]) for member in body["members"]) == expected
            )

        await self.inbox.take(matches, f"member list of {room} with {expected}")

    async def next_delivery(self) -> dict[str, Any]:
        return await self.inbox.next_of(*DELIVERIES)


async def person(stack: AsyncExitStack, browser: Browser, node: ExampleNode, name: str) -> Person:
    """A socket named ``name`` on ``node``, closed when the test ends."""
    websocket = await stack.enter_async_context(await browser.socket(node, f"/ws?name={name}"))
    inbox = Inbox(websocket)
    welcome = await inbox.next_of("welcome")
    assert welcome["name"] == name
    assert welcome["id"].startswith(f"{node.node_id}.")
    return Person(name, welcome["id"], inbox, websocket)


async def browser_on(stack: AsyncExitStack, node: ExampleNode) -> Browser:
    browser = await stack.enter_async_context(Browser.open())
    await browser.load_page(node)
    return browser


async def test_who_is_online_follows_joins_leaves_and_departures_across_nodes(
    nodes: list[ExampleNode], stack: AsyncExitStack
) -> None:
    node1, node2 = nodes
    alice = await person(stack, await browser_on(stack, node1), node1, "alice")
    bob = await person(stack, await browser_on(stack, node2), node2, "bob")
    carol = await person(stack, await browser_on(stack, node2), node2, "carol")

    await alice.join("lobby")
    await alice.sees_members("lobby", [alice])
    await bob.join("lobby")  # on node 2: alice, on node 1, is listed to bob, and sees him
    await bob.sees_members("lobby", [alice, bob])
    await alice.sees_members("lobby", [alice, bob])
    who = await carol.send(type="who", room="lobby")  # carol is not in the room and may ask
    assert sorted(member["name"] for member in who["members"]) == ["alice", "bob"]
    assert who["complete"] is True

    await carol.join("lobby")
    await alice.sees_members("lobby", [alice, bob, carol])
    await bob.leave("lobby")
    await alice.sees_members("lobby", [alice, carol])
    await carol.sees_members("lobby", [alice, carol])

    await alice.websocket.close()  # a socket that goes away leaves its rooms
    await carol.sees_members("lobby", [carol])


async def test_group_direct_and_broadcast_sends_reach_exactly_their_sockets(
    nodes: list[ExampleNode], stack: AsyncExitStack
) -> None:
    node1, node2 = nodes
    alice = await person(stack, await browser_on(stack, node1), node1, "alice")
    bobs_browser = await browser_on(stack, node2)
    bob1 = await person(stack, bobs_browser, node2, "bob")
    bob2 = await person(stack, bobs_browser, node2, "bob")  # the same session, a second tab
    carol = await person(stack, await browser_on(stack, node1), node1, "carol")
    dave = await person(stack, await browser_on(stack, node2), node2, "dave")
    everyone = [alice, bob1, bob2, carol, dave]
    cooks = [alice, bob1, bob2]
    for cook in cooks:
        await cook.join("kitchen")
    await alice.sees_members("kitchen", cooks)

    # A group send reaches the room's sockets on both nodes, and the sender hears how many.
    sent = await alice.send(type="say", room="kitchen", text="soup is ready")
    assert (sent["sockets"], sent["complete"]) == (3, True)
    for cook in cooks:
        assert (await cook.next_delivery())["text"] == "soup is ready"

    # A direct message reaches one socket on the other node, not the other tab of its session.
    delivered = await carol.send(type="direct", to=bob1.id, text="psst")
    assert (delivered["found"], delivered["complete"]) == (True, True)
    assert await bob1.next_delivery() == {
        "type": "direct",
        "from": "carol",
        "from_id": carol.id,
        "text": "psst",
    }

    # A broadcast reaches everyone; it is the next thing those the two sends skipped receive.
    assert (await dave.send(type="broadcast", text="closing at ten"))["type"] == "broadcast_sent"
    for somebody in everyone:
        delivery = await somebody.next_delivery()
        assert (delivery["type"], delivery["text"]) == ("broadcast", "closing at ten"), somebody.name

    # Leaving stops delivery: bob's first tab misses the next group send.
    await bob1.leave("kitchen")
    await alice.sees_members("kitchen", [alice, bob2])
    sent = await alice.send(type="say", room="kitchen", text="dessert")
    assert sent["sockets"] == 2
    for cook in (alice, bob2):
        assert (await cook.next_delivery())["text"] == "dessert"
    await dave.send(type="broadcast", text="good night")
    assert (await bob1.next_delivery())["text"] == "good night"


async def test_bad_requests_get_clear_answers(nodes: list[ExampleNode], stack: AsyncExitStack) -> None:
    node1, node2 = nodes
    browser = await browser_on(stack, node1)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await browser.socket(node1, "/ws?name=not%20a%20name")
    assert refused.value.status == 403

    erin = await person(stack, browser, node1, "erin")
    gone = f"{node2.node_id}.999999"
    assert await erin.send(type="direct", to=gone, text="anyone?") == {
        "type": "delivered",
        "to": gone,
        "found": False,
        "complete": True,
    }
    for message, error in (
        ({"type": "direct", "to": "no-dot", "text": "x"}, "is not a handle id"),
        ({"type": "say", "room": "attic", "text": "x"}, "join 'attic' before"),
        ({"type": "join", "room": "a room"}, "a room name is"),
        ({"type": "say", "room": "attic"}, "join 'attic' before"),
        ({"type": "shout"}, "unknown message type"),
    ):
        answer = await erin.send(**message)
        assert answer["type"] == "error", answer
        assert error in answer["error"]
    await erin.websocket.send_str("[1, 2]")
    assert "JSON object" in (await erin.inbox.next_of("error"))["error"]
    await erin.websocket.send_bytes(b"\x00")
    assert "text frames" in (await erin.inbox.next_of("error"))["error"]
    await erin.join("attic")  # still served after all that


async def test_one_node_runs_on_the_memory_transport(tmp_path: Path, stack: AsyncExitStack) -> None:
    with running_nodes("examples/rooms/app.py", "memory://", SECRET, tmp_path, count=1) as [node]:
        browser = await browser_on(stack, node)
        judy, ken = await person(stack, browser, node, "judy"), await person(stack, browser, node, "ken")
        await judy.join("porch")
        await ken.join("porch")
        await judy.sees_members("porch", [judy, ken])
        assert (await ken.send(type="say", room="porch", text="hello"))["sockets"] == 2
        assert (await judy.next_delivery())["text"] == "hello"
        await stack.aclose()  # the sockets, before the node stops
