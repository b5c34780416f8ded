"""After every client left: no registry entry on any node, no key subscription on the broker."""

from __future__ import annotations

import time

import aiohttp
import anyio
import pytest

from sessionws import CLOSE_DEFAULT, CLOSE_REVOKED
from tests.cluster._clients import Clients, assert_closed, new_user
from tests.cluster._cluster import NAMESPACE, Cluster
from tests.cluster._nodes import get_json

pytestmark = [pytest.mark.cluster, pytest.mark.anyio]


def _node_leftovers(cluster: Cluster) -> dict[str, dict[str, int]]:
    left = {}
    for node in cluster.nodes:
        _, stats = get_json(f"{node.url}/stats")
        counts = {name: int(stats[name]) for name in ("sockets", "keys", "subscriptions", "local_keys")}
        if any(counts.values()):
            left[node.name] = counts
    return left


async def test_nothing_is_left_after_every_client_left(cluster: Cluster, clients: Clients) -> None:
    closed_by_user, revoked, logged_out, leaving = (clients.browser() for _ in range(4))
    name = new_user()
    for index, browser in enumerate((closed_by_user, revoked, logged_out, leaving)):
        await browser.login(index % 3, name if browser is closed_by_user else new_user())
    sockets = {
        browser: [await browser.connect(node) for node in (0, 1, 2, 2)]
        for browser in (closed_by_user, revoked, logged_out, leaving)
    }
    while_connected = cluster.broker.key_subscriptions(NAMESPACE)
    # The check at the end must be able to see subscriptions: here are the 8 keys' channels.
    assert while_connected is None or len(while_connected) >= 8, while_connected

    # Every way out: closed by a key, revoked, logged out, failed upgrades, clients leaving.
    await clients.close_key(1, f"user:{name}")
    status, _ = await clients.post(2, "/revoke", key=revoked.session_id)
    assert status == 200
    status, _ = await logged_out.post(0, "/logout")
    assert status == 200
    for node in (0, 1, 2):
        url = f"{cluster.url(node)}/ws"
        async with clients.http.get(url, headers=leaving.headers()) as plain:
            # A plain GET on the websocket route: no upgrade (aiohttp: 400, Starlette: 404).
            assert plain.status in (400, 404)
        with pytest.raises(aiohttp.WSServerHandshakeError):  # revoked: refused before the upgrade
            await clients.http.ws_connect(url, headers=revoked.headers())
    await assert_closed(sockets[closed_by_user] + sockets[logged_out], CLOSE_DEFAULT)
    await assert_closed(sockets[revoked], CLOSE_REVOKED)
    await clients.close_all_sockets()  # the last ones leave on their own

    deadline = time.monotonic() + 10
    nodes_left: dict[str, dict[str, int]] = {}
    broker_left: list[str] | None = []
    while time.monotonic() < deadline:
        nodes_left = _node_leftovers(cluster)
        broker_left = cluster.broker.key_subscriptions(NAMESPACE)
        if not nodes_left and not broker_left:
            break
        await anyio.sleep(0.1)
    assert not nodes_left, f"registry entries left on the nodes: {nodes_left}"
    if broker_left is None:
        pytest.skip("nodes are clean; this environment gives no way to inspect the broker's subscriptions")
    assert not broker_left, f"key channels still subscribed on the broker: {broker_left}"
