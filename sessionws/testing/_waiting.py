"""Wait for an outcome with a deadline, instead of sleeping and hoping.

Every helper polls (a few milliseconds apart) with anyio, so it works in any test
runner's event loop: pytest-asyncio's, anyio's plugin on asyncio or trio. A deadline
that passes fails the test with an ``AssertionError`` saying what was seen; give
generous deadlines (a loaded CI machine is slow), never tight ones.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from sessionws.testing._connection import RecordingConnection

__all__ = ("DEFAULT_TIMEOUT", "wait_closed", "wait_sent", "wait_until")

#: Seconds the helpers wait by default before failing the test.
DEFAULT_TIMEOUT = 10.0

_POLL = 0.005


async def wait_until(
    condition: Callable[[], object],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    message: str | Callable[[], str] = "",
) -> None:
    """Return as soon as ``condition()`` is true; fail the test after ``timeout`` seconds.

    ``message`` (or a callable making it, to show the state at the deadline) explains
    the failure.
    """
    if condition():
        return
    with anyio.move_on_after(timeout):
        while True:
            await anyio.sleep(_POLL)
            if condition():
                return
    text = message() if callable(message) else message
    raise AssertionError(f"after {timeout}s: {text or f'{condition!r} is still false'}")


async def wait_closed(
    connection: RecordingConnection,
    *,
    code: int | None = None,
    reason: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Wait until ``connection`` is closed and return its close code.

    With ``code`` (and ``reason``), a close with anything else fails the test at once.
    """
    await wait_until(
        lambda: connection.closed,
        timeout=timeout,
        message=lambda: f"{connection!r} was not closed (frames: {connection.frames!r})",
    )
    assert connection.close_code is not None
    if code is not None and connection.close_code != code:
        raise AssertionError(
            f"{connection!r} was closed with {connection.close_code} "
            f"({connection.close_reason!r}), not {code}"
        )
    if reason is not None and connection.close_reason != reason:
        raise AssertionError(
            f"{connection!r} was closed with reason {connection.close_reason!r}, not {reason!r}"
        )
    return connection.close_code


async def wait_sent(
    connection: RecordingConnection,
    data: str | bytes | None = None,
    *,
    count: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[str | bytes]:
    """Wait until ``connection`` was sent ``data`` (or, without it, ``count`` messages);
    return everything it was sent."""

    def done() -> bool:
        if data is None:
            return len(connection.sent) >= count
        return connection.sent.count(data) >= count

    wanted = f"{data!r}" if data is not None else f"{count} messages"
    await wait_until(
        done,
        timeout=timeout,
        message=lambda: f"{connection!r} was not sent {wanted} (sent: {connection.sent!r})",
    )
    return connection.sent
