"""Rooms that change, presence, one socket anywhere and broadcast, across three node
processes: the adapters' verbs (``add_keys_ws``, ``members_ws``, ``send_to_ws``, ...)
behind the node app's endpoints, real websocket clients, one broker."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest

from sessionws import CLOSE_REVOKED
from tests.cluster._clients import Browser, Clients, Socket, assert_closed, assert_open, new_user
from tests.cluster._cluster import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]


def new_room() -> str:
    """A room key no other test uses (the cluster lives for the whole session)."""
    return f"room:{secrets.token_hex(4)}"


async def logged_in(clients: Clients, node: int) -> Browser:
    browser = clients.browser()
    await browser.login(node, new_user())
    return browser


async def join(clients: Clients, socket: Socket, key: str) -> None:
    """The socket joins ``key`` through the node that holds it (asserts HTTP 200)."""
    status, body = await clients.post(socket.node, "/join", handle=socket.handle, key=key)
    assert status == 200, (status, body)


async def send(clients: Clients, node: int, key: str, data: str, **options: str) -> dict[str, object]:
    status, body = await clients.post(node, "/send", key=key, data=data, **options)
    assert status == 200, (status, body)
    return dict(body)


async def assert_nothing_more(clients: Clients, sockets: list[Socket], expected: list[list[str]]) -> None:
    """Each socket got exactly ``expected`` so far: a direct message sent last is queued
    behind anything its node still had for the socket, so it arriving first proves nothing
    else will."""
    marker = f"marker-{secrets.token_hex(3)}"
    for socket in sockets:
        status, body = await clients.post(2, "/send-to", handle=socket.handle, data=marker)
        assert status == 200 and body["found"], (status, body)
    await asyncio.gather(*(socket.wait_message(marker) for socket in sockets))
    assert [socket.messages for socket in sockets] == [[*want, marker] for want in expected]


async def test_a_socket_joins_a_room_after_connecting_and_leaves_it(
    cluster: Cluster, clients: Clients
) -> None:
    room = new_room()
    ada = await (await logged_in(clients, 0)).connect(0)
    bob = await (await logged_in(clients, 1)).connect(1)
    eve = await (await logged_in(clients, 2)).connect(2)
    ids = cluster.node_ids()

    await join(clients, ada, room)
    await join(clients, bob, room)
    await join(clients, bob, room)  # idempotent: one membership, one delivery
    report = await send(clients, 2, room, "hello room", confirm="1")

    assert report["complete"] and report["confirmed"] and not report["missing"], report
    assert report["sent_here"] == 0 and report["nodes"] == {ids[0]: 1, ids[1]: 1}, report
    await ada.wait_message("hello room")
    await bob.wait_message("hello room")

    status, body = await clients.post(0, "/leave", handle=ada.handle, key=room)
    assert status == 200, (status, body)
    report = await send(clients, 2, room, "after ada left", confirm="1")

    assert report["complete"] and report["nodes"] == {ids[0]: 0, ids[1]: 1}, report
    await bob.wait_message("after ada left")
    await assert_nothing_more(
        clients, [ada, bob, eve], [["hello room"], ["hello room", "after ada left"], []]
    )


async def test_a_socket_is_changed_only_through_the_node_that_holds_it(clients: Clients) -> None:
    socket = await (await logged_in(clients, 0)).connect(0)

    status, _ = await clients.post(1, "/join", handle=socket.handle, key=new_room())

    assert status == 404
    await assert_open([socket])


async def test_a_revoked_room_cannot_be_joined(cluster: Cluster, clients: Clients) -> None:
    room = new_room()
    socket = await (await logged_in(clients, 0)).connect(0)
    status, _ = await clients.post(1, "/revoke", key=room, ttl="60")
    assert status == 200

    status, body = await clients.post(0, "/join", handle=socket.handle, key=room)

    assert status == 403, (status, body)
    assert "KeyRevokedError" in body["error"] and "authenticate again" in body["error"], body
    status, listing = await clients.get(2, "/members", key=room)
    assert status == 200 and listing["members"] == [] and listing["complete"], listing
    await assert_open([socket])


async def test_a_close_of_the_room_before_the_join_does_not_close_the_socket(
    cluster: Cluster, clients: Clients
) -> None:
    """A close reaches the sockets that hold the key when it is issued; one that joins
    later stays open, until the next close."""
    room = new_room()
    browser = await logged_in(clients, 0)
    early = await browser.connect(1)
    await join(clients, early, room)
    report = await clients.close_key(0, room, code="4000", confirm="1")
    assert report["complete"] and report["total"] == 1, report
    await assert_closed([early], 4000)

    late = [await browser.connect(1), await browser.connect(2)]
    for socket in late:
        await join(clients, socket, room)
    await assert_open(late)
    report = await clients.close_key(0, room, code="4001", confirm="1")

    assert report["complete"] and report["total"] == 2, report
    # Closed by the second close (4001), not by a stale memory of the first (4000).
    await assert_closed(late, 4001)


async def test_a_revoke_racing_a_join_never_leaves_the_socket_in_the_room(clients: Clients) -> None:
    """Node 3's socket joins a room while node 1 revokes it, at many offsets: the join is
    refused (403, the socket stays open outside the room) or the socket is closed."""
    outcomes: list[tuple[Socket, int]] = []
    for attempt in range(10):
        room = new_room()
        socket = await (await logged_in(clients, 2)).connect(2)
        # From the join 10 ms ahead to the revoke 8 ms ahead.
        offset = (5 - attempt) * 0.002

        async def join_later(
            room: str = room, socket: Socket = socket, delay: float = max(-offset, 0)
        ) -> int:
            await asyncio.sleep(delay)
            status, _ = await clients.post(2, "/join", handle=socket.handle, key=room)
            return status

        async def revoke_later(room: str = room, delay: float = max(offset, 0)) -> None:
            await asyncio.sleep(delay)
            status, _ = await clients.post(0, "/revoke", key=room, ttl="60")
            assert status == 200

        status, _ = await asyncio.gather(join_later(), revoke_later())
        assert status in (200, 403), status
        outcomes.append((socket, status))
    for socket, status in outcomes:
        if status == 200:
            assert await socket.wait_closed() == CLOSE_REVOKED, socket
        else:
            await assert_open([socket])


async def test_members_lists_every_socket_of_the_room_on_every_node_with_its_data(
    cluster: Cluster, clients: Clients
) -> None:
    room = new_room()
    browsers = [await logged_in(clients, node) for node in (0, 1, 2)]
    sockets = [
        await browser.connect(node, data=json.dumps({"name": f"user{node}"}))
        for node, browser in enumerate(browsers)
    ]
    for socket in sockets:
        await join(clients, socket, room)
    status, body = await clients.post(
        2, "/data", handle=sockets[2].handle, data=json.dumps({"name": "renamed"})
    )
    assert status == 200, body
    ids = cluster.node_ids()

    status, listing = await clients.get(1, "/members", key=room)

    assert status == 200, listing
    assert listing["complete"] and not listing["missing"] and not listing["truncated"], listing
    assert sorted((m["handle"], m["node"], m["data"]["name"]) for m in listing["members"]) == sorted(
        [
            (sockets[0].handle, ids[0], "user0"),
            (sockets[1].handle, ids[1], "user1"),
            (sockets[2].handle, ids[2], "renamed"),
        ]
    )
    assert all(room in member["keys"] for member in listing["members"]), listing
    # Without a key: the caller's own session, its tabs on every node.
    second_tab = await browsers[0].connect(2)
    status, own = await browsers[0].request("GET", 1, "/members")
    assert status == 200 and own["complete"], own
    assert sorted(member["handle"] for member in own["members"]) == sorted(
        [sockets[0].handle, second_tab.handle]
    )


async def test_members_and_a_confirmed_send_are_incomplete_while_a_node_is_paused(
    cluster: Cluster, clients: Clients
) -> None:
    node3 = cluster.process(2)
    room = new_room()
    sockets = [await (await logged_in(clients, node)).connect(node) for node in (0, 1, 2)]
    for socket in sockets:
        await join(clients, socket, room)
    ids = cluster.node_ids()

    node3.pause()  # SIGSTOP: still a member for three heartbeats, but deaf
    try:
        status, listing = await clients.get(1, "/members", key=room, timeout="0.5")
        report = await send(clients, 1, room, "while paused", confirm="1", timeout="0.5")
    finally:
        node3.resume()

    assert status == 200 and not listing["complete"] and listing["missing"] == [ids[2]], listing
    assert sorted(member["node"] for member in listing["members"]) == sorted(ids[:2]), listing
    assert not report["complete"] and report["missing"] == [ids[2]], report
    assert report["sent_here"] == 1 and report["nodes"] == {ids[0]: 1}, report
    # Once resumed, node 3 reads the message the broker kept for it.
    await asyncio.gather(*(socket.wait_message("while paused") for socket in sockets))


async def test_send_to_reaches_exactly_one_socket_on_any_node_and_says_if_found(
    cluster: Cluster, clients: Clients
) -> None:
    browser = await logged_in(clients, 0)
    sockets = [await browser.connect(node) for node in (0, 0, 1, 2)]
    ids = cluster.node_ids()

    remote = await clients.post(2, "/send-to", handle=sockets[1].handle, data="to the second tab")
    local = await clients.post(2, "/send-to", handle=sockets[3].handle, data="to the fourth tab")

    assert remote == (200, {"found": True, "node": ids[0], "complete": True, "queued": False}), remote
    assert local == (200, {"found": True, "node": ids[2], "complete": True, "queued": False}), local
    await assert_nothing_more(clients, sockets, [[], ["to the second tab"], [], ["to the fourth tab"]])

    unknown = await clients.post(1, "/send-to", handle=f"{ids[0]}.999999999", data="nobody")
    assert unknown == (200, {"found": False, "node": ids[0], "complete": True, "queued": False}), unknown
    status, body = await clients.post(1, "/send-to", handle="not-a-handle", data="nobody")
    assert status == 400 and "not a handle id" in body["error"], body


async def test_close_handle_closes_exactly_one_socket_with_its_code(
    cluster: Cluster, clients: Clients
) -> None:
    browser = await logged_in(clients, 0)
    sockets = [await browser.connect(node) for node in (0, 1, 1, 2)]
    ids = cluster.node_ids()

    status, body = await clients.post(
        0, "/close-handle", handle=sockets[1].handle, code="4321", reason="kicked"
    )

    assert status == 200 and body["found"] and body["node"] == ids[1] and body["complete"], body
    await assert_closed([sockets[1]], 4321)
    assert sockets[1].reason == "kicked"
    await assert_open([sockets[0], *sockets[2:]])


async def test_broadcast_reaches_every_socket_on_every_node_but_the_excluded_one(clients: Clients) -> None:
    sockets = [
        await browser.connect(node)
        for browser in [await logged_in(clients, 0), await logged_in(clients, 1)]
        for node in (0, 1, 2)
    ]
    spared = sockets[4]  # on node 2, where the broadcast is issued

    status, report = await clients.post(1, "/broadcast", data="to everyone", exclude=spared.handle)

    assert status == 200 and not report["queued"], report
    assert report["sent_here"] >= 1, report  # node 2's other socket at least
    others = [socket for socket in sockets if socket is not spared]
    await asyncio.gather(*(socket.wait_message("to everyone") for socket in others))
    await assert_nothing_more(
        clients, sockets, [[] if socket is spared else ["to everyone"] for socket in sockets]
    )
