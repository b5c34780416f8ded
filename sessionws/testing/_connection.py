"""A websocket stand-in for tests: it records what the registry sent and how it closed."""

from __future__ import annotations

from typing import Literal, NamedTuple

import anyio
import anyio.lowlevel

__all__ = ("Frame", "RecordingConnection")


class Frame(NamedTuple):
    """One thing the registry did to a :class:`RecordingConnection`, in order."""

    kind: Literal["send", "close"]
    data: str | bytes | None = None
    code: int | None = None
    reason: str | None = None


class RecordingConnection:
    """A :class:`~sessionws.Connection` that records sends and the close, in order.

    Register it like a websocket (``await registry.register(connection, keys)``), then
    read ``sent``, ``close_code`` and ``frames``, or wait for them with
    :func:`~sessionws.testing.wait_closed` and :func:`~sessionws.testing.wait_sent`.

    Faults of real clients, for testing timeouts and failures: ``hang_on_close`` never
    returns from ``close`` (a client that does not acknowledge: the registry gives up
    after its ``close_timeout``); ``fail_on_close`` and ``fail_on_send`` raise
    ``ConnectionResetError`` (a client that vanished). A send after the close raises
    ``ConnectionResetError`` too, as a real websocket does; a second close is a no-op.

    It holds no event-loop object, so it can be made anywhere (outside a loop, in a
    sync fixture) and used under asyncio or trio.
    """

    def __init__(
        self,
        name: str = "",
        *,
        hang_on_close: bool = False,
        fail_on_close: bool = False,
        fail_on_send: bool = False,
    ) -> None:
        self.name = name
        self.frames: list[Frame] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.hang_on_close = hang_on_close
        self.fail_on_close = fail_on_close
        self.fail_on_send = fail_on_send

    def __repr__(self) -> str:
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<RecordingConnection {self.name!r} {state}, {len(self.sent)} sent>"

    @property
    def closed(self) -> bool:
        """True once the registry closed this connection (``close_code`` is set)."""
        return self.close_code is not None

    @property
    def sent(self) -> list[str | bytes]:
        """What was sent, in order."""
        return [frame.data for frame in self.frames if frame.kind == "send" and frame.data is not None]

    async def send(self, data: str | bytes) -> None:
        if self.close_code is not None or self.fail_on_send:
            raise ConnectionResetError("the websocket is closed")
        await anyio.lowlevel.checkpoint()
        self.frames.append(Frame("send", data))

    async def close(self, code: int, reason: str) -> None:
        if self.fail_on_close:
            raise ConnectionResetError("the client vanished mid-close")
        if self.hang_on_close:
            await anyio.sleep_forever()
        await anyio.lowlevel.checkpoint()
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self.frames.append(Frame("close", code=code, reason=reason))
