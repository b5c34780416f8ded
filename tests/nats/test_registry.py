"""The core registry over NATS, end to end: the transport's behaviour as the registry needs it."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from sessionws import CLOSE_UNKNOWN_STATE, SessionRegistry, Transport
from tests._helpers import wait_for
from tests._nats_servers import NatsServer
from tests._registry_faults import frozen_broker_loses_no_close, two_nodes
from tests.nats.helpers import FakeWebsocket, make_transport

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def registries(server: NatsServer, count: int) -> list[SessionRegistry]:
    return [
        SessionRegistry(make_transport(server.url), namespace="app", heartbeat_interval=0.2)
        for _ in range(count)
    ]


async def test_close_all_reaches_another_node(nats_server: NatsServer) -> None:
    first, second = registries(nats_server, 2)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(first)
        await stack.enter_async_context(second)
        socket = FakeWebsocket()
        await second.register(socket, "user-1")
        await wait_for(lambda: first.stats()["members"] == 1, timeout=5)  # `first` knows `second` is alive
        report = await first.close_all("user-1", confirm=True, timeout=3)
        assert report.complete
        assert report.total == 1
        assert socket.close_code == 1000


async def test_revoke_is_seen_by_another_node(nats_server: NatsServer) -> None:
    first, second = registries(nats_server, 2)
    async with first, second:
        await first.revoke("session-9", ttl=30)
        assert await second.is_revoked("session-9")
        late = FakeWebsocket()
        handle = await second.register(late, "session-9")
        assert handle.closing
        await wait_for(lambda: late.close_code is not None, timeout=5)


async def test_broker_data_loss_closes_local_sockets_with_1012(nats_server: NatsServer) -> None:
    (registry,) = registries(nats_server, 1)
    async with registry:
        socket = FakeWebsocket()
        await registry.register(socket, "user-2")
        await nats_server.restart(keep_data=False)
        await wait_for(lambda: socket.close_code is not None, timeout=10)
        assert socket.close_code == CLOSE_UNKNOWN_STATE


async def test_a_close_made_during_an_outage_is_not_missed(nats_server: NatsServer) -> None:
    first, second = registries(nats_server, 2)
    async with first, second:
        socket = FakeWebsocket()
        await second.register(socket, "user-3")
        second_transport = second.transport
        nats_server.kill()
        await wait_for(lambda: not second_transport.connected, timeout=5)
        await nats_server.start()
        # The close is written (marker + message) while `second` may still be reconnecting.
        await wait_for(lambda: first.transport.connected, timeout=5)
        await first.close_all("user-3")
        await wait_for(lambda: socket.close_code is not None, timeout=10)
        assert socket.close_code == 1000


async def test_nats_frozen_longer_than_the_request_timeout_loses_no_close(nats_server: NatsServer) -> None:
    def make() -> Transport:
        return make_transport(nats_server.url, request_timeout=0.5)

    async with two_nodes(make) as (first, second):
        await frozen_broker_loses_no_close(first, second, nats_server.pause, nats_server.resume)


async def test_a_node_that_just_started_hears_the_membership_before_it_answers_complete(
    nats_server: NatsServer,
) -> None:
    """NATS reports no receivers: a registry's first confirmed command must wait for
    the membership, not report an empty cluster as complete."""
    (holder,) = registries(nats_server, 1)
    async with holder:
        socket = FakeWebsocket()
        await holder.register(socket, "user-1")
        url = nats_server.url
        fresh_ones = [
            SessionRegistry(make_transport(url), namespace="app", publish_only=True),
            SessionRegistry(make_transport(url), namespace="app", heartbeat_interval=0.2),
        ]
        for fresh_registry in fresh_ones:
            async with fresh_registry as fresh:
                report = await fresh.send_all("user-1", "hello", confirm=True, timeout=3)
                assert report.complete and dict(report.nodes) == {holder.node_id: 1}, report
                count = await fresh.count("user-1", timeout=3)
                assert count == (1, True)
