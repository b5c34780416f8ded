"""The NATS transport's own error, and how nats-py's errors become the core's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors

from sessionws.transport import SessionWSError, TransportError

__all__ = ("UnsupportedNatsServerError", "broker_errors")


class UnsupportedNatsServerError(SessionWSError):
    """The NATS server cannot hold sessionws' markers as configured.

    Raised by ``NatsTransport.open()`` when JetStream is disabled, when the server is
    older than 2.11 (no per-message TTL), or when an existing bucket of the same name
    lacks what the markers need. The message names the fix.
    """


@contextmanager
def broker_errors(action: str) -> Iterator[None]:
    """Turn nats-py's connection and API failures into :class:`~sessionws.TransportError`."""
    try:
        yield
    except (nats.errors.Error, OSError, TimeoutError) as error:
        raise TransportError(f"NATS {action} failed: {error or type(error).__name__}") from error
