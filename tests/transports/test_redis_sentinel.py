"""What the Redis Sentinel transport promises beyond the shared contract.

The contract suite runs on Sentinel too (``redis-sentinel`` in ``_backends.py``).
Here: its URL, and failovers against real processes — a master, a replica and three
sentinels that fail over a dead master after a second.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import anyio
import pytest
import redis
from redis.asyncio.sentinel import Sentinel

from sessionws import SessionRegistry
from sessionws._codes import CLOSE_REVOKED, CLOSE_UNKNOWN_STATE
from sessionws._protocols import Marker
from sessionws_redis import RedisSentinelTransport, transport_from_url
from sessionws_redis._sentinel import SentinelLinkConnection, SentinelLinkSSLConnection
from tests._helpers import wait_for
from tests._redis_sentinel_servers import SentinelGroup, running_sentinel_group
from tests.core.helpers import RecordingConnection
from tests.transports._backends import FAST_RECONNECT, Node, channel_name

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

# --- the URL ----------------------------------------------------------------------


def test_the_url_names_sentinels_service_database_and_options() -> None:
    transport = transport_from_url(
        "redis+sentinel://user:p%40ss@s1:26380,s2,[::1]:26381/mymaster/3"
        "?prefix=myapp&command_timeout=2.5&socket_connect_timeout=4&min_other_sentinels=1"
        "&failover_check_interval=0.5",
        client_name="node-1",
    )
    assert isinstance(transport, RedisSentinelTransport)
    assert transport.service_name == "mymaster"
    assert transport._options.prefix == "myapp"
    assert transport._options.command_timeout == 2.5
    assert transport._failover_check_interval == 0.5
    sentinel = transport._sentinel
    assert [
        (client.connection_pool.connection_kwargs["host"], client.connection_pool.connection_kwargs["port"])
        for client in sentinel.sentinels
    ] == [("s1", 26380), ("s2", 26379), ("::1", 26381)]
    assert sentinel.min_other_sentinels == 1
    pool = transport._pool
    assert pool.service_name == "mymaster"
    assert pool.connection_class is SentinelLinkConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("user", "p@ss", 3)
    assert (kwargs["socket_connect_timeout"], kwargs["client_name"]) == (4.0, "node-1")
    # The transport bounds commands itself; the sentinels get short timeouts of their own.
    assert kwargs["socket_timeout"] is None
    assert sentinel.sentinel_kwargs == {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}


def test_rediss_sentinel_speaks_tls_to_the_master_and_the_sentinels() -> None:
    transport = RedisSentinelTransport.from_url(
        "rediss+sentinel://s1:26379/mymaster?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem"
    )
    pool = transport._pool
    assert pool.connection_class is SentinelLinkSSLConnection
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    assert transport._sentinel.sentinel_kwargs["ssl"] is True
    assert transport._sentinel.sentinel_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert "db" not in pool.connection_kwargs


def test_the_registry_takes_a_sentinel_url_with_its_options() -> None:
    registry = SessionRegistry("redis+sentinel://127.0.0.1:1/mymaster/0?prefix=myapp")
    assert isinstance(registry.transport, RedisSentinelTransport)
    assert registry.transport._options.prefix == "myapp"


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("redis+sentinel://s1:26379", {}, "names the service"),
        ("redis+sentinel://s1:26379/", {}, "names the service"),
        ("redis+sentinel://s1/a/b/c", {}, "names the service"),
        ("redis+sentinel://s1/mymaster/zero", {}, "must be a number"),
        ("redis+sentinel://s1:port/mymaster", {}, "bad sentinel port"),
        ("redis+sentinel://s1,,s2/mymaster", {}, "empty sentinel address"),
        ("redis+sentinel://s1/mymaster?bucket=x", {}, "unknown option 'bucket'"),
        ("redis+sentinel://s1/mymaster?prefx=x", {}, "did you mean 'prefix'"),
        ("redis+sentinel://s1/mymaster", {"bucket": "x"}, "unknown option 'bucket'"),
        ("redis+sentinel://s1/mymaster?prefix=a b", {}, "prefix must be"),
        ("redis+sentinel://s1/mymaster?failover_check_interval=0", {}, "failover_check_interval"),
        ("redis+sentinel://s1/mymaster?min_other_sentinels=two", {}, "min_other_sentinels='two'"),
        ("redis://s1/0", {}, "takes redis+sentinel:// URLs"),
    ],
)
def test_bad_sentinel_urls_are_refused_at_construction(
    url: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        RedisSentinelTransport.from_url(url, **options)


def test_a_ready_sentinel_must_be_one() -> None:
    with pytest.raises(TypeError, match=r"redis\.asyncio\.sentinel\.Sentinel"):
        RedisSentinelTransport(object(), "mymaster")  # type: ignore[arg-type]
    sentinel = Sentinel([("127.0.0.1", 1)])  # type: ignore[no-untyped-call]
    with pytest.raises(ValueError, match="service_name"):
        RedisSentinelTransport(sentinel, "")
    with pytest.raises(ValueError, match="connection_class is chosen by the transport"):
        RedisSentinelTransport(sentinel, "mymaster", master_options={"connection_class": object})


# --- against the contract suite's deployment (it never fails over) ----------------


async def test_a_ready_sentinel_is_used_and_left_open(redis_sentinel: SentinelGroup) -> None:
    addresses = [("127.0.0.1", sentinel.port) for sentinel in redis_sentinel.sentinels]
    sentinel = Sentinel(addresses)  # type: ignore[no-untyped-call]
    try:
        transport = RedisSentinelTransport(sentinel, redis_sentinel.service, prefix="ready", **FAST_RECONNECT)
        node = Node(transport)
        channel = channel_name()
        async with transport.open(node.recorder):
            await transport.subscribe([channel])
            assert await transport.publish(channel, b"hello") == 1
            await node.recorder.wait_for_messages(channel, 1)
        # The transport closed its own client, not the sentinels' connections.
        assert await sentinel.discover_master(redis_sentinel.service) == (
            "127.0.0.1",
            redis_sentinel.master().port,
        )
    finally:
        await sentinel.aclose()


async def test_a_connection_refuses_a_server_that_is_not_the_master(redis_sentinel: SentinelGroup) -> None:
    """A sentinel that has not noticed a failover yet names a replica (or a demoted
    master): the connection sees ``ROLE`` and refuses it, to be tried again."""
    transport = RedisSentinelTransport.from_url(redis_sentinel.url)
    replica = redis_sentinel.replicas()[0]
    connection = transport._pool.make_connection()  # type: ignore[no-untyped-call]
    assert isinstance(connection, SentinelLinkConnection)
    with pytest.raises(redis.ConnectionError, match="not the master of 'mymaster'"):
        await connection.connect_to(("127.0.0.1", replica.port))
    assert not connection.is_connected
    await connection.connect_to(("127.0.0.1", redis_sentinel.master().port))
    assert connection.is_connected
    await connection.disconnect()


# --- failovers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def failover_group() -> Iterator[SentinelGroup]:
    """A deployment whose sentinels fail a dead master over after a second (shorter
    makes them fail a master over that was only slow, on a loaded machine)."""
    with running_sentinel_group(down_after_ms=1000) as group:
        yield group


def fast_url(group: SentinelGroup) -> str:
    """The group's URL with quick reconnects and master checks, set in the query."""
    return (
        f"{group.url}?reconnect_min_delay=0.01&reconnect_max_delay=0.1&open_timeout=5"
        "&command_timeout=5&failover_check_interval=0.2"
    )


async def check_closes_and_revokes_work(node_a: SessionRegistry, node_b: SessionRegistry, label: str) -> None:
    """A close and a revoke issued on node a reach a socket on node b."""
    after = RecordingConnection("after")
    await node_b.register(after, f"{label}-alice")
    # After a data loss a node forgets the membership and relearns it from heartbeats.
    await wait_for(lambda: node_a.stats()["members"] >= 1, timeout=10)
    report = await node_a.close_all(f"{label}-alice", confirm=True, timeout=10)
    await wait_for(lambda: after.close_code == 1000, timeout=10)
    assert report.complete and dict(report.nodes) == {node_b.node_id: 1}

    await node_a.revoke(f"{label}-mallory")
    assert await node_b.is_revoked(f"{label}-mallory")
    refused = RecordingConnection("refused")
    await node_b.register(refused, f"{label}-mallory")
    await wait_for(lambda: refused.close_code == CLOSE_REVOKED, timeout=10)


async def wait_recovered(nodes: list[SessionRegistry], identity: str) -> None:
    await wait_for(
        lambda: all(node.healthy and node.transport.identity not in ("", identity) for node in nodes),
        timeout=30,
    )


@pytest.mark.slow
async def test_every_node_follows_the_promoted_replica_when_the_master_is_killed(
    failover_group: SentinelGroup,
) -> None:
    group = failover_group
    async with (
        SessionRegistry(fast_url(group), node_id="a", heartbeat_interval=0.2) as node_a,
        SessionRegistry(fast_url(group), node_id="b", heartbeat_interval=0.2) as node_b,
    ):
        assert node_a.transport is not node_b.transport
        await check_closes_and_revokes_work(node_a, node_b, "before")
        kept = RecordingConnection("kept")
        await node_b.register(kept, "bob")
        identity = node_a.transport.identity

        old, new = await anyio.to_thread.run_sync(group.kill_master_and_wait_failover)
        assert new.port != old.port
        await wait_recovered([node_a, node_b], identity)

        # A new master may lack the newest writes: handled as a broker data loss, so
        # sockets from before are closed for their clients to come back and re-authorise.
        assert node_a.transport.identity == node_b.transport.identity
        await wait_for(lambda: kept.close_code == CLOSE_UNKNOWN_STATE, timeout=10)
        assert node_b.stats()["closed_unknown_state"] >= 1
        # Every node talks to the new master, for commands and for pub/sub.
        sequence = await node_a.transport.mark("probe", b"v", 30)
        assert await node_b.transport.read_markers(["probe"]) == [Marker(sequence, b"v")]
        assert redis.Redis(port=new.port).get("{sessionws}:sequence") is not None
        await check_closes_and_revokes_work(node_a, node_b, "after")
    await anyio.to_thread.run_sync(group.rejoin, old)


@pytest.mark.slow
async def test_a_failover_that_keeps_the_old_master_running_moves_every_node(
    failover_group: SentinelGroup,
) -> None:
    """``SENTINEL FAILOVER``: the old master is demoted, no connection drops; the
    transports notice through the sentinels and move."""
    group = failover_group
    async with (
        SessionRegistry(fast_url(group), node_id="a", heartbeat_interval=0.2) as node_a,
        SessionRegistry(fast_url(group), node_id="b", heartbeat_interval=0.2) as node_b,
    ):
        kept = RecordingConnection("kept")
        await node_b.register(kept, "bob")
        identity = node_a.transport.identity
        old = group.master()
        sentinel = redis.Redis(port=group.sentinels[0].port)
        assert sentinel.execute_command("SENTINEL", "FAILOVER", group.service)  # type: ignore[no-untyped-call]

        await wait_recovered([node_a, node_b], identity)
        assert group.master() is not old
        assert node_a.transport.identity == node_b.transport.identity
        await wait_for(lambda: kept.close_code == CLOSE_UNKNOWN_STATE, timeout=10)
        await check_closes_and_revokes_work(node_a, node_b, "switched")
        # The demoted master is a replica of the new one now.
        await anyio.to_thread.run_sync(group.wait_replicated)
        await anyio.to_thread.run_sync(group.wait_watched)
