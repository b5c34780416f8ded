"""Redis Cluster specifics: sharded subscriptions and the loss of one master."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from sessionws._errors import TransportError
from tests._redis_servers import RedisClusterServers, RedisServer
from tests.transports._backends import FAST_RECONNECT, Node, RedisClusterBackend, channel_name, open_nodes

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

MARKER_KEY = "{sessionws}:sequence"


def channels_by_server(cluster: RedisClusterServers, per_server: int = 2) -> dict[int, list[str]]:
    """Fresh channels, ``per_server`` of them on each master (keyed by port)."""
    found: dict[int, list[str]] = {server.port: [] for server in cluster.servers}
    while any(len(channels) < per_server for channels in found.values()):
        channel = channel_name("shard")
        owner = cluster.server_for(channel).port
        if len(found[owner]) < per_server:
            found[owner].append(channel)
    return found


@pytest.fixture
def cluster(redis_cluster: RedisClusterServers) -> Iterator[RedisClusterServers]:
    """The session's cluster, healed again after the test."""
    yield redis_cluster
    RedisClusterBackend(redis_cluster).cleanup()


async def shard_subscribers(server: RedisServer, channels: list[str]) -> list[int]:
    client = Redis(host=server.host, port=server.port)
    try:
        return [int(count) for _, count in await client.pubsub_shardnumsub(*channels)]
    finally:
        await client.aclose()


async def test_channels_are_subscribed_on_their_own_shard_only(cluster: RedisClusterServers) -> None:
    by_server = channels_by_server(cluster)
    every_channel = [channel for channels in by_server.values() for channel in channels]
    async with open_nodes(RedisClusterBackend(cluster), 1) as (node,):
        await node.transport.subscribe(every_channel)
        for server in cluster.servers:
            expected = [1 if channel in by_server[server.port] else 0 for channel in every_channel]
            assert await shard_subscribers(server, every_channel) == expected
        await node.transport.unsubscribe(every_channel)
        for server in cluster.servers:
            assert await shard_subscribers(server, every_channel) == [0] * len(every_channel)


async def test_losing_one_master_silences_only_its_shard(cluster: RedisClusterServers) -> None:
    victim = cluster.server_for(MARKER_KEY)
    by_server = channels_by_server(cluster)
    every_channel = [channel for channels in by_server.values() for channel in channels]
    survivors = [
        channel for port, channels in by_server.items() if port != victim.port for channel in channels
    ]
    async with open_nodes(RedisClusterBackend(cluster), 2) as (subscriber, publisher):
        await subscriber.transport.subscribe(every_channel)
        identity = subscriber.transport.identity

        await anyio.to_thread.run_sync(victim.kill)
        await subscriber.recorder.wait_for_event("lost")
        assert not subscriber.transport.connected
        for channel in survivors:
            assert await publisher.transport.publish(channel, b"while one master is down") == 1
        await subscriber.recorder.wait_for(lambda: len(subscriber.recorder.messages) == len(survivors))
        with pytest.raises(TransportError):
            await publisher.transport.publish(by_server[victim.port][0], b"to the dead shard")
        with pytest.raises(TransportError):
            await subscriber.transport.subscribe([by_server[victim.port][0], channel_name()])

        await anyio.to_thread.run_sync(cluster.restart, victim)
        await subscriber.recorder.wait_for_event("restored")
        assert subscriber.recorder.events == ["lost", "restored"]
        assert subscriber.transport.identity != identity
        with anyio.fail_after(10):
            while (await publisher.transport.publish(by_server[victim.port][1], b"back")) != 1:
                await anyio.sleep(0.05)
        await subscriber.recorder.wait_for_messages(by_server[victim.port][1], 1)


async def test_losing_a_master_without_markers_keeps_the_identity(cluster: RedisClusterServers) -> None:
    marker_server = cluster.server_for(MARKER_KEY)
    victim = next(server for server in cluster.servers if server is not marker_server)
    transport = RedisClusterBackend(cluster).make_transport(**FAST_RECONNECT)
    node = Node(transport)
    async with transport.open(node.recorder):
        identity = transport.identity
        assert identity  # the epoch beside the markers, not a server run id
        await anyio.to_thread.run_sync(victim.kill)
        await node.recorder.wait_for_event("lost")
        await anyio.to_thread.run_sync(cluster.restart, victim)
        await node.recorder.wait_for_event("restored")
        assert transport.identity == identity


async def test_a_migrated_slot_is_followed_to_its_new_primary(cluster: RedisClusterServers) -> None:
    channel = channel_name("moving")
    while key_slot(channel.encode()) == key_slot(MARKER_KEY.encode()):
        channel = channel_name("moving")
    slot = str(key_slot(channel.encode()))
    source = cluster.server_for(channel)
    target = next(server for server in cluster.servers if server is not source)
    target_id = target.command("CLUSTER", "MYID").decode()
    async with open_nodes(RedisClusterBackend(cluster), 2) as (subscriber, publisher):
        await subscriber.transport.subscribe([channel])
        # An empty slot changes owner at once; the old owner drops its subscribers.
        for server in (target, source, *(s for s in cluster.servers if s not in (target, source))):
            assert server.command("CLUSTER", "SETSLOT", slot, "NODE", target_id) == b"+OK\r\n"
        await subscriber.recorder.wait_for_event("restored")
        assert subscriber.recorder.events == ["lost", "restored"]
        assert await shard_subscribers(target, [channel]) == [1]
        assert await publisher.transport.publish(channel, b"found") == 1
        assert await subscriber.recorder.wait_for_messages(channel, 1) == [b"found"]


async def test_a_node_that_starts_while_the_cluster_restarts_waits_for_it(
    cluster: RedisClusterServers,
) -> None:
    """Opening while every master is down keeps trying for ``open_timeout``, as the
    standalone transport does: a node restarted during a broker outage comes up."""
    backend = RedisClusterBackend(cluster)
    await backend.kill()
    try:
        transport = backend.make_transport(open_timeout=20)
        node = Node(transport)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(backend.restart)
            async with transport.open(node.recorder):
                assert transport.identity
                channel = channel_name()
                await transport.subscribe([channel])
                assert await transport.publish(channel, b"up") == 1
    finally:
        backend.cleanup()
