"""The transports' options, batching limits and input checks (standalone and cluster)."""

from __future__ import annotations

import math
import random
import re
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError

__all__ = (
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_PAYLOAD",
    "RENAMED_OPTIONS",
    "TransportOptions",
    "check_channels",
    "chunks",
    "describe_connection",
    "pubsub_connection_kwargs",
    "split_options",
)

DEFAULT_MAX_PAYLOAD = 1 << 20
#: Connections of the command pool a transport builds from a URL. The pool blocks
#: when they are all busy, so a storm of verbs queues for a connection (bounded by
#: ``command_timeout``) instead of failing as if the broker were gone.
DEFAULT_MAX_CONNECTIONS = 100
_REDIS_MAX_BULK = 512 << 20
# Channels per SUBSCRIBE / keys per MGET: big enough to batch, small enough that
# one command never holds the server (or a huge write buffer) for long.
_CHUNK = 1000
_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:-]+")
#: Options that were renamed (old name: new name): still accepted, with a DeprecationWarning.
RENAMED_OPTIONS: Final[Mapping[str, str]] = {"connect_timeout": "open_timeout"}


@dataclass(frozen=True)
class TransportOptions:
    """The knobs shared by :class:`RedisTransport` and the cluster transport."""

    prefix: str = "sessionws"
    max_payload: int = DEFAULT_MAX_PAYLOAD
    reconnect_min_delay: float = 0.05
    reconnect_max_delay: float = 2.0
    open_timeout: float = 10.0
    command_timeout: float = 10.0
    health_check_interval: float = 15.0

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _PREFIX_PATTERN.fullmatch(self.prefix):
            raise ValueError(f"prefix must be a non-empty string of [A-Za-z0-9_.:-], got {self.prefix!r}")
        if not isinstance(self.max_payload, int) or not 0 < self.max_payload <= _REDIS_MAX_BULK:
            raise ValueError(f"max_payload must be an int between 1 and {_REDIS_MAX_BULK} (Redis' limit)")
        for name in ("open_timeout", "command_timeout", "health_check_interval", "reconnect_min_delay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not self.reconnect_min_delay <= self.reconnect_max_delay < math.inf:
            raise ValueError("reconnect_max_delay must be finite and at least reconnect_min_delay")

    @classmethod
    def from_keywords(cls, options: Mapping[str, Any]) -> TransportOptions:
        """The options from keywords, taking a renamed option's old name with a warning."""
        given = dict(options)
        for old, new in RENAMED_OPTIONS.items():
            if old in given:
                warnings.warn(
                    f"the Redis transports' option {old!r} is deprecated: use {new!r} (the same seconds)",
                    DeprecationWarning,
                    stacklevel=4,
                )
                given.setdefault(new, given.pop(old))
        return cls(**given)

    @property
    def sequence_key(self) -> str:
        """The ``INCR`` counter; the ``{prefix}`` hash tag keeps it in the markers' slot."""
        return f"{{{self.prefix}}}:sequence"

    @property
    def epoch_key(self) -> str:
        """The namespace's epoch (see :mod:`sessionws_redis._epoch`), in the markers' slot."""
        return f"{{{self.prefix}}}:epoch"

    def marker_key(self, key: str) -> str:
        """Where the marker ``key`` is stored."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"a marker key must be a non-empty string, got {key!r}")
        return f"{{{self.prefix}}}:marker:{key}"

    def check_payload(self, payload: bytes) -> None:
        """Refuse payloads the transport would not deliver."""
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        if len(payload) > self.max_payload:
            raise ValueError(
                f"payload of {len(payload)} bytes exceeds the transport's max_payload of {self.max_payload}"
            )


def split_options(options: dict[str, Any]) -> tuple[TransportOptions, dict[str, Any]]:
    """Separate the transport's own keyword options from the Redis client's, and give
    the client the transport's defaults (the caller's settings win):

    * one retry without backoff: a command on a connection Redis dropped is tried
      once more on a new one, and anything longer is the registry's outage handling;
    * no socket timeout: the transport bounds every command itself (``command_timeout``,
      a cancel scope). With a socket timeout, redis-py sends each command through
      ``asyncio.wait_for``, which runs the send in a task of its own: one more task
      and one more turn of the event loop before a close reaches the wire.
    """
    names = {*TransportOptions.__dataclass_fields__, *RENAMED_OPTIONS}
    own = {name: options.pop(name) for name in list(options) if name in names}
    options.setdefault("retry", Retry(NoBackoff(), 1))
    options.setdefault("socket_timeout", None)
    return TransportOptions.from_keywords(own), options


def bounded(execute: Callable[..., Awaitable[Any]], timeout: float) -> Callable[..., Awaitable[Any]]:
    """``execute`` (a client's ``execute_command``), failing with :class:`TimeoutError`
    (an ``OSError``: "unreachable") when the server has not answered within ``timeout``.
    A command cut off mid-read makes redis-py drop that connection.

    A client whose own connection pool is full (``MaxConnectionsError``, from a
    client built by the caller with a non-blocking pool) is local back-pressure, not
    a lost broker: the command waits for a free connection within the same bound.
    """

    async def command(*arguments: Any) -> Any:
        with anyio.fail_after(timeout):
            delay = 0.001
            while True:
                try:
                    return await execute(*arguments)
                except MaxConnectionsError:
                    await anyio.sleep(random.uniform(delay / 2, delay))
                    delay = min(delay * 2, 0.05)

    return command


def pubsub_connection_kwargs(connection_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Connection settings for a dedicated pub/sub connection, from a client's.

    RESP2 keeps pub/sub replies plain arrays; no socket timeout because an idle
    subscriber legitimately reads nothing for hours (the health-check PING bounds
    a dead peer instead); no retries because the link runs its own backoff; and no
    maintenance-notification handlers, which belong to the client's pool.
    """
    kwargs = dict(connection_kwargs)
    for name in ("maint_notifications_pool_handler", "oss_cluster_maint_notifications_handler"):
        kwargs.pop(name, None)
    kwargs.update(socket_timeout=None, protocol=2, retry=Retry(NoBackoff(), 0), health_check_interval=0)
    if kwargs.get("socket_connect_timeout") is None:
        kwargs["socket_connect_timeout"] = 5.0
    return kwargs


def chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_channels(channels: Sequence[str]) -> list[str]:
    """Validate a batch of channel names."""
    if isinstance(channels, str):
        raise TypeError("pass a sequence of channel names, not one string")
    checked = list(channels)
    for channel in checked:
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"a channel must be a non-empty string, got {channel!r}")
    return checked


def describe_connection(connection_kwargs: dict[str, Any]) -> str:
    """``host:port`` (or ``unix:path``) of a client's connection settings, for messages."""
    service = getattr(connection_kwargs.get("connection_pool"), "service_name", None)
    if isinstance(service, str):
        return f"the master of {service!r} (via Sentinel)"
    if "path" in connection_kwargs:
        return f"unix:{connection_kwargs['path']}"
    return f"{connection_kwargs.get('host', 'localhost')}:{connection_kwargs.get('port', 6379)}"
