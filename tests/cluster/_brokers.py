"""The brokers the cluster suite runs against, and what it asks of them.

Each kind knows the URL an app node uses to reach it (through a :class:`TcpProxy`
when the node must be cut off on its own), how to crash and restart it, and how to
list the key channels still subscribed on it — the "nothing leaks" check looks at
the broker itself, not at what the nodes believe.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import redis

from tests._nats_servers import NatsCluster, NatsServer, jetstream_ready
from tests._redis_servers import RedisClusterServers, RedisServer
from tests.cluster._nodes import wait_until

__all__ = (
    "Address",
    "Broker",
    "ExternalBroker",
    "NatsBroker",
    "NatsClusterBroker",
    "RedisBroker",
    "RedisClusterBroker",
    "ServerFailover",
    "nats_key_subscriptions",
    "redis_key_subscriptions",
    "wait_nats_monitors_ready",
    "wait_nats_ready",
)

Address = tuple[str, int]


class Broker(Protocol):
    """One broker (or broker cluster) under the suite's app nodes."""

    kind: str
    #: Whether the suite started it, so it may kill and restart it.
    controllable: bool
    #: Whether a restart keeps markers and the broker identity (NATS with its store);
    #: a restart of Redis without persistence loses everything (new ``run_id``).
    restart_keeps_data: bool
    #: Whether a node's traffic can be routed through a :class:`TcpProxy`.
    proxyable: bool

    def addresses(self, node_index: int) -> list[Address]:
        """The servers node ``node_index`` connects to, preferred first."""
        ...

    def url(self, addresses: Sequence[Address]) -> str:
        """The broker URL for a node reaching the broker at ``addresses``."""
        ...

    def alive(self) -> bool: ...

    def kill(self) -> None:
        """SIGKILL every server."""
        ...

    def restart(self, *, keep_data: bool = True) -> None:
        """Start every server again on the same ports (with its data if it can)."""
        ...

    def key_subscriptions(self, namespace: str) -> list[str] | None:
        """The key channels (``<namespace>.k.*``) with a subscriber, as the broker sees
        it; ``None`` when the suite has no way to look."""
        ...


@runtime_checkable
class ServerFailover(Protocol):
    """A broker of several servers that can lose one (a node fails over to another)."""

    def kill_server(self, index: int) -> None:
        """SIGKILL server ``index`` alone."""
        ...

    def start_server(self, index: int) -> None:
        """Start server ``index`` again, with its data, and wait until it has rejoined."""
        ...


class RedisBroker:
    """One ``redis-server`` started by the fixtures (no persistence)."""

    kind = "redis"
    controllable = True
    restart_keeps_data = False
    proxyable = True

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def addresses(self, node_index: int) -> list[Address]:
        return [(self.server.host, self.server.port)]

    def url(self, addresses: Sequence[Address]) -> str:
        host, port = addresses[0]
        return f"redis://{host}:{port}/0"

    def alive(self) -> bool:
        return self.server.alive

    def kill(self) -> None:
        self.server.kill()

    def restart(self, *, keep_data: bool = True) -> None:
        self.server.restart()

    def key_subscriptions(self, namespace: str) -> list[str]:
        return redis_key_subscriptions(f"redis://{self.server.host}:{self.server.port}/0", namespace)


def redis_key_subscriptions(url: str, namespace: str) -> list[str]:
    """``PUBSUB CHANNELS <namespace>.k.*`` and their ``NUMSUB`` (both must say none)."""
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        channels = [name.decode() for name in client.pubsub_channels(f"{namespace}.k.*")]
        numsub = client.pubsub_numsub(*channels) if channels else []
    return [f"{name.decode()}={count}" for name, count in numsub if count]


class RedisClusterBroker:
    """A 3-master Redis Cluster; key channels use sharded pub/sub."""

    kind = "redis-cluster"
    controllable = True
    restart_keeps_data = False
    # A cluster client follows CLUSTER SLOTS to the real addresses: no proxy in between.
    proxyable = False

    def __init__(self, servers: RedisClusterServers) -> None:
        self.servers = servers

    def addresses(self, node_index: int) -> list[Address]:
        server = self.servers.servers[node_index % len(self.servers.servers)]
        return [(server.host, server.port)]

    def url(self, addresses: Sequence[Address]) -> str:
        host, port = addresses[0]
        return f"redis+cluster://{host}:{port}"

    def alive(self) -> bool:
        return all(server.alive for server in self.servers.servers)

    def kill(self) -> None:
        for server in self.servers.servers:
            server.kill()

    def restart(self, *, keep_data: bool = True) -> None:
        # Cluster nodes keep their nodes-*.conf, so they rejoin with their slots.
        for server in self.servers.servers:
            if not server.alive:
                server.start()
        self.servers.wait_healthy(20)

    def key_subscriptions(self, namespace: str) -> list[str]:
        left: list[str] = []
        for server in self.servers.servers:  # SHARDNUMSUB answers for its own shard only
            with redis.Redis(host=server.host, port=server.port, socket_timeout=5) as client:
                channels = client.execute_command("PUBSUB", "SHARDCHANNELS", f"{namespace}.k.*")
                if channels:
                    reply = client.execute_command("PUBSUB", "SHARDNUMSUB", *channels)
                    pairs = zip(reply[::2], reply[1::2], strict=True)
                    left += [f"{name.decode()}={count}@{server.port}" for name, count in pairs if count]
        return left


class NatsBroker:
    """One ``nats-server -js`` (JetStream store kept across restarts unless told)."""

    kind = "nats"
    controllable = True
    restart_keeps_data = True
    proxyable = True

    def __init__(self, server: NatsServer) -> None:
        self.servers = [server]

    def addresses(self, node_index: int) -> list[Address]:
        return [("127.0.0.1", server.port) for server in self.servers]

    def url(self, addresses: Sequence[Address]) -> str:
        return "nats://" + ",".join(f"{host}:{port}" for host, port in addresses)

    def alive(self) -> bool:
        return all(server.running for server in self.servers)

    def kill(self) -> None:
        for server in self.servers:
            server.kill()

    def restart(self, *, keep_data: bool = True) -> None:
        for server in self.servers:
            server.kill()
            if not keep_data:
                server.wipe_store()
        for server in self.servers:
            server.spawn()
        wait_nats_ready(self.servers)

    def key_subscriptions(self, namespace: str) -> list[str]:
        return nats_key_subscriptions(
            [f"http://127.0.0.1:{server.http_port}" for server in self.servers if server.running], namespace
        )


class NatsClusterBroker(NatsBroker):
    """Three routed ``nats-server -js``; node ``i`` attaches to server ``i`` first.

    The servers do not advertise each other to clients (``no_advertise``), so a node
    only knows the servers its URL lists — which keeps a proxied node behind its proxy.
    Markers live in a bucket with 3 replicas (``?replicas=3``).
    """

    kind = "nats-cluster"

    def __init__(self, cluster: NatsCluster) -> None:
        self.cluster = cluster
        self.servers = list(cluster.servers)

    def addresses(self, node_index: int) -> list[Address]:
        first = node_index % len(self.servers)
        ordered = self.servers[first:] + self.servers[:first]
        return [("127.0.0.1", server.port) for server in ordered]

    def url(self, addresses: Sequence[Address]) -> str:
        return super().url(addresses) + "?replicas=3"

    def kill_server(self, index: int) -> None:
        self.servers[index].kill()

    def start_server(self, index: int) -> None:
        self.servers[index].spawn()
        wait_nats_ready(self.servers)


def _monitor(base: str, path: str) -> Any:
    with urllib.request.urlopen(f"{base}{path}", timeout=2) as response:
        return json.load(response)


def wait_nats_ready(servers: Sequence[NatsServer], timeout: float = 30.0) -> None:
    """Wait (blocking) until every running server is healthy, routed to every other, and
    known to the JetStream meta leader as a current peer.

    Blocking on purpose: the suite calls it from inside its async tests, where
    ``anyio.run`` (what ``NatsServer.wait_ready`` needs) cannot run.
    """
    wait_nats_monitors_ready(
        {server.name: f"http://127.0.0.1:{server.http_port}" for server in servers if server.running}, timeout
    )


def wait_nats_monitors_ready(monitors: Mapping[str, str], timeout: float = 30.0) -> None:
    """:func:`wait_nats_ready` for the running servers ``monitors`` names: server name ->
    base URL of its monitoring port (``http://nats1:8222``)."""
    names = set(monitors)

    def ready() -> bool:
        for name, base in monitors.items():
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2).close()
            except urllib.error.HTTPError:
                return False
            if len(monitors) > 1:
                routes = _monitor(base, "/routez").get("routes") or []
                if {route.get("remote_name") for route in routes} < names - {name}:
                    return False
        if len(monitors) == 1:
            return True
        return jetstream_ready({name: _monitor(base, "/jsz") for name, base in monitors.items()})

    wait_until(ready, timeout, "the NATS servers becoming ready and routed")


def nats_key_subscriptions(monitor_urls: Sequence[str], namespace: str) -> list[str]:
    """Subjects of key channels subscribed by any client of these servers (``/connz``)."""
    marker = f".{namespace}.k."
    left: list[str] = []
    for base in monitor_urls:
        with urllib.request.urlopen(f"{base}/connz?subs=1&limit=100000", timeout=5) as response:
            body = json.load(response)
        for connection in body.get("connections") or []:
            left += [subject for subject in connection.get("subscriptions_list") or [] if marker in subject]
    return sorted(left)


class ExternalBroker:
    """A broker someone else runs (the Docker cluster): inspected, never restarted.

    ``SESSIONWS_BROKER_URL`` names it; for NATS, ``SESSIONWS_NATS_MONITOR`` lists the
    servers' monitoring URLs (``http://nats1:8222,...``) for the subscription check.
    """

    controllable = False
    restart_keeps_data = False
    proxyable = False

    def __init__(self, url: str, monitor_urls: Sequence[str] = ()) -> None:
        self.broker_url = url
        self.monitor_urls = list(monitor_urls)
        scheme = url.partition("://")[0].lower()
        self.kind = "external-" + ("redis" if scheme.startswith("redis") else "nats" if url else "unknown")

    @classmethod
    def from_environment(cls) -> ExternalBroker:
        monitors = os.environ.get("SESSIONWS_NATS_MONITOR", "")
        return cls(
            os.environ.get("SESSIONWS_BROKER_URL", ""), [url for url in monitors.split(",") if url.strip()]
        )

    def addresses(self, node_index: int) -> list[Address]:
        raise NotImplementedError("the suite does not start nodes against an external broker")

    def url(self, addresses: Sequence[Address]) -> str:
        return self.broker_url

    def alive(self) -> bool:
        return True

    def kill(self) -> None:
        raise NotImplementedError("an external broker is not the suite's to kill")

    def restart(self, *, keep_data: bool = True) -> None:
        raise NotImplementedError("an external broker is not the suite's to restart")

    def key_subscriptions(self, namespace: str) -> list[str] | None:
        if self.kind == "external-redis" and not self.broker_url.partition("://")[0].endswith("cluster"):
            return redis_key_subscriptions(self.broker_url, namespace)
        if self.kind == "external-nats" and self.monitor_urls:
            return nats_key_subscriptions(self.monitor_urls, namespace)
        return None
