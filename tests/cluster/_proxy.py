"""A TCP proxy between one app node and its broker, to cut that node off.

Stopping a broker cuts every node off; a test that needs *one* node cut off while the
others and the broker carry on starts that node on its own proxy. ``cut()`` drops
every proxied connection and drops new ones as soon as they connect (to the node, the
broker is unreachable), ``restore()`` forwards again. The proxy runs its own event loop in a thread, so it
outlives the event loop of each test and can be driven from synchronous fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from tests._ports import free_port

__all__ = ("Cuttable", "TcpProxy")

_T = TypeVar("_T")
_CHUNK = 1 << 16


class Cuttable(Protocol):
    """What stands between one node and its broker: a :class:`TcpProxy`, or the Docker
    cluster's proxy service (``tests/cluster/proxy_service.py``) driven over HTTP."""

    def cut(self) -> None: ...

    def restore(self) -> None: ...


class TcpProxy:
    """Forward ``host:port`` (``127.0.0.1``, a free port by default) to
    ``upstream_host:upstream_port`` until cut."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = free_port() if port is None else port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy:{self.port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._open = True
        self._transports: set[asyncio.WriteTransport] = set()
        self._handlers = 0

    @property
    def address(self) -> str:
        """``host:port`` (for broker URLs)."""
        return f"{self.host}:{self.port}"

    @property
    def cut_off(self) -> bool:
        return not self._open

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def start(self) -> None:
        """Start the thread and listen."""
        self._thread.start()
        self._run(self._listen())

    def cut(self) -> None:
        """Drop every connection through the proxy; new ones are dropped at once."""
        self._run(self._cut())

    def restore(self) -> None:
        """Forward new connections again (idempotent)."""
        self._open = True

    def close(self) -> None:
        """Cut, stop listening, let the connections wind down, stop the thread."""
        if not self._thread.is_alive():
            return
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)

    async def _cut(self) -> None:
        # The proxy keeps listening and drops what connects: closing the listening
        # socket races with connections being accepted (Python 3.11's Server._attach
        # then fails an assert and leaks the accepted socket). Connections are
        # aborted, never cancelled, so asyncio's stream protocol logs nothing.
        self._open = False
        for transport in list(self._transports):
            transport.abort()

    async def _stop(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()
        await self._wait_idle()

    async def _wait_idle(self) -> None:
        for _ in range(200):
            if not self._handlers:
                return
            await asyncio.sleep(0.01)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._handlers += 1
        transports: list[asyncio.WriteTransport] = [client_writer.transport]
        self._transports.add(client_writer.transport)
        try:
            if not self._open:
                return
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            transports.append(upstream_writer.transport)
            self._transports.add(upstream_writer.transport)
            if self.cut_off:  # cut while connecting upstream
                return
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer)
            )
        finally:
            self._handlers -= 1
            for transport in transports:
                self._transports.discard(transport)
                transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(_CHUNK):
                writer.write(chunk)
                await writer.drain()
        # One direction ended: end the other one too, as a dropped connection would.
        writer.transport.abort()
