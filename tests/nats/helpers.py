"""A recording TransportHandler and a transport factory with test-speed settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from sessionws_nats import NatsTransport
from tests._helpers import wait_for
from tests._nats_servers import NatsServer

#: Reconnect and poll fast, give up fast: the tests kill servers on purpose.
FAST_RECONNECT: dict[str, Any] = {
    "reconnect_time_wait": 0.05,
    "connect_timeout": 1,
    "open_timeout": 3.0,
    "poll_interval": 0.05,
    "request_timeout": 2.0,
    "shutdown_timeout": 2.0,
}


def make_transport(url: str, **options: Any) -> NatsTransport:
    """``NatsTransport.from_url`` with :data:`FAST_RECONNECT` settings (``options`` win)."""
    return NatsTransport.from_url(url, **{**FAST_RECONNECT, **options})


class RecordingHandler:
    """Records what a transport reports, for assertions on observable outcomes."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.events: list[str] = []

    def message_received(self, channel: str, payload: bytes) -> None:
        self.messages.append((channel, payload))

    def connection_lost(self) -> None:
        self.events.append("lost")

    def connection_restored(self) -> None:
        self.events.append("restored")

    def payloads(self, channel: str) -> list[bytes]:
        return [payload for name, payload in self.messages if name == channel]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``condition()`` holds (polling; fails the test after ``timeout``)."""
        await wait_for(condition, timeout)


async def client_subscriptions(server: NatsServer) -> list[str]:
    """Every subject the server's client connections subscribe (its ``/connz`` monitor)."""
    body = await server.monitor("/connz?subs=1&limit=100000")
    return sorted(
        subject for connection in body["connections"] for subject in connection.get("subscriptions_list", [])
    )


async def wait_for_subscriptions(
    server: NatsServer, condition: Callable[[list[str]], bool], timeout: float = 2.0
) -> list[str]:
    """Poll ``/connz`` until ``condition(subjects)`` holds; return the subjects."""
    with anyio.fail_after(timeout):
        while not condition(subjects := await client_subscriptions(server)):
            await anyio.sleep(0.01)
    return subjects


class FakeWebsocket:
    """A :class:`~sessionws.Connection` that remembers how it was closed."""

    def __init__(self) -> None:
        self.sent: list[str | bytes] = []
        self.close_code: int | None = None

    async def send(self, data: str | bytes) -> None:
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
