"""sessionws beside Socket.IO 4 + ``@socket.io/redis-adapter``: one key's cluster-wide close.

    .venv/bin/python -m bench.peers [--iterations 300] [--iterations-50 60] [--sockets 1,50]
        [--loops asyncio,uvloop] [--json bench/results/peers.json] [--doc docs/benchmarks.md]
    .venv/bin/python -m bench.peers --from-json bench/results/peers.json --doc docs/benchmarks.md

One Redis and one NATS server on loopback; on them, three node processes of each system:

* ``sessionws-redis`` and ``sessionws-nats``: ``tests/cluster/node.py`` (aiohttp through
  ``sessionws_aiohttp``), once per event loop of ``--loops`` (``uvloop`` needs
  ``sessionws[speed]``); each cluster has its own namespace.
* ``socketio-redis``: ``bench/socketio/server.js``, Socket.IO 4.8 with the Redis adapter
  8.3 on the same Redis (npm packages pinned in ``bench/socketio``, installed with
  ``npm ci`` on the first run).

Every system is driven by the same clients (``bench._peer_clients``: aiohttp on uvloop
when installed, one process per node index, as users' browsers do not share an event
loop). Each round logs a new session in at node 1, opens ``S`` sockets of it on each of
the three nodes, and asks node 1 to close every socket of the session (``close_all`` /
``io.in(session).disconnectSockets(true)``); measured from the node's call (its monotonic
clock, the clients' too) to the moment the **last** client is told (sessionws: its CLOSE
frame; Socket.IO: its disconnect packet or CLOSE frame, whichever comes first).

Floors, measured in the same rounds: a raw publish → three raw subscribers (redis-py,
nats-py, one process each); one websocket close (aiohttp's ``ws.close()`` → the client sees
CLOSE, no sessionws); for ``S`` = 50, the 150 sockets closed by their nodes at once without
any broker. Systems and floors take turns round by round (the order rotates), so that every
figure sees the same machine: on a shared machine, compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import nats

from bench._loops import run, uvloop_installed
from bench._profile import py_spy, summarize
from bench._socketio import SocketIONode, ensure_installed
from bench.cluster import Child, broker, floor_subscribers, publish_round, raw_publisher, summary
from tests.cluster._nodes import NodeProcess, get_json, start_nodes, stop_nodes

ROOT = Path(__file__).resolve().parents[1]
DOC_START = "<!-- bench.peers: generated, do not edit by hand -->"
DOC_END = "<!-- /bench.peers -->"
WARM_UP = 10


class BenchNode(NodeProcess):
    """A sessionws node with its own namespace and event loop; with ``code``, the node
    imports sessionws (and everything else) from that source tree first."""

    def __init__(
        self, name: str, broker_url: str, directory: Path, namespace: str, loop: str, code: Path | None = None
    ) -> None:
        super().__init__(name, broker_url, directory)
        self.code = code
        # No access log: a log line per request is CPU on the path of the close that the
        # peer (which logs nothing) does not spend.
        self.extra = ["--namespace", namespace, "--loop", loop, "--no-access-log"]

    def command(self) -> list[str]:
        command = [*super().command(), *self.extra]
        if self.code is None:
            return command
        start = (
            f"import runpy, sys; sys.path.insert(0, {str(self.code)!r}); "
            "runpy.run_module('tests.cluster.node', run_name='__main__', alter_sys=True)"
        )
        return [command[0], "-c", start, *command[3:]]  # in place of "-m tests.cluster.node"


@dataclass
class System:
    """Three nodes of one system, and what it measured."""

    name: str
    kind: str  # "sessionws" or "socketio"
    broker: str
    loop: str
    urls: list[str]
    traced: bool = False
    close_path: str = "/close"
    rounds: dict[int, list[dict[str, float]]] = field(default_factory=dict)


# ---------------------------------------------------------------------- clients
class Clients:
    """The clients of node index 1, 2 and 3, one process each (``bench._peer_clients``)."""

    def __init__(self, processes: list[Child]) -> None:
        self.processes = processes

    @classmethod
    async def start(cls) -> Clients:
        return cls([await Child.start("-m", "bench._peer_clients") for _ in range(3)])

    async def ask(self, index: int, command: str) -> list[str]:
        process = self.processes[index]
        process.write_line(command)
        answer = (await process.read_line()).split()
        if not answer or answer[0] != "ready":
            raise RuntimeError(f"the clients of node {index + 1} answered {answer!r} to {command!r}")
        return answer[1:]

    async def told(self, index: int) -> float:
        answer = (await self.processes[index].read_line()).split()
        if len(answer) != 2 or answer[0] != "closed":
            raise RuntimeError(f"the clients of node {index + 1} answered {answer!r}")
        return float(answer[1])

    async def close(self) -> None:
        for process in self.processes:
            await process.stop()


async def gather(*awaitables: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*awaitables))


# ---------------------------------------------------------------------- NATS floors
KV_BUCKET = "benchfloor"
KV_SUBJECT = f"$KV.{KV_BUCKET}.marker"


@contextlib.asynccontextmanager
async def kv_publishers(url: str) -> AsyncIterator[tuple[Callable[[], Awaitable[object]], ...]]:
    """The two ways a close can reach other nodes over NATS, raw (nats-py, no sessionws):

    * a JetStream KV put whose message the subscribers receive themselves (they listen on
      the bucket's subject): one broker step, the put *is* the delivery;
    * a KV put, its acknowledgement awaited (the sequence), then a core publish: two steps,
      what a close over NATS does today."""
    connection = await nats.connect(url)
    try:
        bucket = await connection.jetstream().create_key_value(bucket=KV_BUCKET, history=1)

        async def put() -> object:
            return await bucket.put("marker", b"x")

        async def put_then_publish() -> object:
            await bucket.put("other", b"x")
            await connection.publish("bench.floor", b"x")
            return None

        yield put, put_then_publish
    finally:
        await connection.drain()


# ---------------------------------------------------------------------- rounds
async def close_round(
    http: aiohttp.ClientSession, clients: Clients, system: System, per_node: int
) -> dict[str, float]:
    """Log in, open ``per_node`` sockets on each node, close them all from node 1."""
    first = system.urls[0]
    async with http.post(f"{first}/login", params={"user": "bench"}) as response:
        session = (await response.json())["session"]
        cookie = "; ".join(f"{name}={morsel.coded_value}" for name, morsel in response.cookies.items())
    credential = cookie if system.kind == "sessionws" else session
    await gather(
        *(
            clients.ask(index, f"open {system.kind} {url} {per_node} {credential}")
            for index, url in enumerate(system.urls)
        )
    )
    sent = time.monotonic()
    async with http.post(f"{first}{system.close_path}", params={"key": session}) as response:
        called_at = float((await response.json())["called_at"])
    returned = time.monotonic()
    told = await gather(*(clients.told(index) for index in range(3)))
    result = {
        "last": max(told) - called_at,
        "node1": told[0] - called_at,
        "remote": max(told[1:]) - called_at,
        "from_request": max(told) - sent,
        "http_returned": returned - sent,
    }
    if system.traced:
        result.update(await node_traces(http, system, called_at))
    return result


async def node_traces(http: aiohttp.ClientSession, system: System, called_at: float) -> dict[str, float]:
    """When each step of the close happened on nodes 1 and 2 (``--trace``), from the call."""
    steps: dict[str, float] = {}
    for index, url in enumerate(system.urls[:2]):
        async with http.get(f"{url}/bench/trace") as response:
            events = (await response.json())["events"]
        for name, at in events:
            step = f"trace: node {index + 1} {name}"
            if at >= called_at - 1e-4 and step not in steps:  # the first of each, this round
                steps[step] = at - called_at
    return steps


async def websocket_close_round(http: aiohttp.ClientSession, clients: Clients, node: str) -> float:
    """aiohttp server ``ws.close()`` → the client sees CLOSE (one socket, no sessionws)."""
    (token,) = await clients.ask(0, f"raw {node} 1")
    async with http.post(f"{node}/raw-close", params={"id": token}) as response:
        called_at = float((await response.json())["called_at"])
    return await clients.told(0) - called_at


async def raw_closes_round(
    http: aiohttp.ClientSession, clients: Clients, nodes: list[str], per_node: int
) -> float:
    """``per_node`` raw sockets on each node closed by their nodes at once (no broker)."""
    await gather(*(clients.ask(index, f"raw {node} {per_node}") for index, node in enumerate(nodes)))

    async def close_node(node: str) -> float:
        async with http.post(f"{node}/raw-close", params={"id": "all"}) as response:
            return float((await response.json())["called_at"])

    called: list[float] = await gather(*(close_node(node) for node in nodes))
    told: list[float] = await gather(*(clients.told(index) for index in range(3)))
    return max(told) - min(called)


# ---------------------------------------------------------------------- the run
async def measure(
    systems: list[System], redis_url: str, nats_url: str, options: argparse.Namespace
) -> dict[str, Any]:
    # The raw websockets of the floor live on the first sessionws cluster's nodes (aiohttp).
    floor_nodes = next(system for system in systems if system.kind == "sessionws").urls
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as http,
        contextlib.AsyncExitStack() as cleanup,
    ):
        redis_subscribers = await cleanup.enter_async_context(
            floor_subscribers("redis", redis_url, "bench.floor")
        )
        nats_subscribers = await cleanup.enter_async_context(
            floor_subscribers("nats", nats_url, "bench.floor")
        )
        redis_publish = await cleanup.enter_async_context(raw_publisher("redis", redis_url, "bench.floor"))
        nats_publish = await cleanup.enter_async_context(raw_publisher("nats", nats_url, "bench.floor"))
        kv_subscribers = await cleanup.enter_async_context(floor_subscribers("nats", nats_url, KV_SUBJECT))
        kv_put, kv_put_then_publish = await cleanup.enter_async_context(kv_publishers(nats_url))
        clients = await Clients.start()
        cleanup.push_async_callback(clients.close)
        floors: dict[str, list[float]] = {}
        for per_node in options.sockets:
            iterations = options.iterations if per_node == 1 else options.iterations_50
            steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("redis_publish", lambda: publish_round(redis_publish, redis_subscribers)),
                ("nats_publish", lambda: publish_round(nats_publish, nats_subscribers)),
                ("nats_kv_put_seen_by_subscribers", lambda: publish_round(kv_put, kv_subscribers)),
                ("nats_kv_put_then_publish", lambda: publish_round(kv_put_then_publish, nats_subscribers)),
            ]
            if per_node == 1:
                steps.append(
                    ("websocket_close", partial(websocket_close_round, http, clients, floor_nodes[0]))
                )
            else:
                steps.append(
                    (
                        f"raw_closes_{per_node}",
                        partial(raw_closes_round, http, clients, floor_nodes, per_node),
                    )
                )
            for system in systems:
                system.rounds[per_node] = []
                steps.append((system.name, partial(close_round, http, clients, system, per_node)))
            samples: dict[str, list[Any]] = {name: [] for name, _ in steps}
            for iteration in range(iterations + WARM_UP):
                turn = iteration % len(steps)  # the order rotates: no system always goes first
                for name, step in steps[turn:] + steps[:turn]:
                    sample = await step()
                    if iteration >= WARM_UP:
                        samples[name].append(sample)
            for system in systems:
                system.rounds[per_node] = samples.pop(system.name)
            for name, values in samples.items():
                key = name if per_node == 1 or name.startswith("raw_closes") else f"{name}_{per_node}"
                floors[key] = values
    return {name: summary(values) for name, values in floors.items()}


def system_result(system: System) -> dict[str, Any]:
    result: dict[str, Any] = {
        "kind": system.kind,
        "broker": system.broker,
        "loop": system.loop,
        "sockets": {},
    }
    for per_node, rounds in system.rounds.items():
        result["sockets"][str(per_node)] = {
            metric: summary(values)
            for metric in sorted({name for one in rounds for name in one})
            if (values := [one[metric] for one in rounds if metric in one])
        }
    return result


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each as a ratio of figures of this run."""
    floors, systems = results["floors"], results["systems"]
    floor_p50 = floors["redis_publish"]["p50_ms"] + floors["websocket_close"]["p50_ms"]
    peer = systems.get("socketio-redis")
    out: dict[str, Any] = {"floor_redis_publish_plus_websocket_close_p50_ms": floor_p50}
    for name, system in systems.items():
        if system["kind"] != "sessionws":
            continue
        mine: dict[str, Any] = {}
        for per_node, measured in system["sockets"].items():
            last = measured["last"]
            entry: dict[str, float] = {}
            if per_node == "1":
                entry["p50_to_floor"] = last["p50_ms"] / floor_p50
                entry["node1_p50_to_websocket_close_p50"] = (
                    measured["node1"]["p50_ms"] / floors["websocket_close"]["p50_ms"]
                )
            if peer is not None and per_node in peer["sockets"]:
                theirs = peer["sockets"][per_node]["last"]
                entry["p50_to_socketio_p50"] = last["p50_ms"] / theirs["p50_ms"]
                entry["p99_to_socketio_p50"] = last["p99_ms"] / theirs["p50_ms"]
            mine[per_node] = entry
        out[name] = mine
    return out


@contextlib.contextmanager
def running_systems(
    options: argparse.Namespace, redis_url: str, nats_url: str, directory: Path
) -> Iterator[list[System]]:
    sessionws_nodes: list[BenchNode] = []
    systems: list[System] = []
    socketio_nodes: list[SocketIONode] = []
    try:
        for broker_kind, url in (("redis", redis_url), ("nats", nats_url)):
            if broker_kind not in options.brokers:
                continue
            for loop in options.loops:
                name = f"sessionws-{broker_kind}" + ("" if loop == "asyncio" else f"-{loop}")
                nodes = [
                    BenchNode(f"{name}-{index + 1}", url, directory, namespace=name, loop=loop)
                    for index in range(3)
                ]
                if options.trace:
                    for node in nodes:
                        node.extra.append("--bench-trace")
                sessionws_nodes += nodes
                urls = [node.url for node in nodes]
                systems.append(System(name, "sessionws", broker_kind, loop, urls, options.trace))
                if options.local_first and loop == options.loops[0]:
                    # The same nodes, closing through /bench/close-local-first.
                    variant = System(
                        f"{name}-local-first", "sessionws", broker_kind, loop, urls, options.trace
                    )
                    variant.close_path = "/bench/close-local-first"
                    systems.append(variant)
        if options.experiment is not None:
            # The same clusters again, from another source tree: a change measured against
            # the current code in the same rounds.
            for broker_kind, url in (("redis", redis_url), ("nats", nats_url)):
                if broker_kind not in options.brokers:
                    continue
                loop = options.loops[0]
                name = f"sessionws-{broker_kind}-experiment"
                nodes = [
                    BenchNode(f"{name}-{index + 1}", url, directory, name, loop, code=options.experiment)
                    for index in range(3)
                ]
                sessionws_nodes += nodes
                systems.append(System(name, "sessionws", broker_kind, loop, [node.url for node in nodes]))
        if not options.no_socketio:
            node_binary = ensure_installed()
            socketio_nodes = [
                SocketIONode(node_binary, f"sio{index + 1}", redis_url, directory / f"sio{index + 1}.log")
                for index in range(3)
            ]
            for peer in socketio_nodes:
                peer.wait_ready()
            systems.append(
                System("socketio-redis", "socketio", "redis", "node", [peer.url for peer in socketio_nodes])
            )
        start_nodes(sessionws_nodes)
        time.sleep(1.0)  # membership settles (heartbeats)
        yield systems
    finally:
        stop_nodes(sessionws_nodes)
        for peer in socketio_nodes:
            peer.stop()


def run_all(options: argparse.Namespace) -> dict[str, Any]:
    with (
        broker("redis") as redis_url,
        broker("nats") as nats_url,
        tempfile.TemporaryDirectory(prefix="sessionws-peers-") as directory,
        running_systems(options, redis_url, nats_url, Path(directory)) as systems,
    ):
        profile: dict[str, Any] | None = None
        if options.profile:
            target = next(system for system in systems if system.kind == "sessionws")
            _, health = get_json(f"{target.urls[0]}/health")
            output = options.json.with_name(f"profile-{target.name}-node1.txt")
            output.parent.mkdir(parents=True, exist_ok=True)
            with py_spy(int(health["pid"]), output):
                floors = run(measure(systems, redis_url, nats_url, options))
            profile = {"system": target.name, "raw": str(output), **summarize(output)}
        else:
            floors = run(measure(systems, redis_url, nats_url, options))
    results: dict[str, Any] = {
        "run": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "iterations": {"1": options.iterations, "50": options.iterations_50},
            "clients_loop": "uvloop" if uvloop_installed() else "asyncio",
        },
        "floors": floors,
        "systems": {system.name: system_result(system) for system in systems},
    }
    results["ratios"] = ratios(results)
    if profile is not None:
        results["profile"] = profile
    return results


# ---------------------------------------------------------------------- output
def table(results: dict[str, Any]) -> str:
    floors, systems = results["floors"], results["systems"]
    rows = [
        "| what | sockets per node | p50 ms | p99 ms | node 1's own socket p50 | HTTP answer p50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def floor_row(label: str, key: str, sockets: str) -> None:
        if key in floors:
            p50, p99 = floors[key]["p50_ms"], floors[key]["p99_ms"]
            rows.append(f"| floor: {label} | {sockets} | {p50:.2f} | {p99:.2f} | | |")

    floor_row("Redis publish → 3 subscribers", "redis_publish", "")
    floor_row("NATS publish → 3 subscribers", "nats_publish", "")
    floor_row("NATS KV put → 3 subscribers of its subject (one step)", "nats_kv_put_seen_by_subscribers", "")
    floor_row("NATS KV put, its ack, then publish → 3 subscribers", "nats_kv_put_then_publish", "")
    floor_row("one websocket close", "websocket_close", "1")
    sizes = sorted({int(size) for system in systems.values() for size in system["sockets"]})
    for size in sizes:
        floor_row(f"{3 * size} websockets closed by their nodes at once", f"raw_closes_{size}", str(size))
        for name, system in systems.items():
            measured = system["sockets"].get(str(size))
            if measured is None:
                continue
            last, node1, answer = measured["last"], measured["node1"], measured["http_returned"]
            rows.append(
                f"| **{name}** | {size} | {last['p50_ms']:.2f} | {last['p99_ms']:.2f} | "
                f"{node1['p50_ms']:.2f} | {answer['p50_ms']:.2f} |"
            )
    return "\n".join(rows + target_table(results) + trace_table(results) + profile_table(results))


def target_table(results: dict[str, Any]) -> list[str]:
    """The issue's targets as ratios of this run; the floor's own ratio shows the least
    any implementation could reach on this machine."""
    ratio, floors, systems = results["ratios"], results["floors"], results["systems"]
    peer = systems.get("socketio-redis")
    rows = [
        "",
        "| ratio (same run) | p50 / Socket.IO p50, 1 per node | p99 / Socket.IO p50, 1 per node | "
        "p50 / Socket.IO p50, 50 per node | p50 / floor, 1 per node |",
        "|---|---:|---:|---:|---:|",
    ]

    def cell(value: float | None, bound: float) -> str:
        if value is None:
            return ""
        return f"{value:.2f}x" + (" ✓" if value <= bound else "")

    for name, entry in ratio.items():
        if not isinstance(entry, dict):
            continue
        one, fifty = entry.get("1", {}), entry.get("50", {})
        bound = 0.5 if "redis" in name else 0.999  # Redis: at most half; NATS: ahead
        peer_one, peer_fifty = one.get("p50_to_socketio_p50"), fifty.get("p50_to_socketio_p50")
        rows.append(
            f"| {name} | {cell(peer_one, bound)} | {cell(one.get('p99_to_socketio_p50'), 0.999)} | "
            f"{cell(peer_fifty, bound)} | {cell(one.get('p50_to_floor'), 1.5)} |"
        )
    if peer is not None and "websocket_close" in floors and "1" in peer["sockets"]:
        floor = ratio["floor_redis_publish_plus_websocket_close_p50_ms"]
        least = floor / peer["sockets"]["1"]["last"]["p50_ms"]
        many = ""
        if "raw_closes_50" in floors and "50" in peer["sockets"]:
            floor_50 = floors["redis_publish"]["p50_ms"] + floors["raw_closes_50"]["p50_ms"]
            many = f"{floor_50 / peer['sockets']['50']['last']['p50_ms']:.2f}x"
        rows.append(f"| *the floor itself* | {least:.2f}x | | {many} | 1.00x |")
    rows.append("| *target* | ≤ 0.5x (Redis), < 1x (NATS) | < 1x | ≤ 0.5x (Redis), < 1x (NATS) | ≤ 1.5x |")
    return rows


def profile_table(results: dict[str, Any]) -> list[str]:
    """With ``--profile``: where node 1's CPU went on each path of a close."""
    profile = results.get("profile")
    if profile is None:
        return []
    rows = ["", f"py-spy on {profile['system']} node 1: {profile['samples']} samples in all."]
    for label, path in profile["paths"].items():
        rows += [
            "",
            f"| {label}: {path['samples']} samples | inclusive | | exclusive |",
            "|---|---:|---|---:|",
        ]
        for (inner, share), (outer, own) in zip(path["inclusive"], path["exclusive"], strict=False):
            rows.append(f"| {inner} | {share:.0%} | {outer} | {own:.0%} |")
    return rows


def trace_table(results: dict[str, Any]) -> list[str]:
    """With ``--trace``: the median time of each step of a close, from node 1's call."""
    rows: list[str] = []
    for name, system in results["systems"].items():
        for size, measured in system["sockets"].items():
            rounds = measured["last"]["n"]
            steps = sorted(  # steps seen in most rounds (not a heartbeat that fell in one)
                (
                    (metric, values)
                    for metric, values in measured.items()
                    if metric.startswith("trace: ") and values["n"] >= rounds / 2
                ),
                key=lambda item: item[1]["p50_ms"],
            )
            if not steps:
                continue
            rows += [
                "",
                f"| {name}, {size}/node: step (first of its kind) | p50 ms after the call | n |",
                "|---|---:|---:|",
            ]
            rows += [f"| {metric[7:]} | {values['p50_ms']:.3f} | {values['n']} |" for metric, values in steps]
            told = measured["node1"]["p50_ms"], measured["last"]["p50_ms"]
            rows.append(f"| (client of node 1 told / last client told) | {told[0]:.3f} / {told[1]:.3f} | |")
    return rows


def write_doc(path: Path, results: dict[str, Any]) -> None:
    meta = results["run"]
    block = (
        f"{DOC_START}\nRun {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs, load average "
        f"{meta['load_average_at_end'][0]:.1f} at the end), Python {meta['python']}, "
        f"{meta['iterations']['1']} rounds with 1 socket per node, {meta['iterations']['50']} with 50.\n\n"
        f"{table(results)}\n{DOC_END}"
    )
    text = path.read_text() if path.exists() else ""
    if DOC_START in text and DOC_END in text:
        before, _, rest = text.partition(DOC_START)
        _, _, after = rest.partition(DOC_END)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=300, help="rounds with 1 socket per node")
    parser.add_argument("--iterations-50", type=int, default=60, help="rounds with more sockets per node")
    parser.add_argument("--sockets", default="1,50", help="sockets of the session on each node")
    parser.add_argument("--brokers", default="redis,nats", help="sessionws clusters to run")
    parser.add_argument(
        "--loops",
        default="asyncio,uvloop" if uvloop_installed() else "asyncio",
        help="event loops of the sessionws nodes (uvloop: pip install 'sessionws[speed]')",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="timestamp each step of a close on the sessionws nodes (diagnosis)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy on node 1 of the first sessionws system"
    )
    parser.add_argument(
        "--local-first",
        action="store_true",
        help="also measure close-all with node 1's own CLOSE frames written before the broker command",
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        default=None,
        metavar="SOURCE_TREE",
        help="also run each broker's cluster from this copy of the repository (a change to measure)",
    )
    parser.add_argument("--no-socketio", action="store_true", help="leave the peer out")
    parser.add_argument("--json", type=Path, default=Path("bench/results/peers.json"))
    parser.add_argument("--doc", type=Path, default=None, help="rewrite the figures in this page")
    parser.add_argument("--from-json", type=Path, default=None, help="no run: render this result file")
    options = parser.parse_args()
    if options.from_json is not None:
        stored: dict[str, Any] = json.loads(options.from_json.read_text())
        print(table(stored))
        if options.doc is not None:
            write_doc(options.doc, stored)
        return
    options.sockets = [int(value) for value in options.sockets.split(",")]
    options.brokers = options.brokers.split(",")
    options.loops = options.loops.split(",")
    results = run_all(options)
    print(table(results))
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(results, indent=2) + "\n")
    if options.doc is not None:
        write_doc(options.doc, results)


if __name__ == "__main__":
    main()
