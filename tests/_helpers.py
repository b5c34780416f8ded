"""What the suites share: registry settings that keep them fast, and waiting for an outcome
that arrives asynchronously (over a hub or a broker). Free ports are in ``tests._ports``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

__all__ = ("FAST", "wait_for")

#: Registry settings that keep the tests fast: beats every 0.1 s, short lingers and waits.
FAST: dict[str, Any] = {
    "heartbeat_interval": 0.1,
    "linger": 0.05,
    "close_timeout": 0.5,
    "confirm_timeout": 1.0,
}


async def wait_for(condition: Callable[[], object], timeout: float = 3.0) -> None:
    """Poll ``condition()`` until it is true; fail the test after ``timeout`` seconds (a
    hang guard: what is asserted is the condition, not how soon it held)."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)
