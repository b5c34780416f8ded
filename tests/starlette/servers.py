"""Real servers for the Starlette tests: uvicorn in-process on a free loopback port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import uvicorn
from starlette.types import ASGIApp


@asynccontextmanager
async def uvicorn_server(app: ASGIApp, *, graceful_timeout: int = 2) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn (lifespan on) until the block ends; yield its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        ws="websockets-sansio",
        timeout_graceful_shutdown=graceful_timeout,
    )
    server = uvicorn.Server(config)
    with listener:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve, [listener])
            with anyio.fail_after(5):
                while not server.started:
                    await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True


def cookie_header(cookies: httpx.Cookies) -> dict[str, str]:
    """The ``Cookie`` header a browser would send with the websocket upgrade."""
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


def ws_url(base: str, path: str = "/ws") -> str:
    return base.replace("http://", "ws://") + path
