"""Redis behind Sentinel: the standalone transport, following the master the sentinels name.

``redis+sentinel://host:26379,host2:26379/mymaster/0`` (``rediss+sentinel://`` for
TLS) asks the sentinels for the master of the service ``mymaster`` and talks to it
through redis-py's :class:`~redis.asyncio.sentinel.Sentinel`. Commands use a
``SentinelConnectionPool``, which asks the sentinels again on every new connection;
the pub/sub link does the same on every reconnect (:class:`SentinelLinkConnection`),
and refuses a server that is not, or no longer, a master (``ROLE``), so after a
failover every node ends up on the promoted replica. A failover that leaves the old
master running (``SENTINEL FAILOVER``, a network split) does not drop any
connection, so the transport also asks the sentinels every
``failover_check_interval`` seconds (default 1) where the master is, and moves its
pub/sub connection (and the pool's idle connections) when the answer changed.

A failover may lose writes: Redis replicates asynchronously, so the last markers
and sequence increments taken on the old master may never have reached the replica
that replaces it (the sequence can then go backwards). The transport's ``identity``
therefore includes the master's ``run_id``: a new master reads as "the broker lost
its data", and the registry does what it does after a data loss (closes its sockets
with 1012 so clients re-authorise, and restarts its sequence bookkeeping).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final
from urllib.parse import unquote

import anyio
from redis.asyncio.connection import AbstractConnection, Connection, ConnectionPool, SSLConnection, parse_url
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from sessionws.transport import TransportHandler, background_tasks
from sessionws_redis._options import split_options
from sessionws_redis._transport import RedisTransport
from sessionws_redis._urls import parameters, split_url, url_path_segments

__all__ = (
    "RedisSentinelTransport",
    "SentinelLinkConnection",
    "SentinelLinkPool",
    "SentinelLinkSSLConnection",
)

logger = logging.getLogger("sessionws.redis")

SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT: Final = 26379
#: How long one sentinel may take to answer "where is the master" before the next is asked.
_SENTINEL_TIMEOUT: Final = 1.0

# Options of redis-py's Sentinel and SentinelConnectionPool (not of a connection).
_SENTINEL_OPTIONS: Final = frozenset(
    {"min_other_sentinels", "sentinel_kwargs", "force_master_ip", "check_connection"}
)


class SentinelLinkConnection(SentinelManagedConnection):
    """A sentinel-managed connection that finds the master however it is connected.

    redis-py's own class asks the sentinels only from ``connect()``; the pub/sub
    link connects with ``connect_check_health()`` directly, so this class asks
    there too. Either way the server must answer ``ROLE`` with ``master``: a
    sentinel that has not yet noticed a failover, or a master demoted meanwhile,
    is refused with a :class:`redis.exceptions.ConnectionError` (tried again later).
    """

    _placing = False

    async def connect_to(self, address: tuple[str, int]) -> None:
        self._placing = True
        try:
            await super().connect_to(address)  # type: ignore[no-untyped-call]
        finally:
            self._placing = False
        await self._require_master()

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        if self._placing:
            await super().connect_check_health(
                check_health=check_health, retry_socket_connect=retry_socket_connect
            )
            return
        # Called directly (the pub/sub link): ask the sentinels where the master is.
        address = await self.connection_pool.get_master_address()
        await self.connect_to(address)
        self.connection_pool.link_address = address

    async def _require_master(self) -> None:
        await self.send_command("ROLE", check_health=False)
        reply = await self.read_response(disable_decoding=True)
        role = reply[0] if isinstance(reply, list) and reply else reply
        if role != b"master":
            await self.disconnect()
            shown = role.decode(errors="replace") if isinstance(role, bytes) else repr(role)
            raise RedisConnectionError(
                f"{self.host}:{self.port} is a {shown}, not the master of "
                f"{self.connection_pool.service_name!r}; the sentinels have not switched yet"
            )


class SentinelLinkSSLConnection(SentinelLinkConnection, SentinelManagedSSLConnection):
    """:class:`SentinelLinkConnection` over TLS."""


class SentinelLinkPool(SentinelConnectionPool):
    """The master's pool, remembering where the pub/sub link last connected."""

    link_address: tuple[str, int] | None = None


class RedisSentinelTransport(RedisTransport):
    """A :class:`~sessionws.Transport` over a Redis master that Redis Sentinel watches.

    Build it with :meth:`from_url` (``redis+sentinel://h1:26379,h2:26379/mymaster/0``,
    ``rediss+sentinel://`` for TLS to the sentinels and the master) or from a
    ``redis.asyncio.sentinel.Sentinel`` you made (``RedisSentinelTransport(sentinel,
    "mymaster")``; left open unless ``close_sentinel=True``). ``master_options`` go to
    ``Sentinel.master_for`` (``db``, ``password``, ``ssl_*``, ...). The transport
    options are those of :class:`~sessionws_redis.RedisTransport`, plus
    ``failover_check_interval``: how often the sentinels are asked where the master
    is (default 1 s), for failovers that drop no connection.

    ``identity`` changes when the master changes (a failover, or a restart), because
    asynchronous replication may have lost the newest markers; the registry then
    treats it as a broker data loss.
    """

    def __init__(
        self,
        sentinel: Sentinel,
        service_name: str,
        *,
        master_options: Mapping[str, Any] | None = None,
        close_sentinel: bool = False,
        failover_check_interval: float = 1.0,
        **options: Any,
    ) -> None:
        if not isinstance(sentinel, Sentinel):
            raise TypeError(
                f"sentinel must be a redis.asyncio.sentinel.Sentinel, got {type(sentinel).__name__}"
            )
        if not isinstance(service_name, str) or not service_name:
            raise ValueError(f"service_name must be the name the sentinels monitor, got {service_name!r}")
        if not isinstance(failover_check_interval, int | float) or not 0 < failover_check_interval < math.inf:
            raise ValueError(
                "failover_check_interval must be a positive number of seconds, "
                f"got {failover_check_interval!r}"
            )
        master = dict(master_options or {})
        for name in ("connection_class", "connection_pool_class"):
            if name in master:
                raise ValueError(f"{name} is chosen by the transport; pass ssl=True for TLS")
        client = sentinel.master_for(service_name, connection_pool_class=SentinelLinkPool, **master)
        # A fresh pool of our own: let its connections (and the pub/sub link's) find
        # the master however they are connected.
        pool = client.connection_pool
        if not isinstance(pool, SentinelLinkPool):
            raise TypeError("Sentinel.master_for did not build the pool it was asked for")
        tls = issubclass(pool.connection_class, SSLConnection)
        pool.connection_class = SentinelLinkSSLConnection if tls else SentinelLinkConnection
        super().__init__(client, close_client=True, **options)
        self._pool: SentinelLinkPool = pool
        self._failover_check_interval = float(failover_check_interval)
        self.service_name = service_name
        self._sentinel = sentinel
        self._close_sentinel = close_sentinel

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisSentinelTransport:
        """A transport for ``redis+sentinel://`` / ``rediss+sentinel://`` URLs.

        ``redis+sentinel://[user:password@]host[:port][,host[:port]...]/service[/db]``:
        the sentinels (port 26379 when left out), the service they monitor and the
        database. The credentials are the master's; give the sentinels' own with
        ``sentinel_kwargs={"password": ...}``. The query and the keywords take the
        transport's options, redis-py's connection options and Sentinel's
        ``min_other_sentinels`` (keywords also ``sentinel_kwargs``, ``force_master_ip``);
        anything else raises :class:`ValueError`.
        """
        if not isinstance(url, str):
            raise TypeError(f"a Redis Sentinel URL must be a str, not {type(url).__name__}")
        scheme = url.partition("://")[0].lower()
        if scheme not in SCHEMES or "://" not in url:
            raise ValueError(f"RedisSentinelTransport takes redis+sentinel:// URLs, got {url!r}")
        tls = scheme == "rediss+sentinel"
        connection_class = SSLConnection if tls else Connection
        accepted = (
            parameters(AbstractConnection.__init__, Connection.__init__, connection_class.__init__)
            | parameters(ConnectionPool.__init__)
            | _SENTINEL_OPTIONS
        ) - {"host", "port", "connection_class", "connection_pool", "ssl"}
        parsed = split_url(
            url,
            options,
            client_options=accepted,
            extra_own={"min_other_sentinels": int, "failover_check_interval": float},
        )
        sentinels, service_name, master = _parse_location(url)
        # What redis-py would read from a redis:// URL's query, read the same way.
        query = parsed.url.partition("?")[2]
        if query:
            master.update({k: v for k, v in parse_url(f"redis://h?{query}").items() if k != "host"})
        client = dict(parsed.client)
        sentinel_options = {
            "min_other_sentinels": parsed.own.pop(
                "min_other_sentinels", client.pop("min_other_sentinels", 0)
            ),
            "force_master_ip": client.pop("force_master_ip", None),
            "sentinel_kwargs": client.pop("sentinel_kwargs", None),
        }
        failover_check_interval = parsed.own.pop("failover_check_interval", 1.0)
        transport_options, master_options = split_options({**master, **client, **parsed.own})
        if sentinel_options["sentinel_kwargs"] is None:
            sentinel_options["sentinel_kwargs"] = _default_sentinel_kwargs(tls, master_options)
        if tls:
            master_options["ssl"] = True
        sentinel = Sentinel(sentinels, **sentinel_options)  # type: ignore[no-untyped-call]
        return cls(
            sentinel,
            service_name,
            master_options=master_options,
            close_sentinel=True,
            failover_check_interval=failover_check_interval,
            **vars(transport_options),
        )

    @property
    def identity(self) -> str:
        """The broker's identity joined with the master's ``run_id``: it changes on a failover."""
        base = super().identity
        link = self._link
        return f"{base}@{link.run_id}" if base and link is not None and link.run_id != base else base

    def open(self, handler: TransportHandler) -> AbstractAsyncContextManager[None]:
        """Ask the sentinels for the master, connect (waiting up to ``open_timeout``)
        and keep following the master."""
        return self._run_sentinel(handler)

    @asynccontextmanager
    async def _run_sentinel(self, handler: TransportHandler) -> AsyncIterator[None]:
        try:
            async with super().open(handler), background_tasks() as tasks:
                tasks.start_soon(self._follow_master)
                yield
        finally:
            self._pool.link_address = None
            if self._close_sentinel:
                with anyio.CancelScope(shield=True):
                    await self._sentinel.aclose()

    async def _follow_master(self) -> None:
        """Move the pub/sub link when the sentinels name another master."""
        while True:
            await anyio.sleep(self._failover_check_interval)
            link, connected_to = self._link, self._pool.link_address
            if link is None or not link.connected or connected_to is None:
                continue  # (re)connecting: it asks the sentinels anyway
            try:
                with anyio.fail_after(self._options.command_timeout):
                    # Also drops the pool's idle connections when the master moved.
                    address = await self._pool.get_master_address()  # type: ignore[no-untyped-call]
            except (RedisError, OSError) as exc:
                logger.debug("asking the sentinels for the master of %r failed: %s", self.service_name, exc)
                continue
            if tuple(address) != tuple(connected_to):
                logger.warning(
                    "the sentinels name %s:%s as the master of %r now; moving the pub/sub connection there",
                    address[0],
                    address[1],
                    self.service_name,
                )
                link.reconnect("the sentinels switched the master")


def _default_sentinel_kwargs(tls: bool, master_options: Mapping[str, Any]) -> dict[str, Any]:
    """How to talk to the sentinels: short timeouts, and TLS like the master's."""
    kwargs: dict[str, Any] = {
        "socket_timeout": _SENTINEL_TIMEOUT,
        "socket_connect_timeout": _SENTINEL_TIMEOUT,
    }
    if tls:
        kwargs["ssl"] = True
        kwargs.update({name: value for name, value in master_options.items() if name.startswith("ssl_")})
    return kwargs


def _parse_location(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """(sentinel addresses, service name, master options) of a Sentinel URL."""
    rest = url.partition("://")[2].partition("?")[0].partition("#")[0]
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    master: dict[str, Any] = {}
    if userinfo:
        username, has_password, password = userinfo.partition(":")
        if username:
            master["username"] = unquote(username)
        if has_password:
            master["password"] = unquote(password)
    sentinels = [_parse_address(part, url) for part in hosts.split(",")]
    segments = url_path_segments(path)
    if not segments or len(segments) > 2:
        raise ValueError(
            f"a Redis Sentinel URL names the service the sentinels monitor: "
            f"redis+sentinel://host:26379,host2:26379/mymaster/0, got {url!r}"
        )
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"the database in {url!r} must be a number, got {segments[1]!r}")
        master["db"] = int(segments[1])
    return sentinels, segments[0], master


def _parse_address(part: str, url: str) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [ipv6]:port
        host, _, tail = part[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise ValueError(f"empty sentinel address in {url!r}; separate sentinels with single commas")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad sentinel port {port_text!r} in {url!r}")
    return host, int(port_text)
