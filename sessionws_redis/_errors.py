"""Which Redis errors mean "the broker is unreachable", and how they reach callers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sessionws.transport import TransportError

__all__ = ("UNREACHABLE_ERRORS", "broker_errors")

# Errors that mean "the broker is not reachable right now" (as opposed to a bug or
# a refused command); the public calls turn them into TransportError.
UNREACHABLE_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


@contextlib.contextmanager
def broker_errors(
    operation: str, unreachable: tuple[type[Exception], ...] = UNREACHABLE_ERRORS
) -> Iterator[None]:
    """Turn a lost connection into :class:`TransportError` naming the operation."""
    try:
        yield
    except unreachable as exc:
        raise TransportError(f"Redis {operation} failed: the broker is unreachable ({exc})") from exc
