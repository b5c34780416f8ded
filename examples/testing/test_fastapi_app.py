"""Testing a FastAPI app that uses sessionws: pytest-asyncio and sessionws's pytest plugin.

    pip install 'sessionws[starlette]' fastapi uvicorn httpx websockets pytest pytest-asyncio
    pytest examples/testing/test_fastapi_app.py

The app (``examples/fastapi_app.py``) runs under uvicorn on a free port with its registry
on ``memory://NAME``; the ``sessionws_cluster`` fixture puts more nodes on that hub, as
another server (or the admin CLI) of the cluster would be.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi_app import create_app  # your app's factory
from websockets.asyncio.client import ClientConnection, connect

from sessionws import CLOSE_UNKNOWN_STATE, MemoryHub
from sessionws.testing import MemoryCluster, RecordingConnection, wait_sent, wait_until

Cluster = Callable[..., AbstractAsyncContextManager[MemoryCluster]]


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on a free port of 127.0.0.1 until the block ends."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done())
        if task.done():
            task.result()  # uvicorn failed to start: its error
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"{host}:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def app_and_cluster(cluster: Cluster, nodes: int = 1) -> AsyncIterator[tuple[str, MemoryCluster]]:
    """The app on a hub of its own, and ``nodes`` more registries on the same hub."""
    name = f"app-{secrets.token_hex(4)}"
    async with (
        cluster(nodes, hub=MemoryHub.named(name)) as others,
        serve(create_app(f"memory://{name}", heartbeat_interval=0.25)) as address,
    ):
        yield address, others


async def open_socket(address: str, client: httpx.AsyncClient) -> tuple[ClientConnection, dict[str, Any]]:
    """A websocket with the session's cookie; the app's hello says it is registered."""
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    websocket = await connect(f"ws://{address}/ws", additional_headers={"Cookie": cookie})
    return websocket, json.loads(await websocket.recv())


async def close_code(websocket: ClientConnection) -> int | None:
    """The code of the server's close frame (messages before it are skipped)."""
    async with asyncio.timeout(10):
        await websocket.wait_closed()
    return websocket.close_code


@pytest.mark.asyncio
async def test_logout_closes_the_sessions_socket(sessionws_cluster: Cluster) -> None:
    async with (
        app_and_cluster(sessionws_cluster) as (address, _),
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        await client.post("/login", params={"user": "alice"})
        websocket, hello = await open_socket(address, client)
        assert hello["user"] == "alice"
        await client.post("/logout")
        assert await close_code(websocket) == 1000


@pytest.mark.asyncio
async def test_another_node_closes_every_socket_of_a_user(sessionws_cluster: Cluster) -> None:
    async with (
        app_and_cluster(sessionws_cluster) as (address, cluster),
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        await client.post("/login", params={"user": "bob"})
        websocket, _ = await open_socket(address, client)
        # The other node knows the app's node (heartbeats), so a confirmed close waits for it.
        await wait_until(lambda: len(cluster[0].live_nodes()) == 1)
        report = await cluster[0].close_all("user:bob", code=4000, reason="password changed", confirm=True)
        assert report.complete and report.total == 1
        assert await close_code(websocket) == 4000


@pytest.mark.asyncio
async def test_the_apps_sends_reach_a_socket_on_another_node(
    sessionws_cluster: Cluster, sessionws_connection: Callable[..., RecordingConnection]
) -> None:
    async with (
        app_and_cluster(sessionws_cluster) as (address, cluster),
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        session_ws_id = (await client.post("/login", params={"user": "carol"})).json()["session_ws_id"]
        elsewhere = sessionws_connection("a tab on another node")
        await cluster[0].register(elsewhere, session_ws_id)
        await client.post("/notify", params={"text": "hello"})
        await wait_sent(elsewhere, "hello")


@pytest.mark.asyncio
async def test_a_broker_that_lost_its_data_makes_clients_reconnect(sessionws_cluster: Cluster) -> None:
    async with (
        app_and_cluster(sessionws_cluster) as (address, cluster),
        httpx.AsyncClient(base_url=f"http://{address}") as client,
    ):
        await client.post("/login", params={"user": "dave"})
        websocket, _ = await open_socket(address, client)
        cluster.hub.lose_data()  # a broker restarted without its data: nobody knows what was closed
        assert await close_code(websocket) == CLOSE_UNKNOWN_STATE
