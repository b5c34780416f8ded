"""Delivery workers: one connection's queue at a time, parked between connections."""

from __future__ import annotations

import anyio
import pytest

from sessionws import Event, SessionRegistry
from sessionws._delivery import MAX_IDLE_WORKERS, Delivery
from sessionws._handles import Handle, KeyState
from tests._helpers import wait_for
from tests.core.helpers import RecordingConnection

pytestmark = pytest.mark.anyio


async def test_workers_park_between_connections_and_are_reused() -> None:
    async with SessionRegistry("memory://") as registry:
        delivery = registry._delivery
        assert delivery.idle_workers == 0
        first = RecordingConnection("first")
        await registry.register(first, "a")
        await registry.close_all("a")
        await wait_for(lambda: first.closed.is_set() and delivery.idle_workers == 1)
        # The next connection with work takes the parked worker (were one started, two
        # would be parked in the end).
        second = RecordingConnection("second")
        handle = await registry.register(second, "b")
        await registry.send_all("b", "one")
        await registry.send_all("b", "two")
        await registry.close_all("b")
        await wait_for(lambda: second.closed.is_set() and delivery.idle_workers == 1)
        assert second.frames == [("send", "one"), ("send", "two"), ("close", 1000, "")]
        assert handle.closed


async def test_at_most_so_many_workers_park_after_a_burst() -> None:
    async with SessionRegistry("memory://") as registry:
        connections = [RecordingConnection(f"c{index}") for index in range(MAX_IDLE_WORKERS + 8)]
        for connection in connections:
            await registry.register(connection, "burst")
        await registry.close_all("burst")
        await wait_for(lambda: all(connection.closed.is_set() for connection in connections))
        await wait_for(lambda: registry._delivery.idle_workers == MAX_IDLE_WORKERS)
        await anyio.sleep(0.05)
        assert registry._delivery.idle_workers == MAX_IDLE_WORKERS


async def test_a_hung_close_holds_one_worker_and_no_other_connection() -> None:
    async with SessionRegistry("memory://", close_timeout=5.0) as registry:
        stuck = RecordingConnection("stuck", hang_on_close=True)
        await registry.register(stuck, "stuck")
        await registry.close_all("stuck")
        await anyio.sleep(0.01)
        for round_ in range(3):  # parked workers are woken, and others start, past the stuck one
            quick = RecordingConnection(f"quick{round_}")
            await registry.register(quick, "quick")
            await registry.close_all("quick")
            await wait_for(quick.closed.is_set, timeout=1.0)


async def test_a_worker_woken_then_cancelled_releases_its_connection() -> None:
    closed: list[Handle] = []

    async def forget(handle: Handle) -> None:
        closed.append(handle)

    delivery = Delivery(
        queue_size=10,
        close_timeout=1.0,
        send_timeout=1.0,
        forget=forget,
        emit=lambda *args, **detail: None,
        stats={"closed": 0},
    )
    state = KeyState("k", "h", "c")
    first, second = (Handle(number, RecordingConnection(), state) for number in (1, 2))
    async with anyio.create_task_group() as tasks:
        delivery.tasks = tasks
        delivery.close(first, 1000, "")
        await wait_for(lambda: delivery.idle_workers == 1)
        tasks.cancel_scope.cancel()  # the parked worker is cancelled ...
        delivery.close(second, 1000, "")  # ... as it is given a connection
    assert closed == [first]
    # Its close is still queued, and the connection is not left marked as being
    # drained: the next start drains it.
    assert second.queued == 1
    async with anyio.create_task_group() as tasks:
        delivery.tasks = tasks
        delivery._start(second)
        await wait_for(lambda: closed == [first, second])
        tasks.cancel_scope.cancel()


class _SlowToClose(RecordingConnection):
    async def close(self, code: int, reason: str) -> None:
        await anyio.sleep(0.2)
        await super().close(code, reason)


async def test_the_closed_event_says_how_long_the_close_took_from_the_verb() -> None:
    """From the verb to the socket closed and unregistered: the client's own close counts."""
    events: list[Event] = []
    async with SessionRegistry("memory://", on_event=events.append) as registry:
        slow = _SlowToClose("slow")
        await registry.register(slow, "a")
        await registry.close_all("a", code=4000)
        await wait_for(lambda: any(event.name == "closed" for event in events))
    (closed,) = [event for event in events if event.name == "closed"]
    assert closed.detail["code"] == 4000
    seconds = closed.detail["seconds"]
    assert isinstance(seconds, float)
    assert seconds >= 0.2  # at least the client's own close (no upper bound: the machine is shared)
