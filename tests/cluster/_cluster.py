"""The cluster under test: a broker, three app nodes, and the proxy of the cut-off node.

:func:`local_cluster` starts everything on loopback (the suite owns the processes);
:func:`external_cluster` describes nodes someone else runs (``SESSIONWS_NODES``, the
Docker runner), where the tests that kill or pause processes skip.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests._nats_servers import NatsCluster, NatsServer, nats_server_binary
from tests._redis_servers import running_redis, running_redis_cluster
from tests.cluster._brokers import (
    Broker,
    ExternalBroker,
    NatsBroker,
    NatsClusterBroker,
    RedisBroker,
    RedisClusterBroker,
    wait_nats_ready,
)
from tests.cluster._nodes import (
    ControlledNode,
    ExternalNode,
    Node,
    NodeProcess,
    start_nodes,
    stop_nodes,
    wait_until,
)
from tests.cluster._proxy import Cuttable, TcpProxy

__all__ = (
    "CLUSTER_KINDS",
    "HEARTBEAT",
    "NAMESPACE",
    "PROXIED",
    "SILENCE_WINDOW",
    "Cluster",
    "external_cluster",
    "local_cluster",
    "nats_cluster",
)

_AIOHTTP = ("aiohttp", "aiohttp", "aiohttp")
#: The clusters the suite runs against when it starts its own: kind -> (broker, the
#: framework of each node). "redis-mixed" runs nodes 2 and 3 on Starlette: one
#: session cookie, one broker, two adapters.
CLUSTER_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "redis": ("redis", _AIOHTTP),
    "redis-mixed": ("redis", ("aiohttp", "starlette", "starlette")),
    "nats": ("nats", _AIOHTTP),
    "nats-cluster": ("nats-cluster", _AIOHTTP),
    "redis-cluster": ("redis-cluster", _AIOHTTP),
}
#: The nodes' registry namespace (the node app's default).
NAMESPACE = "cluster"
#: The node that reaches the broker through a proxy the tests can cut.
PROXIED = 2
#: The node app's heartbeat interval, and how long a node that fell silent without a
#: goodbye stays expected by confirmed commands (30 heartbeats).
HEARTBEAT = 0.2
SILENCE_WINDOW = 30 * HEARTBEAT
#: Membership and health settle within a few heartbeats (0.2 s); this is generous.
_SETTLE = 10.0


class Cluster:
    """Three nodes and their broker, as the tests see them."""

    def __init__(
        self,
        broker: Broker,
        nodes: Sequence[Node],
        *,
        kind: str | None = None,
        proxies: dict[int, list[Cuttable]] | None = None,
    ) -> None:
        self.broker = broker
        self.nodes = list(nodes)
        self.kind = kind or broker.kind
        self.proxies = proxies or {}

    @property
    def external(self) -> bool:
        return not all(isinstance(node, ControlledNode) for node in self.nodes)

    def url(self, index: int) -> str:
        return self.nodes[index].url

    # ------------------------------------------------------------------ control
    def process(self, index: int) -> ControlledNode:
        """Node ``index``, to kill or pause; skips the test when the suite does not own it."""
        node = self.nodes[index]
        if not isinstance(node, ControlledNode):
            pytest.skip(
                "kills or pauses a node process; the nodes are external (SESSIONWS_NODES): run the "
                "suite without SESSIONWS_NODES to start them locally, or with scripts/docker-suite"
            )
        return node

    def require_broker_control(self) -> Broker:
        if not self.broker.controllable:
            pytest.skip(
                "kills or restarts the broker; the broker is external (SESSIONWS_NODES): run the "
                "suite without SESSIONWS_NODES to start it locally, or with scripts/docker-suite"
            )
        return self.broker

    def require_proxy(self) -> int:
        """The index of the node that can be cut off from the broker (skips if none)."""
        if PROXIED not in self.proxies:
            reason = (
                "the nodes are external (SESSIONWS_NODES)"
                if self.external
                else f"a {self.kind} client follows the cluster's own addresses, past any proxy"
            )
            pytest.skip(f"cuts one node off the broker through a TCP proxy; {reason}")
        return PROXIED

    def cut(self, index: int) -> None:
        for proxy in self.proxies[index]:
            proxy.cut()

    def restore(self, index: int) -> None:
        for proxy in self.proxies[index]:
            proxy.restore()

    # ------------------------------------------------------------------ state
    def node_id(self, index: int) -> str:
        """The registry node id of node ``index`` (new after each restart)."""
        return str(self.nodes[index].health()["node"])

    def node_ids(self) -> list[str]:
        return [self.node_id(index) for index in range(len(self.nodes))]

    def ensure_ready(self) -> None:
        """Undo what the last test did (cut, paused, killed) and wait for a full membership."""
        for index in self.proxies:
            self.restore(index)
        processes = [node for node in self.nodes if isinstance(node, ControlledNode)]
        if self.broker.controllable and not self.broker.alive():
            self.broker.restart(keep_data=True)
        for process in processes:
            process.resume()
        start_nodes([process for process in processes if not process.alive])
        try:
            self.wait_membership(SILENCE_WINDOW + _SETTLE / 2)
        except TimeoutError as error:
            # A node stuck unhealthy (a failed test found a bug) must not fail every
            # later test too: restart it, and say so.
            stuck = [process for process in processes if not _healthy(process)]
            if not stuck:
                raise
            print(f"\nrestarting {[node.name for node in stuck]}, stuck after the last test: {error}")
            for process in stuck:
                process.kill()
            start_nodes(stuck)
            self.wait_membership()

    def wait_membership(self, timeout: float = _SETTLE) -> None:
        """Wait until every node is healthy and knows exactly the other (current) nodes."""
        try:
            wait_until(self._membership_complete, timeout, "a healthy cluster with a full membership")
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{self.describe()}") from None

    def _membership_complete(self) -> bool:
        healths = [node.health() for node in self.nodes]
        ids = {str(health["node"]) for health in healths}
        return all(
            health["healthy"]
            and set(health["live_nodes"]) == ids - {health["node"]}
            and not health.get("silent_nodes")  # a killed node's id is expected for its window
            for health in healths
        )

    def wait_live(self, index: int, expected: set[str], timeout: float = _SETTLE) -> None:
        """Wait until node ``index`` sees exactly ``expected`` as its live peers."""
        wait_until(
            lambda: set(self.nodes[index].health()["live_nodes"]) == expected,
            timeout,
            f"{self.nodes[index].name} seeing exactly {sorted(expected)}",
        )

    def describe(self) -> str:
        """Health and log tails of every node, for failure messages."""
        lines = [f"broker {self.kind}"]
        for node in self.nodes:
            try:
                lines.append(f"{node.name}: {node.health()}")
            except OSError as error:
                lines.append(f"{node.name}: unreachable ({error})")
            if isinstance(node, ControlledNode):
                lines.append(node.log_tail(15))
        return "\n".join(lines)


def _healthy(node: Node) -> bool:
    try:
        return bool(node.health()["healthy"])
    except OSError:
        return False


@contextlib.contextmanager
def nats_cluster() -> Iterator[NatsCluster]:
    """Three routed ``nats-server -js`` that do not advertise each other to clients
    (``no_advertise``): a client knows the servers its URL lists, and nothing else."""
    cluster = NatsCluster(nats_server_binary())
    try:
        for server in cluster.servers:
            if server.cluster is not None:
                server.cluster["no_advertise"] = True
            server.spawn()
        wait_nats_ready(cluster.servers)
        yield cluster
    finally:
        cluster.close()


@contextlib.contextmanager
def _broker(kind: str, redis_arguments: Sequence[str] = ()) -> Iterator[Broker]:
    if kind == "redis":
        with running_redis(redis_arguments) as redis_server:
            yield RedisBroker(redis_server)
    elif kind == "redis-cluster":
        with running_redis_cluster(redis_arguments) as redis_servers:
            yield RedisClusterBroker(redis_servers)
    elif kind == "nats":
        nats_server = NatsServer(nats_server_binary())
        try:
            nats_server.start_blocking()
            yield NatsBroker(nats_server)
        finally:
            nats_server.close()
    elif kind == "nats-cluster":
        with nats_cluster() as cluster:
            yield NatsClusterBroker(cluster)
    else:
        raise ValueError(f"unknown broker kind {kind!r}")


@contextlib.contextmanager
def local_cluster(
    kind: str,
    directory: Path,
    *,
    node_arguments: Sequence[str] = (),
    redis_arguments: Sequence[str] = (),
) -> Iterator[Cluster]:
    """The broker and node processes of ``kind`` on loopback; all stopped on exit.

    ``node_arguments`` are more flags of every node (``tests.cluster.node``);
    ``redis_arguments`` go to every ``redis-server`` (e.g. persistence).
    """
    if kind not in CLUSTER_KINDS:
        raise ValueError(f"unknown cluster kind {kind!r}; known: {', '.join(CLUSTER_KINDS)}")
    broker_kind, frameworks = CLUSTER_KINDS[kind]
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(_broker(broker_kind, redis_arguments))
        nodes: list[NodeProcess] = []
        proxies: dict[int, list[Cuttable]] = {}
        for index, framework in enumerate(frameworks):
            addresses = broker.addresses(index)
            if index == PROXIED and broker.proxyable:
                started = [TcpProxy(host, port) for host, port in addresses]
                for proxy in started:
                    proxy.start()
                    stack.callback(proxy.close)
                proxies[index] = list(started)
                addresses = [("127.0.0.1", proxy.port) for proxy in started]
            node = NodeProcess(f"node{index + 1}", broker.url(addresses), directory, framework=framework)
            node.arguments = list(node_arguments)
            nodes.append(node)
        stack.callback(stop_nodes, nodes)
        cluster = Cluster(broker, nodes, kind=kind, proxies=proxies)
        try:
            start_nodes(nodes)
            cluster.wait_membership()
        except (TimeoutError, RuntimeError, subprocess.SubprocessError) as error:
            raise RuntimeError(f"the {kind} cluster did not start: {error}\n{cluster.describe()}") from None
        yield cluster


def external_cluster() -> Cluster | None:
    """The nodes ``SESSIONWS_NODES`` lists (comma-separated base URLs), or ``None``.

    With ``SESSIONWS_DOCKER_KIND`` (the compose files' runner) they and their broker are
    containers of this compose project, driven through the Docker Engine.
    """
    listed = [url.strip() for url in os.environ.get("SESSIONWS_NODES", "").split(",") if url.strip()]
    if not listed:
        return None
    if len(listed) < 3:
        raise ValueError(f"SESSIONWS_NODES lists {len(listed)} node(s); the cluster suite needs 3")
    if os.environ.get("SESSIONWS_DOCKER_KIND"):
        from tests.cluster._docker import docker_parts

        kind, broker, containers, proxy = docker_parts(listed)
        proxies: dict[int, list[Cuttable]] = {PROXIED: [proxy]} if proxy is not None else {}
        return Cluster(broker, containers, kind=kind, proxies=proxies)
    return Cluster(ExternalBroker.from_environment(), [ExternalNode(url, i) for i, url in enumerate(listed)])
