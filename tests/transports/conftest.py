"""Fixtures of the transport suite: brokers of our own, and the parametrised backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._nats_servers import NatsServer, nats_server_binary
from tests._redis_sentinel_servers import SentinelGroup, running_sentinel_group
from tests._redis_servers import RedisClusterServers, RedisServer, running_redis, running_redis_cluster
from tests.transports._backends import BACKENDS, Backend


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone ``redis-server`` on a free loopback port, for the whole session."""
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster on free loopback ports, for the whole session."""
    with running_redis_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    """A master, a replica and three sentinels (that never fail over) for the whole session."""
    with running_sentinel_group(ready_for_failover=False) as group:
        yield group


@pytest.fixture(scope="session")
def nats_server_for_contract() -> Iterator[NatsServer]:
    """A ``nats-server -js`` (2.11+) on free loopback ports, for the whole session."""
    server = NatsServer(nats_server_binary()).start_blocking()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each broker in turn; it is running again after the test, whatever the test did."""
    selected = BACKENDS[request.param](request)
    yield selected
    selected.cleanup()
