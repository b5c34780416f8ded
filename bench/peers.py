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
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from bench._bench_nodes import BenchNode
from bench._loops import run, uvloop_installed
from bench._peer_report import ratios, system_result, table, write_doc
from bench._peer_rounds import (
    KV_SUBJECT,
    Clients,
    System,
    close_round,
    kv_publishers,
    raw_closes_round,
    websocket_close_round,
)
from bench._profile import py_spy, summarize
from bench._results import add_result_options, report, run_facts, stored_results
from bench._socketio import SocketIONode, ensure_installed
from bench.cluster import broker, floor_subscribers, publish_round, raw_publisher, summary
from tests.cluster._nodes import get_json, start_nodes, stop_nodes

__all__ = ("main",)

WARM_UP = 10


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
        clients = await Clients.start_peers()
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
        "run": run_facts(
            iterations={"1": options.iterations, "50": options.iterations_50},
            clients_loop="uvloop" if uvloop_installed() else "asyncio",
        ),
        "floors": floors,
        "systems": {system.name: system_result(system) for system in systems},
    }
    results["ratios"] = ratios(results)
    if profile is not None:
        results["profile"] = profile
    return results


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
    add_result_options(parser, "bench/results/peers.json")
    options = parser.parse_args()
    if stored_results(options, table, write_doc):
        return
    options.sockets = [int(value) for value in options.sockets.split(",")]
    options.brokers = options.brokers.split(",")
    options.loops = options.loops.split(",")
    results = run_all(options)
    report(options, results, table, write_doc)


if __name__ == "__main__":
    main()
