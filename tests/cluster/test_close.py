"""Closing, counting and revoking across three node processes and one broker."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from sessionws import CLOSE_DEFAULT, CLOSE_REVOKED
from tests.cluster._clients import Clients, Socket, assert_closed, assert_open, new_user
from tests.cluster._cluster import SILENCE_WINDOW, Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]


async def test_logout_on_node_1_closes_the_sessions_sockets_on_every_node(clients: Clients) -> None:
    alice, bob = clients.browser(), clients.browser()
    await alice.login(0, new_user())
    await bob.login(1, new_user())
    alices = [await alice.connect(node) for node in (0, 1, 2, 2)]
    bobs = [await bob.connect(node) for node in (0, 1, 2)]

    status, _ = await alice.post(0, "/logout")

    assert status == 200
    await assert_closed(alices, CLOSE_DEFAULT)
    await assert_open(bobs)


async def test_log_out_my_other_devices_spares_the_callers_socket(clients: Clients) -> None:
    name = new_user()
    laptop, phone, tablet, stranger = (clients.browser() for _ in range(4))
    for node, device in enumerate((laptop, phone, tablet)):
        await device.login(node, name)
    await stranger.login(0, new_user())
    mine = await laptop.connect(0)
    others = [
        await laptop.connect(1),
        await phone.connect(1),
        await phone.connect(2),
        await tablet.connect(0),
    ]
    strangers = [await stranger.connect(node) for node in (0, 1, 2)]

    # The laptop's socket on node 1 asks node 2 (another request, another node) to
    # close every other socket of the user: it names itself by the handle /ws sent.
    status, report = await laptop.post(1, "/logout-others", handle=mine.handle, confirm="1")

    assert status == 200, report
    assert report["complete"] and report["total"] == len(others), report
    await assert_closed(others, CLOSE_DEFAULT)
    await assert_open([mine, *strangers])


async def test_close_by_user_key_reaches_every_session_of_the_user(clients: Clients) -> None:
    name = new_user()
    sessions = [clients.browser() for _ in range(3)]
    for node, browser in enumerate(sessions):
        await browser.login(node, name)
    sockets = [await browser.connect(node) for browser in sessions for node in (0, 1, 2)]
    other = clients.browser()
    await other.login(1, new_user())
    bystanders = [await other.connect(node) for node in (0, 1, 2)]

    await clients.close_key(1, f"user:{name}")

    await assert_closed(sockets, CLOSE_DEFAULT)
    await assert_open(bystanders)


async def test_confirmed_close_reports_every_node_and_socket(cluster: Cluster, clients: Clients) -> None:
    browser = clients.browser()
    session = await browser.login(0, new_user())
    placement = {0: 2, 1: 1, 2: 3}
    sockets = [await browser.connect(node) for node, many in placement.items() for _ in range(many)]
    ids = cluster.node_ids()

    report = await clients.close_key(0, session, confirm="1")

    assert report["complete"] and report["confirmed"] and not report["missing"], report
    assert report["closed_here"] == placement[0]
    assert report["nodes"] == {ids[1]: placement[1], ids[2]: placement[2]}
    assert report["total"] == len(sockets)
    # "Closed" in a report means the close frame went out: the clients have it or will.
    await assert_closed(sockets, CLOSE_DEFAULT)

    again = await clients.close_key(2, session, confirm="1")
    assert again["complete"] and again["total"] == 0
    assert again["nodes"] == {ids[0]: 0, ids[1]: 0}, "every live node answers, 0 is an answer"


async def test_confirmed_close_is_incomplete_while_a_node_is_paused(
    cluster: Cluster, clients: Clients
) -> None:
    node3 = cluster.process(2)
    browser = clients.browser()
    session = await browser.login(0, new_user())
    sockets = [await browser.connect(node) for node in (0, 1, 2)]
    ids = cluster.node_ids()

    node3.pause()  # SIGSTOP: still a member for three heartbeats, but deaf
    try:
        report = await clients.close_key(0, session, confirm="1", timeout="0.5")
    finally:
        node3.resume()

    assert not report["complete"], report
    assert report["missing"] == [ids[2]]
    assert report["nodes"] == {ids[1]: 1}
    await assert_closed(sockets[:2], CLOSE_DEFAULT)
    # Once resumed, node 3 reads the command the broker kept for it and closes its socket.
    await assert_closed(sockets[2:], CLOSE_DEFAULT)


async def test_a_node_started_while_another_is_paused_expects_it(cluster: Cluster, clients: Clients) -> None:
    """Node 1 restarts while node 3 is paused: it never hears node 3, but the answers to
    its hello name it, so its confirmed close reports node 3 missing, not complete."""
    node1, node3 = cluster.process(0), cluster.process(2)
    browser = clients.browser()
    session = await browser.login(1, new_user())
    sockets = [await browser.connect(node) for node in (1, 2)]
    ids = cluster.node_ids()

    node3.pause()
    try:
        node1.kill()
        await anyio.to_thread.run_sync(node1.spawn)
        await anyio.to_thread.run_sync(node1.wait_ready)
        report = await clients.close_key(0, session, confirm="1", timeout="0.5")
    finally:
        node3.resume()

    assert not report["complete"], report
    assert ids[2] in report["missing"], report
    await assert_closed(sockets, CLOSE_DEFAULT)


async def test_confirmed_close_is_complete_again_once_a_dead_node_left(
    cluster: Cluster, clients: Clients
) -> None:
    """A node that died without a goodbye looks like one that is only paused: it is
    reported missing for its silence window (30 heartbeats), then forgotten."""
    node3 = cluster.process(2)
    browser = clients.browser()
    session = await browser.login(0, new_user())
    sockets = [await browser.connect(node) for node in (0, 1, 2)]
    ids = cluster.node_ids()

    node3.kill()
    killed_at = time.monotonic()
    report = await clients.close_key(0, session, confirm="1", timeout="0.3")
    if time.monotonic() - killed_at < SILENCE_WINDOW:
        assert not report["complete"] and report["missing"] == [ids[2]], report
    cluster.wait_live(0, {ids[1]})
    browser2 = clients.browser()
    session2 = await browser2.login(0, new_user())
    more = [await browser2.connect(node) for node in (0, 1)]
    report = await clients.close_key(0, session2, confirm="1", timeout="0.3")
    if time.monotonic() - killed_at < SILENCE_WINDOW:
        assert not report["complete"] and report["missing"] == [ids[2]], report
    assert report["nodes"] == {ids[1]: 1} and report["closed_here"] == 1, report
    await assert_closed(sockets[:2] + more, CLOSE_DEFAULT)

    browser3 = clients.browser()
    session3 = await browser3.login(0, new_user())
    last = [await browser3.connect(node) for node in (0, 1)]
    with anyio.fail_after(60):
        while not (report := await clients.close_key(0, session3, confirm="1", timeout="0.3"))["complete"]:
            await anyio.sleep(0.5)
    assert report["missing"] == [] and report["nodes"] in ({ids[1]: 1}, {ids[1]: 0}), report
    await assert_closed(last, CLOSE_DEFAULT)


async def test_count_is_cluster_wide(clients: Clients) -> None:
    name = new_user()
    phone, laptop = clients.browser(), clients.browser()
    session = await phone.login(0, name)
    await laptop.login(2, name)
    phone_sockets = [await phone.connect(node) for node in (0, 1, 1, 2)]
    laptop_sockets = [await laptop.connect(node) for node in (2, 2)]

    for node in (0, 1, 2):
        assert await clients.count(node, session) == (4, True)
        assert await clients.count(node, f"user:{name}") == (6, True)
        assert await clients.count(node, f"user:{new_user()}") == (0, True)

    await phone_sockets[1].close()
    await laptop_sockets[0].close()
    await phone_sockets[1].wait_closed()
    await laptop_sockets[0].wait_closed()
    # The clients closed; their nodes unregister them as their handlers end.
    for node in (0, 1, 2):
        assert await _settled_count(clients, node, session, 3) == (3, True)
        assert await _settled_count(clients, node, f"user:{name}", 4) == (4, True)


async def _settled_count(clients: Clients, node: int, key: str, expected: int) -> tuple[int, bool]:
    deadline = asyncio.get_running_loop().time() + 2.0
    while True:
        counted = await clients.count(node, key)
        if counted[0] == expected or asyncio.get_running_loop().time() > deadline:
            return counted
        await asyncio.sleep(0.02)


async def test_revoke_closes_everywhere_and_refuses_the_session_on_another_node(clients: Clients) -> None:
    browser = clients.browser()
    await browser.login(0, new_user())
    sockets = [await browser.connect(node) for node in (0, 1, 2)]
    stolen = clients.browser()
    stolen.cookies = dict(browser.cookies)

    status, _ = await browser.post(0, "/logout", revoke="1")
    assert status == 200
    # Whoever kept the old cookie tries again at once, on node 3.
    outcome = await stolen.try_connect(2)

    await assert_closed(sockets, CLOSE_REVOKED)
    await _assert_refused(outcome)


async def test_revoke_beats_a_racing_registration(clients: Clients) -> None:
    """Connect to node 3 while node 1 revokes the session, at many offsets: never left open."""
    outcomes: list[Socket | int] = []
    for attempt in range(8):
        browser = clients.browser()
        session = await browser.login(0, new_user())
        await browser.connect(1)

        async def revoke(session: str = session, delay: float = attempt * 0.002) -> None:
            await asyncio.sleep(delay)
            status, _ = await clients.post(0, "/revoke", key=session)
            assert status == 200

        racer, _ = await asyncio.gather(browser.try_connect(2), revoke())
        outcomes.append(racer)
    for outcome in outcomes:
        if isinstance(outcome, Socket):
            assert await outcome.wait_closed() == CLOSE_REVOKED, outcome
        else:
            assert outcome == 403, outcome


async def _assert_refused(outcome: Socket | int) -> None:
    if isinstance(outcome, Socket):
        assert await outcome.wait_closed() == CLOSE_REVOKED, outcome
    else:
        assert outcome == 403, f"a revoked session got HTTP {outcome}"
