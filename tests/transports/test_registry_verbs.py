"""The registry's verbs for rooms, presence, single sockets and broadcast, over every
broker (memory, Redis, Redis Cluster, NATS): three registries, one broker."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from sessionws import KeyRevokedError, SessionRegistry
from tests._helpers import wait_for
from tests.core.helpers import RecordingConnection
from tests.transports._backends import Backend

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py and nats-py are asyncio-only


@asynccontextmanager
async def three_nodes(backend: Backend) -> AsyncIterator[list[SessionRegistry]]:
    namespace = f"verbs{secrets.token_hex(3)}"
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                SessionRegistry(
                    backend.make_transport(),
                    namespace=namespace,
                    node_id=f"n{index}",
                    heartbeat_interval=0.1,
                    linger=0.05,
                    confirm_timeout=3.0,
                )
            )
            for index in range(3)
        ]
        await wait_for(lambda: all(len(node.live_nodes()) == 2 for node in nodes), timeout=10)
        yield nodes


async def test_rooms_presence_direct_and_broadcast_work_on_every_broker(backend: Backend) -> None:
    async with three_nodes(backend) as nodes:
        ada, bob, eve = RecordingConnection("ada"), RecordingConnection("bob"), RecordingConnection("eve")
        ada_handle = await nodes[0].register(ada, "s-ada", data={"name": "ada"})
        bob_handle = await nodes[1].register(bob, "s-bob", data={"name": "bob"})
        await nodes[2].register(eve, "s-eve")

        await nodes[0].add_keys(ada_handle, "room")
        await nodes[1].add_keys(bob_handle, ["room", "room"])
        listing = await nodes[2].members("room")
        assert listing.complete
        assert sorted((m.node, m.handle_id, m.data["name"] if m.data else "") for m in listing.members) == [
            ("n0", ada_handle.id, "ada"),
            ("n1", bob_handle.id, "bob"),
        ]

        report = await nodes[2].send_all("room", "to the room", confirm=True)
        assert report.complete and report.total == 2
        await wait_for(lambda: ada.sent == ["to the room"] and bob.sent == ["to the room"], timeout=10)

        found = await nodes[2].send_to(bob_handle.id, "just bob")
        assert found.found and found.node == "n1"
        await wait_for(lambda: bob.sent[-1:] == ["just bob"], timeout=10)

        await nodes[1].broadcast("everyone", exclude=ada_handle)
        await wait_for(lambda: bob.sent[-1:] == ["everyone"] and eve.sent == ["everyone"], timeout=10)

        await nodes[1].remove_keys(bob_handle, "room")
        await nodes[2].close_all("room", reason="room closed")
        await wait_for(lambda: ada.close_reason == "room closed", timeout=10)
        assert bob.close_code is None

        closed = await nodes[0].close_handle(bob_handle.id, code=4000, reason="kicked")
        assert closed.found
        await wait_for(lambda: bob.close_code == 4000, timeout=10)
        assert ada.sent == ["to the room"]  # the broadcast spared ada

        await nodes[0].revoke("banned")
        with pytest.raises(KeyRevokedError):
            await nodes[2].add_keys(await nodes[2].register(RecordingConnection(), "s-x"), "banned")
