"""Task groups whose body errors come out unwrapped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

__all__ = ("background_tasks",)


@asynccontextmanager
async def background_tasks() -> AsyncIterator[TaskGroup]:
    """A task group for tasks that live as long as the ``async with`` body.

    The children are cancelled when the body ends, and an exception from the body comes
    out as itself, not wrapped in an ``ExceptionGroup``, so callers of a transport's
    ``open()`` catch their own errors plainly. A child that crashes still surfaces as an
    exception group: that is a bug to see, not to hide.
    """
    error: BaseException | None = None
    async with anyio.create_task_group() as tasks:
        try:
            yield tasks
        except BaseException as exc:
            error = exc
        finally:
            tasks.cancel_scope.cancel()
    if error is not None:
        raise error
