"""What each verb of rooms, presence and direct messages costs over Redis: broker commands
and latency, beside a round-trip floor measured in the same run.

    .venv/bin/python -m bench.verbs [--repeats 300] [--json bench/results/verbs.json]

Three ``SessionRegistry`` nodes in this process share a ``redis-server`` the benchmark
starts on a free loopback port. Node 2 holds the sockets the verbs act on; node 1 calls
the verb and the call is timed from its start to its return (for ``send_to`` and
``close_handle`` that includes the holding node's answer; for ``members`` and confirmed
``send_all`` every node's). **Commands** is how many commands Redis processed per call
(``INFO stats``, heartbeats turned down so they do not count): the round trips a verb
costs, plus the replies it collects.

**The floor**: one ``PING`` round trip from redis-py, timed the same way, interleaved
with the verbs round by round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio

from sessionws import Handle, SessionRegistry
from tests._redis_servers import running_redis


class _Socket:
    async def send(self, data: str | bytes) -> None:
        return None

    async def close(self, code: int, reason: str) -> None:
        return None


async def _processed(client: redis.asyncio.Redis) -> int:
    info = await client.info("stats")
    return int(info["total_commands_processed"])


async def measure(repeats: int) -> dict[str, Any]:
    with running_redis() as server:
        client = redis.asyncio.Redis.from_url(server.url)
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    SessionRegistry(
                        server.url, namespace="verbs", node_id=f"n{index}", heartbeat_interval=30.0
                    )
                )
                for index in range(3)
            ]
            for _ in range(1000):  # the nodes answer each other's hello at once
                if all(len(node.live_nodes()) == 2 for node in nodes):
                    break
                await anyio.sleep(0.01)
            else:
                raise RuntimeError("the three nodes did not see each other within 10 s")
            caller, holder = nodes[0], nodes[1]
            handles: list[Handle] = [
                await holder.register(_Socket(), f"s{index}", data={"n": index}) for index in range(20)
            ]
            target = handles[0]
            counter = iter(range(10**9))

            async def add_keys() -> None:
                await holder.add_keys(target, f"room-{next(counter)}")

            async def remove_keys() -> None:
                room = f"room-{next(counter)}"
                await holder.add_keys(target, room)
                await holder.remove_keys(target, room)

            verbs: dict[str, Callable[[], Awaitable[object]]] = {
                "ping (floor)": client.ping,
                "add_keys (new key)": add_keys,
                "add_keys + remove_keys": remove_keys,
                "set_data": lambda: holder.set_data(target, {"n": 1}),
                "send_all": lambda: caller.send_all("s1", "x"),
                "send_all confirm": lambda: caller.send_all("s1", "x", confirm=True),
                "broadcast": lambda: caller.broadcast("x"),
                "send_to": lambda: caller.send_to(target.id, "x"),
                "close_handle (not found)": lambda: caller.close_handle(f"{holder.node_id}.999999"),
                "members": lambda: caller.members("s2"),
                "count": lambda: caller.count("s2"),
            }
            samples: dict[str, list[float]] = {name: [] for name in verbs}
            commands: dict[str, list[int]] = {name: [] for name in verbs}
            for _ in range(repeats):
                for name, verb in verbs.items():
                    before = await _processed(client)
                    start = time.perf_counter()
                    await verb()
                    samples[name].append(time.perf_counter() - start)
                    await anyio.sleep(0.002)  # let replies and deliveries land
                    # INFO itself is one command.
                    commands[name].append(await _processed(client) - before - 1)
        await client.aclose()
    floor = statistics.median(samples["ping (floor)"])
    results = {}
    for name in verbs:
        ordered = sorted(samples[name])
        p50 = statistics.median(ordered)
        results[name] = {
            "p50_ms": round(p50 * 1000, 3),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
            "x_floor": round(p50 / floor, 2),
            "redis_commands": statistics.median(commands[name]),
        }
    return {"repeats": repeats, "floor_ms": round(floor * 1000, 3), "verbs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    result = anyio.run(measure, arguments.repeats)
    print(f"floor (PING round trip) p50 {result['floor_ms']} ms")
    print(f"{'verb':28} {'p50 ms':>8} {'p99 ms':>8} {'x floor':>8} {'commands':>9}")
    for name, row in result["verbs"].items():
        print(f"{name:28} {row['p50_ms']:8} {row['p99_ms']:8} {row['x_floor']:8} {row['redis_commands']:9}")
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
