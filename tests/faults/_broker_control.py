"""What the nemesis does to a broker: freeze it, crash it, restart it with or without
its data, fail one server of a NATS cluster over.

Redis runs with AOF (``appendfsync always``): a restart "with persistence" replays the
AOF; a restart "without persistence" wipes the AOF and RDB files and runs the server
with ``--appendonly no`` until the next restart (so the restart after that loses the
data too, and is recorded so). NATS keeps or wipes each server's JetStream store.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from tests._nats_servers import NatsServer
from tests._redis_servers import RedisServer
from tests.cluster._brokers import NatsBroker, NatsClusterBroker, RedisBroker, RedisClusterBroker
from tests.cluster._cluster import Cluster

__all__ = ("PERSISTENT_REDIS", "BrokerControl")

#: Every write reaches the disk before Redis answers it.
PERSISTENT_REDIS = ("--appendonly", "yes", "--appendfsync", "always")
_VOLATILE_REDIS = ("--appendonly", "no")


class BrokerControl:
    """The broker servers of one cluster, as processes to freeze, kill and restart."""

    def __init__(self, cluster: Cluster) -> None:
        broker = cluster.broker
        self.kind = broker.kind
        self.broker = broker
        self.redis: list[RedisServer] = []
        self.nats: list[NatsServer] = []
        if isinstance(broker, RedisBroker):
            self.redis = [broker.server]
        elif isinstance(broker, RedisClusterBroker):
            self.redis = list(broker.servers.servers)
        elif isinstance(broker, NatsBroker):
            self.nats = list(broker.servers)
        else:
            raise TypeError(f"the campaign cannot control a {self.kind} broker")
        # Each server's flags without the persistence flags the campaign started it with.
        self._base = [_without(server.arguments, PERSISTENT_REDIS) for server in self.redis]
        #: Whether the running Redis servers write an AOF (a restart then keeps the data).
        self.persistent = bool(self.redis)

    @property
    def failover_servers(self) -> int:
        """How many servers can fail over one by one (a NATS cluster), else 0."""
        return len(self.nats) if isinstance(self.broker, NatsClusterBroker) else 0

    def pause(self) -> None:
        for redis_server in self.redis:
            redis_server.pause()
        for nats_server in self.nats:
            nats_server.pause()

    def resume(self) -> None:
        for redis_server in self.redis:
            redis_server.resume()
        for nats_server in self.nats:
            nats_server.resume()

    def kill(self) -> None:
        self.broker.kill()

    def restart(self, *, keep_data: bool) -> bool:
        """Start every server again (after :meth:`kill`); whether the data survived."""
        if self.nats:
            self.broker.restart(keep_data=keep_data)
            return keep_data
        kept = keep_data and self.persistent
        for server, base in zip(self.redis, self._base, strict=True):
            server.kill()
            if not keep_data:
                shutil.rmtree(server.directory / "appendonlydir", ignore_errors=True)
                for dump in server.directory.glob("*.rdb"):
                    dump.unlink()
            server.arguments = (*base, *(PERSISTENT_REDIS if keep_data else _VOLATILE_REDIS))
            server.start()
        if isinstance(self.broker, RedisClusterBroker):
            self.broker.servers.wait_healthy(30)
        self.persistent = keep_data
        return kept

    def kill_server(self, index: int) -> None:
        """SIGKILL one server of a NATS cluster (its peers carry on)."""
        self.nats[index].kill()

    def start_server(self, index: int) -> None:
        """Start it again with its store, and wait until the cluster is routed again."""
        broker = self.broker
        if not isinstance(broker, NatsClusterBroker):
            raise TypeError("only a NATS cluster fails over server by server")
        broker.start_server(index)

    def ensure_running(self) -> None:
        """Resume and restart whatever the run left stopped (before the final checks)."""
        self.resume()
        if not self.broker.alive():
            self.restart(keep_data=True)


def _without(arguments: Sequence[str], tail: Sequence[str]) -> tuple[str, ...]:
    arguments = tuple(arguments)
    if arguments[len(arguments) - len(tail) :] == tuple(tail):
        return arguments[: len(arguments) - len(tail)]
    return arguments
