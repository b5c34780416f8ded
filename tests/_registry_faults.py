"""Fault scenarios of the registry over a real broker, shared by the Redis and NATS suites."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from sessionws import SessionRegistry, Transport
from tests.core.helpers import RecordingConnection

__all__ = ("frozen_broker_loses_no_close", "two_nodes", "wait_until")

_SETTINGS: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "linger": 0.05,
    "close_timeout": 1.0,
    "confirm_timeout": 1.0,
}


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)


@asynccontextmanager
async def two_nodes(make: Callable[[], Transport]) -> AsyncIterator[tuple[SessionRegistry, SessionRegistry]]:
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(SessionRegistry(make(), namespace="faults", **_SETTINGS))
            for _ in range(2)
        ]
        await wait_until(lambda: all(node.stats()["members"] == 1 for node in nodes))
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
    await wait_until(lambda: remote.close_code == 1000)
    await wait_until(lambda: first.stats()["outbox"] == 0 and first.healthy)
    assert first.stats()["outbox_sent"] == 1
    assert first.stats()["reconciles"] == reconnects  # sent without any reconnect
