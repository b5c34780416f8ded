"""Three aiohttp apps in one process on one ``memory://<name>`` hub: a cluster of three.

Cookies are per host, not per port, so one browser's session is the same on every
node (the session lives in its cookie), as behind a load balancer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

import sessionws_aiohttp as sw
from sessionws import CLOSE_REVOKED
from tests._helpers import wait_for
from tests.aiohttp.helpers import Browser, closed_with, fast_registry, hub_url, make_app, serve
from tests.aiohttp.test_verbs import nothing_arrives

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def three_nodes() -> AsyncIterator[list[TestServer]]:
    url = hub_url()
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(serve(make_app(fast_registry(url, node_id=f"node{index}"))))
            for index in range(3)
        ]
        registries = [sw.get_registry(server.app) for server in servers]
        await wait_for(lambda: all(len(registry.live_nodes()) == 2 for registry in registries))
        yield servers


async def sockets_everywhere(
    browser: Browser, servers: list[TestServer]
) -> tuple[str, list[aiohttp.ClientWebSocketResponse]]:
    _, session_ws_id = await browser.get(servers[0], "/")
    sockets = []
    for server in servers:
        websocket, announced = await browser.hello(server)
        assert announced == session_ws_id
        sockets.append(websocket)
    return session_ws_id, sockets


async def test_a_logout_on_one_node_closes_the_sessions_sockets_on_all_three() -> None:
    async with three_nodes() as (a, b, c), Browser() as alice, Browser() as bob:
        alice_id, alice_sockets = await sockets_everywhere(alice, [a, b, c])
        _, bob_sockets = await sockets_everywhere(bob, [a, b, c])
        assert json.loads((await alice.get(b, "/count"))[1]) == {"total": 3, "complete": True}

        await alice.post(a, "/logout")
        assert [await closed_with(websocket) for websocket in alice_sockets] == [
            (CLOSE_REVOKED, "session revoked")
        ] * 3
        for websocket in bob_sockets:
            assert await nothing_arrives(websocket, 0.05)

        # The revoked id is refused before the upgrade on a node that never held it.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await alice.websocket(c)
        assert refused.value.status == 403
        assert all(sw.get_registry(server.app).local_count(alice_id) == 0 for server in (a, b, c))
        assert json.loads((await bob.get(c, "/count"))[1]) == {"total": 3, "complete": True}


async def test_reset_send_and_rotate_across_nodes() -> None:
    async with three_nodes() as (a, b, c), Browser() as bob:
        old, sockets = await sockets_everywhere(bob, [a, b, c])

        assert await bob.post(c, "/send", "to every tab") == (200, "sent")
        assert [await websocket.receive_str(timeout=2) for websocket in sockets] == ["to every tab"] * 3

        assert await bob.post(b, "/reset") == (200, "reset")
        assert [await closed_with(websocket) for websocket in sockets] == [(1000, "")] * 3
        new, sockets = await sockets_everywhere(bob, [a, b, c])
        assert new != old

        status, rotated = await bob.post(a, "/login")
        assert status == 200 and rotated != new
        assert [await closed_with(websocket) for websocket in sockets] == [(1000, "session id rotated")] * 3
        _, again = await bob.hello(c)
        assert again == rotated
