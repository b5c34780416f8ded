"""The Redis Cluster transport: sharded pub/sub, so a message costs one shard.

Channels are subscribed with ``SSUBSCRIBE`` on the primary that owns their hash slot
and published with ``SPUBLISH``, which only that shard handles (classic ``PUBLISH``
is broadcast to every node of a cluster). The transport holds one pub/sub
connection per primary, each a :class:`~sessionws_redis._link.PubSubLink` with
its own reader and reconnect loop, so a master that dies only silences its own
shard: the handler hears ``connection_lost`` when the first link drops and
``connection_restored`` when every link is back and resubscribed.

The sequence and every marker share the hash tag ``{prefix}``: one slot, so the
mark script and ``MGET`` run on one node, atomically. ``identity`` is the epoch kept
in that slot (see :mod:`sessionws_redis._epoch`): it changes only when the primary
owning it lost its data — the only node whose data matters.

A ``MOVED`` reply or a server-side ``SUNSUBSCRIBE`` (a slot migrated) makes the
transport reload the cluster's slot map and rebuild its links if it changed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskStatus
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from sessionws.transport import TransportError, background_tasks
from sessionws_redis._base import RedisTransportBase
from sessionws_redis._errors import UNREACHABLE_ERRORS, broker_errors
from sessionws_redis._link import PubSubLink, notify, run_link
from sessionws_redis._options import (
    check_channels,
    pubsub_connection_kwargs,
    split_options,
)
from sessionws_redis._urls import parameters, split_url

__all__ = ("RedisClusterTransport",)

logger = logging.getLogger("sessionws.redis")

# A cluster that is reshaping or missing a master answers with these; to the
# registry they mean the same as an unreachable broker.
_CLUSTER_UNREACHABLE: tuple[type[Exception], ...] = (
    *UNREACHABLE_ERRORS,
    ClusterDownError,
    MasterDownError,
    TryAgainError,
    RedisClusterException,
)


def _slot_owners(client: RedisCluster) -> tuple[str, ...]:
    """The primary's name for every hash slot (a snapshot of the client's slot map)."""
    cache = client.nodes_manager.slots_cache
    return tuple(cache[slot][0].name if cache.get(slot) else "" for slot in range(REDIS_CLUSTER_HASH_SLOTS))


class RedisClusterTransport(RedisTransportBase[RedisCluster]):
    """A :class:`~sessionws.Transport` over a Redis Cluster, with sharded pub/sub.

    Build it with :meth:`from_url` (``redis+cluster://host:port``, or
    ``rediss+cluster://``; the other nodes are discovered) or from a ready
    ``redis.asyncio.cluster.RedisCluster`` (``decode_responses=False``; left open).
    The options are those of :class:`~sessionws_redis.RedisTransport`.
    Needs Redis 7.0 or later (sharded pub/sub).
    """

    publish_command = "SPUBLISH"
    unreachable_errors = _CLUSTER_UNREACHABLE

    def __init__(self, client: RedisCluster, *, close_client: bool = False, **options: Any) -> None:
        if not isinstance(client, RedisCluster):
            raise TypeError(
                f"client must be a redis.asyncio.cluster.RedisCluster, got {type(client).__name__}"
            )
        if client.get_encoder().decode_responses:
            raise ValueError("the RedisCluster client must use decode_responses=False (payloads are bytes)")
        super().__init__(client, close_client=close_client, options=options)
        self._marker_slot = key_slot(self._options.sequence_key.encode())
        self._wanted: dict[str, int] = {}  # channel -> hash slot
        self._owners: tuple[str, ...] = ()
        self._links: dict[str, PubSubLink] = {}
        self._last_epoch = ""
        self._refresh = anyio.Event()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisClusterTransport:
        """A transport for ``redis+cluster://`` / ``rediss+cluster://`` URLs.

        Transport options are taken from ``options`` and the URL's query (keywords
        win), redis-py's go to ``RedisCluster.from_url``; anything else raises
        :class:`ValueError`. The transport owns that client and closes it
        when ``open()`` exits.
        """
        scheme, separator, _ = url.partition("://")
        if scheme.lower() not in ("redis+cluster", "rediss+cluster") or not separator:
            raise ValueError(f"RedisClusterTransport takes redis+cluster:// URLs, got {scheme}://")
        parsed = split_url(url, options, client_options=parameters(RedisCluster.__init__))
        transport_options, client_options = split_options({**parsed.client, **parsed.own})
        client = RedisCluster.from_url(
            f"{scheme.lower().removesuffix('+cluster')}://{parsed.url.partition('://')[2]}", **client_options
        )
        return cls(client, close_client=True, **vars(transport_options))

    @property
    def connected(self) -> bool:
        """Whether every primary's pub/sub connection is up and resubscribed."""
        return bool(self._links) and all(link.connected for link in self._links.values())

    @property
    def identity(self) -> str:
        """The epoch kept beside the markers; ``""`` before ``open``. While the links
        are rebuilt (a new slot map) it stays the last one read: a command sent then
        still names its epoch."""
        link = self._links.get(self._owners[self._marker_slot]) if self._owners else None
        if link is not None and link.epoch:
            self._last_epoch = link.epoch
        return self._last_epoch

    @asynccontextmanager
    async def _connected(self) -> AsyncIterator[None]:
        """Discover the cluster, connect to every primary and keep the listeners running."""
        await self._discover()
        async with background_tasks() as tasks:
            await tasks.start(self._supervise)
            yield

    def _forget_connections(self) -> None:
        self._links = {}
        self._owners = ()
        self._last_epoch = ""
        self._wanted.clear()

    def _is_open(self) -> bool:
        return self._handler is not None and bool(self._links)

    async def _discover(self) -> None:
        """Learn the slot map, trying again (with backoff) for ``open_timeout``: a node
        that starts while the cluster restarts waits for it, as a standalone one does."""
        deadline = anyio.current_time() + self._options.open_timeout
        delay = self._options.reconnect_min_delay
        while True:
            try:
                with (
                    anyio.fail_after(max(0.0, deadline - anyio.current_time())),
                    broker_errors("cluster discovery", _CLUSTER_UNREACHABLE),
                ):
                    await self._client.initialize()
                return
            except TimeoutError as exc:
                raise TransportError(
                    f"the Redis Cluster did not answer within {self._options.open_timeout} s"
                ) from exc
            except TransportError:
                if anyio.current_time() + delay >= deadline:
                    raise
                logger.debug("the Redis Cluster is not reachable yet; trying again in %.2f s", delay)
                await anyio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self._options.reconnect_max_delay)

    async def _supervise(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run one generation of links per slot map; rebuild when the map changes."""
        first = True
        while True:
            self._refresh = anyio.Event()
            self._owners = _slot_owners(self._client)
            primaries = {node.name: node for node in self._client.get_primaries()}
            self._links = {
                name: PubSubLink(
                    name,
                    _connection_factory(node),
                    self,
                    self._options,
                    sharded=True,
                    epoch_key=self._options.epoch_key if name == self._owners[self._marker_slot] else None,
                )
                for name, node in primaries.items()
            }
            async with background_tasks() as tasks:
                for link in self._links.values():
                    if first:
                        await tasks.start(run_link, link, self._options.open_timeout)
                    else:
                        tasks.start_soon(run_link, link, None)
                if first:
                    first = False
                    task_status.started()
                await self._wait_for_new_slot_map()
            # The old links are gone; the handler must hear about it before new ones come up.
            self._mark_lost()

    async def _wait_for_new_slot_map(self) -> None:
        while True:
            await self._refresh.wait()
            self._refresh = anyio.Event()
            try:
                await self._client.nodes_manager.initialize()
            except (RedisError, RedisClusterException, OSError) as exc:
                logger.warning("reloading the Redis Cluster slot map failed: %s", exc)
                await anyio.sleep(self._options.reconnect_max_delay)
                self._refresh.set()
                continue
            if _slot_owners(self._client) != self._owners:
                logger.warning("the Redis Cluster slot map changed; reconnecting to its primaries")
                return

    def _links_for(self, channels: Iterable[str]) -> dict[PubSubLink, list[str]]:
        grouped: dict[PubSubLink, list[str]] = {}
        for channel in channels:
            link = self._links.get(self._owners[key_slot(channel.encode())])
            if link is None:
                self._refresh.set()
                raise TransportError("no primary owns this channel's slot; the slot map is being reloaded")
            grouped.setdefault(link, []).append(channel)
        return grouped

    # --- LinkOwner ------------------------------------------------------------------
    def channels_for(self, link: PubSubLink) -> Iterable[str]:
        return [channel for channel, slot in self._wanted.items() if self._owners[slot] == link.name]

    def wants(self, link: PubSubLink, channel: str) -> bool:
        slot = self._wanted.get(channel)
        return slot is not None and self._owners[slot] == link.name

    def link_up(self, link: PubSubLink) -> None:
        if self._lost and self.connected and self._handler is not None:
            self._lost = False
            logger.info(
                "every Redis Cluster primary is reachable again; %d channels resubscribed", len(self._wanted)
            )
            notify(self._handler.connection_restored)

    def reconnect_failed(self, link: PubSubLink) -> None:
        # A primary that stays away may have been replaced (failover): ask the
        # cluster again every few attempts; an unchanged slot map changes nothing.
        if link.failed_attempts % 5 == 0:
            self._refresh.set()

    def redirected(self, link: PubSubLink, error: ResponseError) -> None:
        logger.warning(
            "Redis Cluster node %s redirected a subscription (%s); reloading the slot map", link.name, error
        )
        self._refresh.set()

    # --- Transport ------------------------------------------------------------------
    async def subscribe(self, channels: Sequence[str]) -> None:
        """``SSUBSCRIBE`` on each owning primary; returns once all of them confirmed.

        Channels whose shard is down stay wanted (subscribed when it returns) and
        make the call raise :class:`~sessionws.TransportError` after the others
        were subscribed.
        """
        channels = check_channels(channels)
        self._require_open()
        for channel in channels:
            self._wanted[channel] = key_slot(channel.encode())
        await self._update(channels, strict=True)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """``SUNSUBSCRIBE``; shards that are down simply do not resubscribe them."""
        channels = check_channels(channels)
        self._require_open()
        for channel in channels:
            self._wanted.pop(channel, None)
        await self._update(channels, strict=False)

    async def _update(self, channels: Sequence[str], *, strict: bool) -> None:
        failure: TransportError | None = None
        for link, link_channels in self._links_for(channels).items():
            if not link.connected and not strict:
                continue
            try:
                await link.update(link_channels)
            except TransportError as exc:
                failure = failure or exc
        if failure is not None and strict:
            raise failure


def _connection_factory(node: ClusterNode) -> Callable[[], AbstractConnection]:
    kwargs = pubsub_connection_kwargs(node.connection_kwargs)
    return lambda: node.connection_class(**kwargs)
