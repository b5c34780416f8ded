"""The event loop of the benchmarks' own processes: uvloop when it is installed
(``pip install 'sessionws[speed]'``), else asyncio's, or the one asked for."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

__all__ = ("LOOPS", "loop_factory", "run", "uvloop_installed")

T = TypeVar("T")
LOOPS = ("auto", "asyncio", "uvloop")
Loop = Literal["auto", "asyncio", "uvloop"]


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(loop: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """``auto``: uvloop's loop when installed, else asyncio's; ``uvloop`` requires it."""
    if loop not in LOOPS:
        raise ValueError(f"unknown event loop {loop!r}: use one of {', '.join(LOOPS)}")
    if loop == "uvloop" or (loop == "auto" and uvloop_installed()):
        try:
            import uvloop
        except ImportError:
            raise SystemExit("uvloop is not installed: pip install 'sessionws[speed]'") from None
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)
