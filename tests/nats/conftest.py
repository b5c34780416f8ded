"""Fixtures for the NATS transport tests: real servers, fast reconnect settings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests._nats_servers import NatsServer, NatsServerBinary, nats_server_binary


@pytest.fixture
def nats_binary() -> NatsServerBinary:
    """A nats-server 2.11+ (the test is skipped, naming the fix, when there is none)."""
    return nats_server_binary()


@pytest.fixture
async def nats_server(nats_binary: NatsServerBinary) -> AsyncIterator[NatsServer]:
    """A fresh ``nats-server -js`` on free loopback ports, removed after the test."""
    server = NatsServer(nats_binary)
    await server.start()
    try:
        yield server
    finally:
        server.close()
