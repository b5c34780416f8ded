"""Fault scenarios of the registry over a real broker, shared by the Redis and NATS suites."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from sessionws import SessionRegistry, Transport
from tests._helpers import FAST, wait_for
from tests.core.helpers import RecordingConnection

__all__ = ("frozen_broker_loses_no_close", "two_nodes")

# Over a real broker: beats and closes a little slower than in memory.
_SETTINGS: dict[str, Any] = {**FAST, "heartbeat_interval": 0.2, "close_timeout": 1.0}


@asynccontextmanager
async def two_nodes(make: Callable[[], Transport]) -> AsyncIterator[tuple[SessionRegistry, SessionRegistry]]:
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(SessionRegistry(make(), namespace="faults", **_SETTINGS))
            for _ in range(2)
        ]
        await wait_for(lambda: all(node.stats()["members"] == 1 for node in nodes), timeout=20)
        yield nodes[0], nodes[1]


async def frozen_broker_loses_no_close(
    first: SessionRegistry, second: SessionRegistry, pause: Callable[[], None], resume: Callable[[], None]
) -> None:
    """Freeze the broker past the command timeout: the close is queued, and sent by the
    outbox once the broker answers again, with no reconnect at all."""
    remote = RecordingConnection()
    await second.register(remote, "session-a")
    reconnects = first.stats()["reconciles"]
    pause()
    try:
        report = await first.close_all("session-a")
        assert report.queued
        assert first.stats()["outbox"] == 1
        assert not first.healthy
    finally:
        resume()
    await wait_for(lambda: remote.close_code == 1000, timeout=20)
    await wait_for(lambda: first.stats()["outbox"] == 0 and first.healthy, timeout=20)
    assert first.stats()["outbox_sent"] == 1
    assert first.stats()["reconciles"] == reconnects  # sent without any reconnect
