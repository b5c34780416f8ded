"""Test doubles for the core: connections that record what they were sent, and clusters
of registries sharing one in-process hub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from sessionws import MemoryHub, MemoryTransport, SessionRegistry
from tests._helpers import FAST, wait_for


class RecordingConnection:
    """A websocket stand-in that records frames in order (real sockets come with adapters)."""

    def __init__(self, name: str = "", *, hang_on_close: bool = False, fail_on_close: bool = False) -> None:
        self.name = name
        self.frames: list[tuple[Any, ...]] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = anyio.Event()
        self.hang_on_close = hang_on_close
        self.fail_on_close = fail_on_close

    def __repr__(self) -> str:
        return f"<RecordingConnection {self.name} close={self.close_code}>"

    async def send(self, data: str | bytes) -> None:
        if self.close_code is not None:
            raise ConnectionResetError("the websocket is closed")
        await anyio.lowlevel.checkpoint()
        self.frames.append(("send", data))

    async def close(self, code: int, reason: str) -> None:
        if self.fail_on_close:
            raise ConnectionResetError("the client vanished mid-close")
        if self.hang_on_close:
            await anyio.sleep_forever()
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self.frames.append(("close", code, reason))
            self.closed.set()

    @property
    def sent(self) -> list[str | bytes]:
        return [frame[1] for frame in self.frames if frame[0] == "send"]


async def settle(seconds: float = 0.05) -> None:
    """Let in-flight broker messages arrive (the memory hub delivers asynchronously)."""
    await anyio.sleep(seconds)


class Cluster:
    """Several registries on one :class:`MemoryHub`: a cluster inside one process."""

    def __init__(self, hub: MemoryHub, nodes: list[SessionRegistry]) -> None:
        self.hub = hub
        self.nodes = nodes

    def __getitem__(self, index: int) -> SessionRegistry:
        return self.nodes[index]

    def transport(self, index: int) -> MemoryTransport:
        transport = self.nodes[index].transport
        assert isinstance(transport, MemoryTransport)
        return transport

    async def ready(self) -> None:
        """Wait until every node knows every other as live."""
        others = len(self.nodes) - 1
        await wait_for(lambda: all(len(node.live_nodes()) >= others for node in self.nodes))


@asynccontextmanager
async def cluster(size: int = 3, **options: Any) -> AsyncIterator[Cluster]:
    hub = MemoryHub()
    settings = {**FAST, **options}
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                SessionRegistry(MemoryTransport(hub), node_id=f"node{index}", **settings)
            )
            for index in range(size)
        ]
        group = Cluster(hub, nodes)
        await group.ready()
        yield group
