"""Cluster close-all latency and register throughput, beside floors measured in the same run.

    .venv/bin/python -m bench.cluster [--brokers redis,nats] [--iterations 200]
        [--sockets 1,50] [--json bench/results/cluster.json] [--doc docs/benchmarks.md]
    .venv/bin/python -m bench.cluster --from-json bench/results/cluster.json --doc docs/benchmarks.md

For each broker it starts the broker and three node processes (``tests/cluster/node.py``,
aiohttp) on loopback and measures, with real websocket clients in one process per node
(``bench._clients``, as the floor's subscribers have one process each):

* **close-all latency**: one session with ``S`` sockets on *each* node; node 1 calls
  ``close_all(session)``; the time from that call (the node's monotonic clock, which on
  one machine is this process's too) to the moment the *last* client saw its CLOSE frame.
* **the floor**, in the same run: raw publish→receipt on three subscribers of the
  broker's own client (redis-py, nats-py; the time until the last of the three has it),
  plus one websocket close (aiohttp server ``close()`` → the client sees CLOSE). Nothing
  that closes sockets on other nodes can be faster than one broker hop plus one close.
* **register throughput per node**: ``register`` of connections under *new* keys (each
  one subscribes a channel and reads its markers), ``concurrency`` at a time, on the three
  nodes at once; beside the raw floor of subscribing the same channels in batches of the
  same size and waiting for the broker's confirmation.

It prints a table, writes JSON, and with ``--doc`` rewrites the generated block of the
docs page. Run it by hand on an idle machine; it is never a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import redis.asyncio

from bench._results import add_result_options, replace_doc_block, report, stored_results
from tests._nats_servers import NatsServer, nats_server_binary
from tests._redis_servers import running_redis
from tests.cluster._nodes import NodeProcess, start_nodes, stop_nodes

ROOT = Path(__file__).resolve().parents[1]
FLOOR_CHANNEL = "bench.floor"
DOC_START = "<!-- bench.cluster: generated, do not edit by hand -->"
DOC_END = "<!-- /bench.cluster -->"
WARM_UP = 10


# ---------------------------------------------------------------------- statistics
def summary(samples: list[float]) -> dict[str, float]:
    """p50, p99, mean, min and max in milliseconds."""
    ordered = sorted(samples)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98] if len(ordered) > 1 else ordered[0]
    return {
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": p99 * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3,
        "min_ms": ordered[0] * 1e3,
        "max_ms": ordered[-1] * 1e3,
        "n": len(ordered),
    }


# ---------------------------------------------------------------------- brokers
@contextlib.contextmanager
def broker(kind: str) -> Iterator[str]:
    """A fresh broker of ``kind`` on loopback; its URL."""
    if kind == "redis":
        with running_redis() as redis_server:
            yield redis_server.url
    elif kind == "nats":
        nats_server = NatsServer(nats_server_binary())
        try:
            nats_server.start_blocking()
            yield nats_server.url
        finally:
            nats_server.close()
    else:
        raise ValueError(f"unknown broker {kind!r}: use redis or nats")


class Child:
    """A helper process of the benchmark, spoken to a line at a time over its pipes.

    Read with the event loop, not with threads: the harness's own CPU use competes
    with the processes it measures (two cores for all of them)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *arguments: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *arguments, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
        )
        return cls(process)

    def write_line(self, line: str) -> None:
        if self.process.stdin is None:
            raise RuntimeError("the helper's input is not piped")
        self.process.stdin.write(line.encode() + b"\n")

    async def read_line(self) -> str:
        if self.process.stdout is None:
            raise RuntimeError("the helper's output is not piped")
        return (await self.process.stdout.readline()).decode().strip()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


@contextlib.asynccontextmanager
async def floor_subscribers(kind: str, url: str, channel: str) -> AsyncIterator[list[Child]]:
    """Three raw subscribers of ``channel``, each in its own process (as the nodes are)."""
    subscribers = [await Child.start("-m", "bench._subscriber", kind, url, channel) for _ in range(3)]
    try:
        for subscriber in subscribers:
            if await subscriber.read_line() != "ready":
                raise RuntimeError("a floor subscriber did not start")
        yield subscribers
    finally:
        for subscriber in subscribers:
            await subscriber.stop()


@contextlib.asynccontextmanager
async def raw_publisher(kind: str, url: str, channel: str) -> AsyncIterator[Callable[[], Awaitable[object]]]:
    """A publish of one message on ``channel`` with the broker's own client."""
    if kind == "redis":
        client = redis.asyncio.Redis.from_url(url)
        try:
            yield lambda: client.publish(channel, b"x")
        finally:
            await client.aclose()
        return
    connection = await nats.connect(url)
    try:
        yield lambda: connection.publish(channel, b"x")
    finally:
        await connection.drain()


async def publish_round(publish: Callable[[], Awaitable[object]], subscribers: list[Child]) -> float:
    """Publish → the last of the three raw subscribers has it."""
    started = time.monotonic()
    await publish()
    arrivals = [float(await subscriber.read_line()) for subscriber in subscribers]
    return max(arrivals) - started


async def subscribe_floor(kind: str, url: str, total: int, batch: int) -> float:
    """Channels per second: subscribe ``batch`` new channels at a time, await the confirmation."""
    started = time.perf_counter()
    if kind == "redis":
        client = redis.asyncio.Redis.from_url(url)
        pubsub = client.pubsub()
        for first in range(0, total, batch):
            channels = [f"bench.sub.{first + index}" for index in range(min(batch, total - first))]
            await pubsub.subscribe(*channels)
            for _ in channels:  # one confirmation per channel, in order
                while await pubsub.get_message(timeout=5) is None:
                    pass
        seconds = time.perf_counter() - started
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
    else:
        connection = await nats.connect(url)
        for first in range(0, total, batch):
            for index in range(min(batch, total - first)):
                await connection.subscribe(f"bench.sub.{first + index}")
            await connection.flush()
        seconds = time.perf_counter() - started
        await connection.drain()
    return total / seconds


# ---------------------------------------------------------------------- websockets
class NodeClients:
    """The websocket clients of each node, one process per node (``bench._clients``)."""

    def __init__(self, processes: list[Child]) -> None:
        self.processes = processes

    @classmethod
    async def start(cls, nodes: list[str]) -> NodeClients:
        return cls([await Child.start("-m", "bench._clients", node) for node in nodes])

    async def ask(self, index: int, command: str) -> list[str]:
        """Send ``command`` to node ``index``'s clients; the words of the ``ready`` answer."""
        process = self.processes[index]
        process.write_line(command)
        answer = (await process.read_line()).split()
        if not answer or answer[0] != "ready":
            raise RuntimeError(f"the clients of node {index + 1} answered {answer!r} to {command!r}")
        return answer[1:]

    async def closed(self, index: int) -> float:
        """When the last socket of node ``index``'s newest batch saw its CLOSE."""
        answer = (await self.processes[index].read_line()).split()
        if len(answer) != 2 or answer[0] != "closed":
            raise RuntimeError(f"the clients of node {index + 1} answered {answer!r}")
        return float(answer[1])

    async def close(self) -> None:
        for process in self.processes:
            await process.stop()


async def websocket_close_round(http: aiohttp.ClientSession, clients: NodeClients, node: str) -> float:
    """aiohttp server ``ws.close()`` → the client sees CLOSE (one socket, no sessionws)."""
    (token,) = await clients.ask(0, "raw 1")
    async with http.post(f"{node}/raw-close", params={"id": token}) as response:
        called_at = float((await response.json())["called_at"])
    return await clients.closed(0) - called_at


async def raw_closes_floor(
    http: aiohttp.ClientSession, clients: NodeClients, nodes: list[str], per_node: int, iterations: int
) -> list[float]:
    """``per_node`` raw sockets on each node, all closed at once (no broker, no sessionws):
    from the first node's call to the last client's CLOSE. The machine's cost of closing
    that many websockets at once, which no cluster close of as many sockets can beat."""
    samples = []
    for _ in range(iterations + 5):
        await asyncio.gather(*(clients.ask(index, f"raw {per_node}") for index in range(len(nodes))))

        async def close_node(node: str) -> float:
            async with http.post(f"{node}/raw-close", params={"id": "all"}) as response:
                return float((await response.json())["called_at"])

        called = await asyncio.gather(*(close_node(node) for node in nodes))
        closed = await asyncio.gather(*(clients.closed(index) for index in range(len(nodes))))
        samples.append(max(closed) - min(called))
    return samples[5:]


async def close_all_round(
    http: aiohttp.ClientSession, clients: NodeClients, nodes: list[str], per_node: int, user: str
) -> tuple[float, float, float]:
    """``close_all(session)`` on node 1 → the last of ``3 x per_node`` clients sees CLOSE;
    also the last of node 1's own sockets (no broker involved) and of the other nodes'."""
    async with http.post(f"{nodes[0]}/login", params={"user": user}) as response:
        session = (await response.json())["session"]
        cookie = "; ".join(f"{name}={morsel.coded_value}" for name, morsel in response.cookies.items())
    await asyncio.gather(*(clients.ask(index, f"open {per_node} {cookie}") for index in range(len(nodes))))
    async with http.post(f"{nodes[0]}/close", params={"key": session}) as response:
        called_at = float((await response.json())["called_at"])
    closed = await asyncio.gather(*(clients.closed(index) for index in range(len(nodes))))
    return max(closed) - called_at, closed[0] - called_at, max(closed[1:]) - called_at


def _close_all_summary(rounds: list[tuple[float, float, float]]) -> dict[str, Any]:
    latency: dict[str, Any] = summary([every for every, _, _ in rounds])
    latency["node1_local"] = summary([local for _, local, _ in rounds])
    latency["nodes23_remote"] = summary([remote for _, _, remote in rounds])
    return latency


async def register_rates(
    http: aiohttp.ClientSession, nodes: list[str], total: int, batch: int
) -> list[float]:
    """Registrations per second on each node, all three registering at once."""

    async def one(node: str) -> float:
        params = {"n": str(total), "concurrency": str(batch)}
        async with http.post(f"{node}/bench/register", params=params) as response:
            return float((await response.json())["per_second"])

    return list(await asyncio.gather(*(one(node) for node in nodes)))


# ---------------------------------------------------------------------- one broker
async def measure_broker(
    kind: str,
    url: str,
    nodes: list[str],
    options: argparse.Namespace,
) -> dict[str, Any]:
    iterations: int = options.iterations
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http,
        contextlib.AsyncExitStack() as cleanup,
    ):
        subscribers = await cleanup.enter_async_context(floor_subscribers(kind, url, FLOOR_CHANNEL))
        clients = await NodeClients.start(nodes)
        cleanup.push_async_callback(clients.close)
        publish = await cleanup.enter_async_context(raw_publisher(kind, url, FLOOR_CHANNEL))
        # The floors and the one-socket close-all are measured round by round, in turn: on
        # a shared machine whose speed drifts, figures taken minutes apart would compare
        # the drift.
        broker_samples: list[float] = []
        ws_floor: list[float] = []
        single: list[tuple[float, float, float]] = []
        for iteration in range(iterations + WARM_UP):
            broker_sample = await publish_round(publish, subscribers)
            ws_sample = await websocket_close_round(http, clients, nodes[0])
            close_sample = await close_all_round(http, clients, nodes, 1, f"bench-{iteration}")
            if iteration >= WARM_UP:
                broker_samples.append(broker_sample)
                ws_floor.append(ws_sample)
                single.append(close_sample)
        floor = {
            "broker_publish_to_3_subscribers": summary(broker_samples),
            "websocket_close": summary(ws_floor),
        }
        floor["sum"] = {
            key: floor["broker_publish_to_3_subscribers"][key] + floor["websocket_close"][key]
            for key in ("p50_ms", "p99_ms")
        }
        close_all = {}
        for per_node in options.sockets:
            if per_node == 1:
                rounds = single
            else:
                rounds = [
                    await close_all_round(http, clients, nodes, per_node, f"bench-{per_node}-{iteration}")
                    for iteration in range(iterations + WARM_UP)
                ][WARM_UP:]
            latency = _close_all_summary(rounds)
            latency["ratio_p50"] = latency["p50_ms"] / floor["sum"]["p50_ms"]
            latency["ratio_p99"] = latency["p99_ms"] / floor["sum"]["p99_ms"]
            if per_node > 1:
                many = summary(await raw_closes_floor(http, clients, nodes, per_node, iterations))
                broker_p50 = floor["broker_publish_to_3_subscribers"]["p50_ms"]
                latency["raw_closes"] = many
                latency["floor_with_raw_closes_p50_ms"] = broker_p50 + many["p50_ms"]
                latency["ratio_p50_to_floor_with_raw_closes"] = (
                    latency["p50_ms"] / latency["floor_with_raw_closes_p50_ms"]
                )
            close_all[str(per_node)] = latency
        await register_rates(http, nodes, options.register // 4, options.batch)  # warm-up
        rates = await register_rates(http, nodes, options.register, options.batch)
        alone = (await register_rates(http, nodes[:1], options.register, options.batch))[0]
    subscribe = await subscribe_floor(kind, url, options.register, options.batch)
    register = {
        "per_node_all_three_at_once": rates,
        "one_node_alone": alone,
        "floor_raw_subscribe_per_second": subscribe,
        "ratio_one_node_to_floor": alone / subscribe,
        "n": options.register,
        "concurrency": options.batch,
    }
    return {"floor": floor, "close_all": close_all, "register": register}


def run_broker(kind: str, options: argparse.Namespace) -> dict[str, Any]:
    with broker(kind) as url, tempfile.TemporaryDirectory(prefix="sessionws-bench-") as directory:
        processes = [NodeProcess(f"node{index + 1}", url, Path(directory)) for index in range(3)]
        try:
            start_nodes(processes)
            time.sleep(1.0)  # membership settles (heartbeats)
            urls = [node.url for node in processes]
            return asyncio.run(measure_broker(kind, url, urls, options))
        finally:
            stop_nodes(processes)


# ---------------------------------------------------------------------- output
def table(results: dict[str, Any]) -> str:
    rows = [
        "| broker | measurement | p50 ms | p99 ms | x floor (p50 / p99) |",
        "|---|---|---:|---:|---|",
    ]
    for kind, result in results["brokers"].items():
        floor = result["floor"]
        broker_floor, ws_floor = floor["broker_publish_to_3_subscribers"], floor["websocket_close"]
        rows.append(f"| {kind} | floor: publish → 3 subscribers | {broker_floor['p50_ms']:.3f} | "
                    f"{broker_floor['p99_ms']:.3f} | |")  # fmt: skip
        rows.append(
            f"| {kind} | floor: one websocket close | {ws_floor['p50_ms']:.3f} | {ws_floor['p99_ms']:.3f} | |"
        )
        rows.append(
            f"| {kind} | **floor (sum)** | {floor['sum']['p50_ms']:.3f} | {floor['sum']['p99_ms']:.3f} | |"
        )
        for per_node, latency in result["close_all"].items():
            rows.append(
                f"| {kind} | close_all, {per_node} socket(s) on each of 3 nodes | {latency['p50_ms']:.3f} | "
                f"{latency['p99_ms']:.3f} | {latency['ratio_p50']:.2f}x / {latency['ratio_p99']:.2f}x |"
            )
            local, remote = latency["node1_local"], latency["nodes23_remote"]
            rows.append(
                f"| {kind} | … of which node 1's own sockets / nodes 2-3's (via the broker) | "
                f"{local['p50_ms']:.3f} / {remote['p50_ms']:.3f} | "
                f"{local['p99_ms']:.3f} / {remote['p99_ms']:.3f} | |"
            )
            if "raw_closes" in latency:
                many = latency["raw_closes"]
                rows.append(
                    f"| {kind} | floor: {3 * int(per_node)} raw websockets closed at once (no broker) | "
                    f"{many['p50_ms']:.3f} | {many['p99_ms']:.3f} | close_all is "
                    f"{latency['ratio_p50_to_floor_with_raw_closes']:.2f}x publish + these (p50) |"
                )
    rows += [
        "",
        "| broker | register, new keys | sockets/s | x floor (time per socket) |",
        "|---|---|---:|---|",
    ]
    for kind, result in results["brokers"].items():
        register = result["register"]
        per_node = ", ".join(f"{rate:,.0f}" for rate in register["per_node_all_three_at_once"])
        rows.append(f"| {kind} | per node, 3 nodes at once | {per_node} | |")
        rows.append(
            f"| {kind} | one node alone | {register['one_node_alone']:,.0f} | "
            f"{1 / register['ratio_one_node_to_floor']:.2f}x |"
        )
        subscribe = register["floor_raw_subscribe_per_second"]
        rows.append(f"| {kind} | floor: raw subscribe + confirm | {subscribe:,.0f} | |")
    return "\n".join(rows)


def write_doc(path: Path, results: dict[str, Any]) -> None:
    """Replace the generated block of ``path`` (appended when the page has none)."""
    meta = results["run"]
    block = (
        f"{DOC_START}\n"
        f"Run {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs), Python {meta['python']}, "
        f"{meta['iterations']} iterations per figure.\n\n{table(results)}\n{DOC_END}"
    )
    replace_doc_block(path, DOC_START, DOC_END, block)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--brokers", default="redis,nats")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--sockets", default="1,50", help="sockets of the session on each node")
    parser.add_argument("--register", type=int, default=5000, help="registrations per node")
    parser.add_argument("--batch", type=int, default=100, help="registrations in flight per node")
    add_result_options(parser, "bench/results/cluster.json")
    options = parser.parse_args()
    options.sockets = [int(value) for value in options.sockets.split(",")]
    if stored_results(options, table, write_doc):
        return
    results: dict[str, Any] = {
        "run": {
            "date": time.strftime("%Y-%m-%d"),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "iterations": options.iterations,
        },
        "brokers": {},
    }
    for kind in options.brokers.split(","):
        print(f"== {kind}", flush=True)
        results["brokers"][kind] = run_broker(kind, options)
    report(options, results, table, write_doc)


if __name__ == "__main__":
    main()
