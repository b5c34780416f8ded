"""The rounds of ``bench.peers`` (and ``bench.cluster_size``): the systems, their clients,
one close of a session's sockets, and the floors measured beside it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nats

from bench.cluster import Child, NodeClients

__all__ = (
    "KV_SUBJECT",
    "Clients",
    "System",
    "close_round",
    "gather",
    "kv_publishers",
    "raw_closes_round",
    "websocket_close_round",
)


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
class Clients(NodeClients):
    """The clients of node index 1, 2 and 3, one process each (``bench._peer_clients``:
    sessionws's and Socket.IO's sockets)."""

    @classmethod
    async def start_peers(cls) -> Clients:
        return cls([await Child.start("-m", "bench._peer_clients") for _ in range(3)])


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
    told = await gather(*(clients.closed(index) for index in range(3)))
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
    return await clients.closed(0) - called_at


async def raw_closes_round(
    http: aiohttp.ClientSession, clients: Clients, nodes: list[str], per_node: int
) -> float:
    """``per_node`` raw sockets on each node closed by their nodes at once (no broker)."""
    await gather(*(clients.ask(index, f"raw {node} {per_node}") for index, node in enumerate(nodes)))

    async def close_node(node: str) -> float:
        async with http.post(f"{node}/raw-close", params={"id": "all"}) as response:
            return float((await response.json())["called_at"])

    called: list[float] = await gather(*(close_node(node) for node in nodes))
    told: list[float] = await gather(*(clients.closed(index) for index in range(3)))
    return max(told) - min(called)
