"""Fixtures of the CLI suite: a Redis of our own and a cluster of registries on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests._nats_servers import NatsServer, nats_server_binary
from tests._redis_servers import RedisServer, running_redis
from tests.cli.helpers import CliCluster, start_cluster


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone ``redis-server`` on a free loopback port, for the whole session."""
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A ``nats-server -js`` on free loopback ports (skips when there is none)."""
    server = NatsServer(nats_server_binary()).start_blocking()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def cluster(redis_server: RedisServer) -> AsyncIterator[CliCluster]:
    """Three registries (node0..node2) on that Redis, in a namespace of their own."""
    async with start_cluster(redis_server.url) as nodes:
        yield nodes
