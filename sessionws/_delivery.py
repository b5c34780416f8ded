"""Delivery to connections: one ordered, bounded queue per connection, drained by a worker.

The broker listener only appends to queues (never awaits a client); a worker task
drains one connection's queue at a time, sending and closing in issue order, each step
bounded by a timeout. A connection with work gets an idle worker, or a new one when
none is idle, so a client that never acknowledges a close delays nobody else.

Workers park when they run out of work (up to ``MAX_IDLE_WORKERS`` of them): waking a
parked worker costs a fraction of starting a task, and a close is on the path of every
logout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from sessionws._codes import CLOSE_OVERFLOW
from sessionws._handles import CloseItem, Completion, Handle, KeyState, SendItem

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ("MAX_IDLE_WORKERS", "Delivery")

logger = logging.getLogger("sessionws")

#: Workers kept parked for the next connection with work; more start when needed.
MAX_IDLE_WORKERS = 32


class _Parked:
    """A parked worker: woken with the connection it is to drain next."""

    __slots__ = ("handle", "wake")

    def __init__(self) -> None:
        self.handle: Handle | None = None
        self.wake = anyio.Event()


class Delivery:
    """Queues work for connections and runs it; ``forget`` unregisters a closed one."""

    def __init__(
        self,
        *,
        queue_size: int,
        close_timeout: float,
        send_timeout: float,
        forget: Callable[[Handle], Awaitable[None]],
        emit: Callable[..., None],
        stats: dict[str, int],
    ) -> None:
        self.queue_size = queue_size
        self.close_timeout = close_timeout
        self.send_timeout = send_timeout
        self.tasks: TaskGroup | None = None
        self._forget = forget
        self._emit = emit
        self._stats = stats
        self._idle: list[_Parked] = []

    def close(self, handle: Handle, code: int, reason: str, completion: Completion | None = None) -> bool:
        """Queue a close after whatever the connection already has queued.

        False when the connection was already closing (nothing was queued).
        """
        if not handle.mark_closing():
            return False
        if completion is not None:
            completion.add()
        handle.enqueue(CloseItem(code, reason, completion, time.monotonic()))
        self._start(handle)
        return True

    def close_key(
        self, state: KeyState | None, code: int, reason: str, exclude: str, completion: Completion | None
    ) -> int:
        """Close every connection of a key but ``exclude``; return how many were queued."""
        if state is None:
            return 0
        return sum(
            self.close(handle, code, reason, completion)
            for handle in list(state.handles)
            if handle.id != exclude
        )

    def send(self, handle: Handle, data: str | bytes) -> None:
        """Queue a send; a full queue closes the connection with 1013 instead."""
        if handle.closing:
            return
        if handle.queued >= self.queue_size:
            handle.clear_queue()
            self._stats["overflows"] += 1
            self._emit("overflow", handle=handle.id)
            logger.warning("outbound queue of %s overflowed; closing it with 1013", handle.id)
            self.close(handle, CLOSE_OVERFLOW, "outbound queue overflow")
            return
        handle.enqueue(SendItem(data))
        self._start(handle)

    def _start(self, handle: Handle) -> None:
        if self.tasks is not None and handle.start_draining():
            if self._idle:
                parked = self._idle.pop()
                parked.handle = handle
                parked.wake.set()
            else:
                self.tasks.start_soon(self._work, handle, name="sessionws delivery")

    @property
    def idle_workers(self) -> int:
        return len(self._idle)

    async def _work(self, handle: Handle) -> None:
        """Drain ``handle``'s queue, then park until another connection has work."""
        while True:
            await self._drain(handle)
            if len(self._idle) >= MAX_IDLE_WORKERS:
                return
            parked = _Parked()
            self._idle.append(parked)
            try:
                await parked.wake.wait()
            except BaseException:  # cancelled (the registry is stopping)
                if parked.handle is None:
                    self._idle.remove(parked)
                else:  # woken, but cancelled before draining: let another worker start
                    parked.handle.stop_draining()
                raise
            if parked.handle is None:  # only _start wakes a worker, and gives it a handle
                return
            handle = parked.handle

    async def _drain(self, handle: Handle) -> None:
        try:
            while (item := handle.next_item()) is not None:
                if isinstance(item, SendItem):
                    await self._send(handle, item.data)
                    continue
                await self._close(handle, item.code, item.reason, item.issued)
                if item.completion is not None:
                    item.completion.finish(True)
                handle.clear_queue()
        finally:
            handle.stop_draining()

    async def _send(self, handle: Handle, data: str | bytes) -> None:
        try:
            with anyio.fail_after(self.send_timeout):
                await handle.connection.send(data)
            self._stats["sends_delivered"] += 1
        except TimeoutError:
            logger.warning("a send to %s timed out; closing it", handle.id)
            self.close(handle, CLOSE_OVERFLOW, "send timed out")
        except Exception as error:
            logger.debug("a send to %s failed: %r", handle.id, error)

    async def _close(self, handle: Handle, code: int, reason: str, issued: float) -> None:
        try:
            with anyio.move_on_after(self.close_timeout) as scope:
                await handle.connection.close(code, reason)
            if scope.cancelled_caught:
                logger.warning("closing %s took over %ss", handle.id, self.close_timeout)
        except Exception as error:
            logger.warning("closing %s failed: %r", handle.id, error)
        self._stats["closed"] += 1
        await self._forget(handle)
        self._emit("closed", handle=handle.id, code=code, seconds=time.monotonic() - issued)
