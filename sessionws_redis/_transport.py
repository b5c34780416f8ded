"""The standalone Redis transport: one pub/sub link, markers in keys, one ``INCR`` sequence.

The pieces live next door: the pub/sub connection and its reconnect loop in
:mod:`sessionws_redis._link`, the marker script in :mod:`sessionws_redis._markers`,
the options in :mod:`sessionws_redis._options`. The cluster transport
(:mod:`sessionws_redis._cluster`) is built from the same pieces.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ResponseError

from sessionws.transport import TransportError, background_tasks
from sessionws_redis._base import NOT_OPEN, RedisTransportBase
from sessionws_redis._cluster import RedisClusterTransport
from sessionws_redis._errors import broker_errors
from sessionws_redis._link import PubSubLink, notify, run_link
from sessionws_redis._options import (
    DEFAULT_MAX_CONNECTIONS,
    check_channels,
    describe_connection,
    pubsub_connection_kwargs,
    split_options,
)
from sessionws_redis._urls import split_url, standalone_client_options

__all__ = ("RedisTransport", "transport_from_url")

logger = logging.getLogger("sessionws.redis")


class RedisTransport(RedisTransportBase[Redis]):
    """A :class:`~sessionws.Transport` over a standalone Redis server (or a proxy).

    Build it with :meth:`from_url` (``redis://``, ``rediss://``) or from a ready
    ``redis.asyncio.Redis`` client (with ``decode_responses=False``; the transport
    then leaves the client open). Options:

    * ``prefix``: hash tag and prefix of the transport's keys (the sequence and the
      markers); namespaces may share one.
    * ``max_payload``: largest payload ``publish`` accepts (default 1 MiB).
    * ``reconnect_min_delay`` / ``reconnect_max_delay``: the capped exponential
      backoff between reconnect attempts (with jitter).
    * ``open_timeout``: how long ``open()`` keeps trying to reach Redis at start
      before it raises :class:`~sessionws.TransportError`.
    * ``command_timeout``: how long a command or a subscription may wait for the
      server (default 10 s). The transport bounds commands itself, so the client
      ``from_url`` builds has no socket timeout unless you pass ``socket_timeout``.
    * ``health_check_interval``: how often an idle pub/sub connection is PINGed, so
      a silently dead peer is noticed within about twice this.

    ``identity`` is the namespace's epoch, a token written once under
    ``{prefix}:epoch``: a restart that kept its data (AOF, RDB) keeps it, one that
    lost the data gets a new one (see :mod:`sessionws_redis._epoch`).
    """

    def __init__(self, client: Redis, *, close_client: bool = False, **options: Any) -> None:
        if not isinstance(client, Redis):
            raise TypeError(f"client must be a redis.asyncio.Redis, got {type(client).__name__}")
        if client.connection_pool.connection_kwargs.get("decode_responses", False):
            raise ValueError("the Redis client must use decode_responses=False (payloads are bytes)")
        super().__init__(client, close_client=close_client, options=options)
        self._wanted: set[str] = set()
        self._link: PubSubLink | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisTransport:
        """A transport for ``redis://`` / ``rediss://`` URLs.

        Transport options (see the class) are taken from ``options`` and from the
        URL's query (``?prefix=myapp&command_timeout=2``; keywords win); redis-py's
        connection options go to its ``BlockingConnectionPool.from_url``
        (``max_connections`` defaults to 100: when all are busy a command waits for one,
        within ``command_timeout``). Any other name raises :class:`ValueError` here,
        naming the valid ones. The transport owns that client and closes it when
        ``open()`` exits.
        """
        scheme = url.partition("://")[0].lower()
        if scheme not in ("redis", "rediss"):
            raise ValueError(f"RedisTransport takes redis:// or rediss:// URLs, got {scheme}://")
        accepted = standalone_client_options(scheme == "rediss", options)
        parsed = split_url(url, options, client_options=accepted)
        transport_options, client_options = split_options({**parsed.client, **parsed.own})
        client_options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
        # A blocking pool: a command waits for a free connection (within the
        # transport's command_timeout) rather than fail as if Redis were gone.
        pool = BlockingConnectionPool.from_url(parsed.url, timeout=None, **client_options)
        client = Redis(connection_pool=pool)
        client.auto_close_connection_pool = True
        return cls(client, close_client=True, **vars(transport_options))

    @property
    def connected(self) -> bool:
        """Whether the pub/sub connection is up and every wanted channel subscribed."""
        return self._link is not None and self._link.connected

    @property
    def identity(self) -> str:
        """The namespace's epoch at the last (re)connect; ``""`` before ``open``."""
        return self._link.epoch if self._link is not None else ""

    @asynccontextmanager
    async def _connected(self) -> AsyncIterator[None]:
        pool = self._client.connection_pool
        connection_kwargs = pubsub_connection_kwargs(pool.connection_kwargs)
        link = PubSubLink(
            describe_connection(pool.connection_kwargs),
            lambda: pool.connection_class(**connection_kwargs),
            self,
            self._options,
            epoch_key=self._options.epoch_key,
        )
        async with background_tasks() as tasks:
            await tasks.start(run_link, link, self._options.open_timeout)
            self._link = link
            yield

    def _forget_connections(self) -> None:
        self._link = None
        self._wanted.clear()

    def _is_open(self) -> bool:
        return self._link is not None

    def _open_link(self) -> PubSubLink:
        if self._link is None:
            raise RuntimeError(NOT_OPEN)
        return self._link

    # --- LinkOwner ------------------------------------------------------------------
    def channels_for(self, link: PubSubLink) -> Iterable[str]:
        return self._wanted

    def wants(self, link: PubSubLink, channel: str) -> bool:
        return channel in self._wanted

    def link_up(self, link: PubSubLink) -> None:
        if self._lost and self._handler is not None:
            self._lost = False
            logger.info(
                "reconnected to Redis at %s and resubscribed %d channels", link.name, len(self._wanted)
            )
            notify(self._handler.connection_restored)

    def reconnect_failed(self, link: PubSubLink) -> None:
        pass

    def redirected(self, link: PubSubLink, error: ResponseError) -> None:
        logger.warning("Redis at %s redirected a subscription (%s); is this a cluster?", link.name, error)

    # --- Transport ------------------------------------------------------------------
    async def subscribe(self, channels: Sequence[str]) -> None:
        """Subscribe ``channels`` (one batch) and return once Redis confirmed."""
        channels = check_channels(channels)
        link = self._open_link()
        self._wanted.update(channels)
        await link.update(channels)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """Unsubscribe ``channels``; while disconnected they are simply not resubscribed."""
        channels = check_channels(channels)
        link = self._open_link()
        self._wanted.difference_update(channels)
        if link.connected:
            with contextlib.suppress(TransportError):
                await link.update(channels)

    async def mark_and_publish(
        self, key: str, value: bytes, ttl: float, sequence: int, channel: str, payload: bytes
    ) -> int | None:
        """Set a marker taken with ``next_sequence`` and publish, in one atomic script."""
        self._options.check_payload(payload)
        self._require_open()
        with broker_errors("mark and publish"):
            return await self._markers.mark_and_publish(key, value, ttl, sequence, channel, payload)

    async def mark_and_publish_numbered(
        self, key: str, value: bytes, ttl: float, channel: str, head: bytes, tail: bytes
    ) -> tuple[int, int | None]:
        """Take a sequence (``INCR``), set the marker and publish ``head + sequence + tail``,
        in one atomic script: one round trip for a close or a revoke."""
        self._options.check_payload(head + b"12345678901234567890" + tail)
        self._require_open()
        with broker_errors("mark and publish"):
            return await self._markers.mark_and_publish_numbered(key, value, ttl, channel, head, tail)


def transport_from_url(url: str, **options: Any) -> RedisTransport | RedisClusterTransport:
    """The Redis transport for ``url``: the cluster one for ``redis+cluster://``, the
    Sentinel one for ``redis+sentinel://``.

    This is what the core's URL table calls for the Redis schemes.
    """

    scheme = url.partition("://")[0].lower()
    if scheme in ("redis+cluster", "rediss+cluster"):
        return RedisClusterTransport.from_url(url, **options)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        # Imported here: the Sentinel transport is built on this module's class.
        from sessionws_redis._sentinel import RedisSentinelTransport

        return RedisSentinelTransport.from_url(url, **options)
    if scheme in ("redis", "rediss"):
        return RedisTransport.from_url(url, **options)
    raise ValueError(
        f"sessionws_redis cannot handle {scheme}:// URLs; use redis://, rediss://, "
        "redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://"
    )
