"""Revoke storm: every session of three nodes revoked from one node, beside a bare broker floor.

    .venv/bin/python -m bench.revoke_storm [--sessions 10000] [--in-flight 1,100] [--redis]
        [--json bench/results/revoke_storm.json]

Three ``SessionRegistry`` nodes in this process share one broker: an in-process
``MemoryHub`` (always) and, with ``--redis``, a ``redis-server`` the benchmark starts on a
free loopback port (a ``RedisTransport`` per node, from the URL). Each of ``sessions``
sessions has one socket on each node (30,000 for 10,000 sessions); a socket records when
its ``close()`` was called. Node 1 then calls ``revoke(session)`` for every session as fast
as it can, one at a time and then with ``N`` revokes in flight (``--in-flight``), on fresh
nodes and sessions each time. Measured:

* **total**: from the first revoke call to the moment the *last* of the sockets saw
  ``close()``; **revokes/s** is ``sessions / total``;
* **per revoke**: from its call to the last of its three sockets closing (p50, p99).
  The three nodes share this process's event loop: with many revokes in flight this is
  mostly queueing behind the others (the floor's too), and the total is what to compare.

**The floor**, measured in the same run with the same concurrency: the same number of
publish → receipt hops on the bare broker, without sessionws. One message per session
on a channel of its own, to which three receivers are subscribed (three
``MemoryTransport``\\s on a fresh hub, or three redis-py pub/sub connections); "closed"
is the moment the last of the three received it. Any cluster-wide revoke needs at least
this one broker hop per session (sessionws also writes the revoke marker in the same
step, queues each close off the broker listener and runs it in a task).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio

from sessionws import CLOSE_REVOKED, MemoryHub, MemoryTransport, SessionRegistry, Transport
from tests._redis_servers import running_redis

PAYLOAD = b"x" * 96  # about the size of a revoke command on the wire
REGISTER_IN_FLIGHT = 600  # while setting up, over the three nodes
TIMEOUT = 120.0
Floor = Callable[[int, int], Awaitable[dict[str, Any]]]


class Arrivals:
    """When each socket (slot ``session * 3 + node``) saw its close, or its message arrived."""

    def __init__(self, sessions: int) -> None:
        self.times = [0.0] * (3 * sessions)
        self.left = 3 * sessions
        self.codes: set[int] = set()
        self.done = anyio.Event()

    def record(self, slot: int) -> None:
        if not self.times[slot]:
            self.times[slot] = time.perf_counter()
            self.left -= 1
            if not self.left:
                self.done.set()


class Connection:
    __slots__ = ("arrivals", "slot")

    def __init__(self, arrivals: Arrivals, slot: int) -> None:
        self.arrivals, self.slot = arrivals, slot

    async def close(self, code: int, reason: str) -> None:
        self.arrivals.codes.add(code)
        self.arrivals.record(self.slot)

    async def send(self, data: str | bytes) -> None: ...


class Receiver:
    """A bare ``MemoryTransport``'s handler: records each message's arrival."""

    def __init__(self, arrivals: Arrivals, node: int, slots: dict[str, int]) -> None:
        self.arrivals, self.node, self.slots = arrivals, node, slots

    def message_received(self, channel: str, payload: bytes) -> None:
        self.arrivals.record(self.slots[channel] * 3 + self.node)

    def connection_lost(self) -> None: ...

    def connection_restored(self) -> None: ...


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98] if len(ordered) > 1 else ordered[0]
    return {"p50_ms": statistics.median(ordered) * 1e3, "p99_ms": p99 * 1e3, "max_ms": ordered[-1] * 1e3}


async def in_flight(count: int, items: int, job: Callable[[int], Awaitable[object]]) -> None:
    """``job(index)`` for every index, ``count`` at a time."""
    indexes = iter(range(items))

    async def worker() -> None:
        for index in indexes:  # shared: each index goes to one worker
            await job(index)

    async with anyio.create_task_group() as tasks:
        for _ in range(count):
            tasks.start_soon(worker)


async def storm(fire: Callable[[int], Awaitable[object]], arrivals: Arrivals, count: int) -> dict[str, Any]:
    """``fire(session)`` for every session, ``count`` in flight; wait for every arrival."""
    sessions = len(arrivals.times) // 3
    started = [0.0] * sessions

    async def job(index: int) -> None:
        started[index] = time.perf_counter()
        await fire(index)

    begin = time.perf_counter()
    await in_flight(count, sessions, job)
    with anyio.fail_after(TIMEOUT):
        await arrivals.done.wait()
    total = max(arrivals.times) - begin
    times = arrivals.times
    latencies = [max(times[3 * index : 3 * index + 3]) - started[index] for index in range(sessions)]
    return {"total_s": total, "per_second": sessions / total, **summary(latencies)}


async def revoke_run(
    brokers: Callable[[], list[Transport | str]], sessions: int, count: int
) -> dict[str, Any]:
    """Three fresh nodes, a socket of every session on each; node 1 revokes them all."""
    arrivals = Arrivals(sessions)
    keys = [f"storm-{count}-{index}" for index in range(sessions)]
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(SessionRegistry(broker, node_id=f"node{number}"))
            for number, broker in enumerate(brokers(), 1)
        ]

        async def register(slot: int) -> None:
            await nodes[slot % 3].register(Connection(arrivals, slot), keys[slot // 3])

        await in_flight(REGISTER_IN_FLIGHT, 3 * sessions, register)
        result = await storm(lambda index: nodes[0].revoke(keys[index]), arrivals, count)
        await anyio.sleep(0.05)  # the drain tasks unregister the closed handles
        result["sockets_left"] = sum(node.stats()["sockets"] for node in nodes)
        result["codes"] = sorted(arrivals.codes)
    return result


async def memory_floor(sessions: int, count: int) -> dict[str, Any]:
    arrivals = Arrivals(sessions)
    channels = [f"floor.{count}.{index}" for index in range(sessions)]
    slots = {channel: index for index, channel in enumerate(channels)}
    hub = MemoryHub()
    transports = [MemoryTransport(hub) for _ in range(3)]
    async with AsyncExitStack() as stack:
        for node, transport in enumerate(transports):
            await stack.enter_async_context(transport.open(Receiver(arrivals, node, slots)))
            await transport.subscribe(channels)
        return await storm(lambda index: transports[0].publish(channels[index], PAYLOAD), arrivals, count)


async def redis_floor(url: str, sessions: int, count: int) -> dict[str, Any]:
    arrivals = Arrivals(sessions)
    channels = [f"floor.{count}.{index}" for index in range(sessions)]
    slots = {channel.encode(): index for index, channel in enumerate(channels)}
    ready = [anyio.Event() for _ in range(3)]
    async with AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(redis.asyncio.Redis.from_url(url))
        pubsubs = [
            await stack.enter_async_context(redis.asyncio.Redis.from_url(url).pubsub()) for _ in range(3)
        ]

        async def read(node: int) -> None:
            confirmed = 0
            async for message in pubsubs[node].listen():
                if message["type"] == "message":
                    arrivals.record(slots[message["channel"]] * 3 + node)
                elif message["type"] == "subscribe" and (confirmed := confirmed + 1) == sessions:
                    ready[node].set()

        for pubsub in pubsubs:  # before listen(), which returns at once while nothing is subscribed
            for first in range(0, sessions, 1000):
                await pubsub.subscribe(*channels[first : first + 1000])
        async with anyio.create_task_group() as tasks:
            for node in range(3):
                tasks.start_soon(read, node)
            with anyio.fail_after(TIMEOUT):
                for event in ready:
                    await event.wait()
            result = await storm(lambda index: publisher.publish(channels[index], PAYLOAD), arrivals, count)
            tasks.cancel_scope.cancel()
    return result


def memory_nodes() -> list[Transport | str]:
    """Three nodes' transports on a fresh hub."""
    hub = MemoryHub()
    return [MemoryTransport(hub) for _ in range(3)]


async def measure(sessions: int, counts: list[int], with_redis: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        setups: dict[str, tuple[Callable[[], list[Transport | str]], Floor]] = {
            "memory": (memory_nodes, memory_floor)
        }
        if with_redis:
            url = stack.enter_context(running_redis()).url
            setups["redis"] = (lambda: [url] * 3, functools.partial(redis_floor, url))
        for broker, (nodes, floor) in setups.items():
            for count in counts:
                floor_result = await floor(sessions, count)
                revoke = await revoke_run(nodes, sessions, count)
                results.setdefault(broker, {})[str(count)] = {
                    "floor": floor_result,
                    "revoke": revoke,
                    "ratio_total": revoke["total_s"] / floor_result["total_s"],
                    "ratio_p50": revoke["p50_ms"] / floor_result["p50_ms"],
                    "ratio_p99": revoke["p99_ms"] / floor_result["p99_ms"],
                }
    return results


def table(results: dict[str, Any]) -> str:
    sessions = results["run"]["sessions"]
    rows = [
        f"| broker | in flight | {sessions:,} sessions x 3 sockets | total s | revokes/s | p50 ms | p99 ms "
        "| x floor (total / p50 / p99) |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for broker, by_count in results["brokers"].items():
        for count, result in by_count.items():
            for what, label in (("floor", "floor: publish → 3 receivers"), ("revoke", "revoke from node 1")):
                run = result[what]
                ratios = (result["ratio_total"], result["ratio_p50"], result["ratio_p99"])
                ratio = " / ".join(f"{value:.2f}x" for value in ratios) if what == "revoke" else ""
                rows.append(
                    f"| {broker} | {count} | {label} | {run['total_s']:.3f} | {run['per_second']:,.0f} | "
                    f"{run['p50_ms']:.3f} | {run['p99_ms']:.3f} | {ratio} |"
                )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--in-flight", default="1,100", help="revokes in flight, comma-separated")
    parser.add_argument("--redis", action="store_true", help="also against a redis-server started here")
    parser.add_argument("--json", type=Path, default=Path("bench/results/revoke_storm.json"))
    args = parser.parse_args()
    counts = [int(value) for value in args.in_flight.split(",")]
    run = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "cpus": os.cpu_count()}
    run |= {"machine": platform.machine(), "sessions": args.sessions}
    results = {"run": run, "brokers": anyio.run(measure, args.sessions, counts, args.redis)}
    print(table(results))
    for broker, by_count in results["brokers"].items():
        for count, result in by_count.items():
            revoke = result["revoke"]
            if revoke["sockets_left"] or revoke["codes"] != [CLOSE_REVOKED]:
                print(f"PROBLEM ({broker}, {count} in flight): {revoke['sockets_left']} sockets left, "
                      f"close codes {revoke['codes']}")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
