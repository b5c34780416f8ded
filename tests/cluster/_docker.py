"""The cluster under test as a compose project: faults through the Docker Engine.

The runner container of ``docker/compose.cluster*.yml`` has the engine's socket
mounted; with ``SESSIONWS_DOCKER_KIND`` set it finds the containers of its own compose
project by their labels and drives them as the local suite drives processes:

* a node: ``kill`` (SIGKILL), ``pause``/``unpause`` (the cgroup freezer: alive for TCP,
  silent otherwise, as SIGSTOP), ``start`` again;
* the broker: SIGKILL every server container, start them again, with their data (a
  NATS store on a volume) or without it (the volume, mounted into the runner too, is
  emptied first); one NATS server of a cluster, for failover;
* node 3 reaches the broker through the ``proxy`` service (a :class:`TcpProxy` per
  broker address), which the runner cuts and restores over its control port; where no
  proxy fits (Redis Cluster) an iptables rule in node 3's network namespace cuts it
  off (:class:`NetworkCut`).

Environment of the runner (the compose files set it):

===========================  ==================================================
``SESSIONWS_DOCKER_KIND``    ``redis``, ``redis-cluster``, ``nats``, ``nats-cluster``
``SESSIONWS_DOCKER_BROKERS`` the broker's services, comma-separated (``nats1,nats2,nats3``)
``SESSIONWS_DOCKER_PROXY``   the proxy's control URL (``http://proxy:8474``), if any
``SESSIONWS_DOCKER_CUT``     ``network``: cut node 3 off with :class:`NetworkCut` instead
``SESSIONWS_NODES``          the nodes' URLs; their host names are their services
===========================  ==================================================
"""

from __future__ import annotations

import os
import shutil
import socket
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from tests.cluster._brokers import (
    Address,
    Broker,
    nats_key_subscriptions,
    redis_key_subscriptions,
    wait_nats_monitors_ready,
)
from tests.cluster._engine import Container, DockerEngine
from tests.cluster._nodes import Node, wait_healthy, wait_until
from tests.cluster._proxy import Cuttable

__all__ = ("ContainerNode", "NetworkCut", "ProxyControl", "docker_parts")

_PROJECT = "com.docker.compose.project"
_SERVICE = "com.docker.compose.service"
_ONE_OFF = "com.docker.compose.oneoff"
#: Where the runner mounts a broker's data volume (``/brokers/<service>``).
DATA_ROOT = Path("/brokers")
_START_TIMEOUT = 30.0


class ComposeProject:
    """The containers of one compose project, found by their compose labels."""

    def __init__(self, engine: DockerEngine, name: str) -> None:
        self.engine = engine
        self.name = name

    @classmethod
    def of_this_container(cls, engine: DockerEngine) -> ComposeProject:
        """The project of the container this runs in (its host name is its id)."""
        labels = engine.container(socket.gethostname()).inspect()["Config"]["Labels"] or {}
        if _PROJECT not in labels:
            raise RuntimeError(
                "SESSIONWS_DOCKER_KIND is set, but this container was not started by docker compose "
                "(no compose project label): run the runner with `docker compose ... run tests`"
            )
        return cls(engine, labels[_PROJECT])

    def service(self, name: str) -> Container:
        """The one (non one-off) container of service ``name``."""
        found = [
            listed
            for listed in self.engine.containers({_PROJECT: self.name, _SERVICE: name})
            if (listed.get("Labels") or {}).get(_ONE_OFF, "False") != "True"
        ]
        if len(found) != 1:
            raise RuntimeError(
                f"compose project {self.name!r} has {len(found)} containers of service {name!r}, "
                "the suite needs exactly one: start the project with the compose file's own services"
            )
        return self.engine.container(str(found[0]["Id"]))


class ContainerNode(Node):
    """An app node in its own container, killed, paused and started by the runner."""

    def __init__(self, url: str, index: int, container: Container) -> None:
        self.url = url.rstrip("/")
        self.name = f"node{index + 1}"
        self.container = container

    @property
    def alive(self) -> bool:
        return self.container.running

    def spawn(self) -> None:
        if not self.alive:
            self.container.start()

    def wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        wait_healthy(self, timeout)

    def kill(self) -> None:
        """SIGKILL the container: its clients' connections drop, its peers hear nothing more."""
        if self.alive:
            self.container.kill()
            self.container.wait_stopped()

    def pause(self) -> None:
        """Freeze the container: its sockets stay open, it answers nothing."""
        if self.alive:
            self.container.pause()

    def resume(self) -> None:
        if self.alive and self.container.paused:
            self.container.unpause()

    def log_tail(self, lines: int = 30) -> str:
        text = self.container.log_tail(lines)
        return "\n".join(f"  {self.name}| {line}" for line in text.splitlines())


class ProxyControl:
    """The ``proxy`` service's control port: cut node 3 off the broker, or restore it."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _post(self, path: str) -> None:
        request = urllib.request.Request(f"{self.url}{path}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def cut(self) -> None:
        self._post("/cut")

    def restore(self) -> None:
        self._post("/restore")


class NetworkCut:
    """Cut a node off the broker inside its own network namespace, for brokers a proxy
    cannot stand in front of (a Redis Cluster client follows ``CLUSTER SLOTS`` to the
    masters' own addresses).

    A short-lived container joins the node's network namespace (``container:<id>``, with
    ``NET_ADMIN``) and adds an iptables rule that answers every TCP packet from the node
    to the broker containers with a reset: open connections drop at once, new ones are
    refused, while the runner still reaches the node. ``restore()`` deletes the rule.
    The helper runs the runner's own image as root (the image carries iptables).
    """

    def __init__(self, engine: DockerEngine, node: Container, brokers: Sequence[Container]) -> None:
        self.engine = engine
        self.node = node
        self.brokers = list(brokers)
        self._rule: list[str] | None = None
        self._incoming: list[str] | None = None

    def _addresses(self) -> list[str]:
        addresses = []
        for broker in self.brokers:
            networks = broker.inspect()["NetworkSettings"]["Networks"] or {}
            addresses += [
                str(network["IPAddress"]) for network in networks.values() if network.get("IPAddress")
            ]
        if not addresses:
            raise RuntimeError(
                "the broker containers have no address to cut node 3 off from (are they running?)"
            )
        return addresses

    def _iptables(self, action: str, rule: Sequence[str], chain: str = "OUTPUT") -> tuple[int, str]:
        image = self.engine.container(socket.gethostname()).inspect()["Image"]
        return self.engine.run(
            {
                "Image": image,
                "User": "0",
                "Entrypoint": ["iptables"],
                "Cmd": [action, chain, *rule],
                "HostConfig": {"NetworkMode": f"container:{self.node.reference}", "CapAdd": ["NET_ADMIN"]},
            }
        )

    def cut(self) -> None:
        if self._rule is not None:
            return
        addresses = ",".join(self._addresses())
        # Incoming first: what the brokers already send (a close published right after the
        # cut) must not reach the node either, as through a cut proxy.
        incoming = ["-s", addresses, "-p", "tcp", "-j", "DROP"]
        status, output = self._iptables("-I", incoming, "INPUT")
        if status != 0:
            raise RuntimeError(f"could not cut node 3 off (iptables -I INPUT {' '.join(incoming)}): {output}")
        self._incoming = incoming
        rule = ["-d", addresses, "-p", "tcp"]
        rule += ["-j", "REJECT", "--reject-with", "tcp-reset"]
        status, output = self._iptables("-I", rule)
        if status != 0:
            raise RuntimeError(f"could not cut node 3 off (iptables -I OUTPUT {' '.join(rule)}): {output}")
        self._rule = rule

    def restore(self) -> None:
        if self._rule is None:
            return
        if self._incoming is not None:
            self._iptables("-D", self._incoming, "INPUT")
            self._incoming = None
        status, output = self._iptables("-D", self._rule)
        # A node container started again since has a new namespace, without the rule.
        if status != 0 and self._iptables("-C", self._rule)[0] == 0:
            rule = " ".join(self._rule)
            raise RuntimeError(f"could not restore node 3 (iptables -D OUTPUT {rule}): {output}")
        self._rule = None


class _ContainerBroker:
    """What the broker containers share: kill, start, and the data volumes."""

    kind: str
    controllable = True
    restart_keeps_data = False
    proxyable = True

    def __init__(self, url: str, services: Sequence[str], containers: Sequence[Container]) -> None:
        self.broker_url = url
        self.services = list(services)
        self.containers = list(containers)

    def addresses(self, node_index: int) -> list[Address]:
        raise NotImplementedError("the compose file configures the nodes' broker addresses")

    def url(self, addresses: Sequence[Address]) -> str:
        return self.broker_url

    def alive(self) -> bool:
        return all(container.running for container in self.containers)

    def kill(self) -> None:
        """SIGKILL every server container."""
        for container in self.containers:
            if container.running:
                container.kill()
        for container in self.containers:
            container.wait_stopped()

    def _wipe(self, service: str) -> None:
        """Empty a stopped server's data volume (mounted at ``/brokers/<service>``)."""
        directory = DATA_ROOT / service
        if not directory.is_dir():
            raise RuntimeError(
                f"cannot restart {service} without its data: its data volume is not mounted "
                f"into the runner at {directory}"
            )
        for entry in directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _start(self, indexes: Sequence[int], *, keep_data: bool) -> None:
        for index in indexes:
            container = self.containers[index]
            if container.running:
                container.kill()
                container.wait_stopped()
            if not keep_data and self.restart_keeps_data:
                self._wipe(self.services[index])
        for index in indexes:
            self.containers[index].start()

    def restart(self, *, keep_data: bool = True) -> None:
        """Start every server again (a broker without persistence comes back empty anyway)."""
        self._start(range(len(self.containers)), keep_data=keep_data)
        self.wait_ready()

    def wait_ready(self) -> None:
        raise NotImplementedError

    def key_subscriptions(self, namespace: str) -> list[str] | None:
        raise NotImplementedError


class DockerRedisBroker(_ContainerBroker):
    """One ``redis-server`` container, without persistence: a restart loses everything."""

    kind = "redis"

    def wait_ready(self) -> None:
        def pong() -> bool:
            with redis.Redis.from_url(self.broker_url, socket_timeout=2) as client:
                return bool(client.ping())

        wait_until(_quiet(pong), _START_TIMEOUT, f"{self.services[0]} answering PING")

    def key_subscriptions(self, namespace: str) -> list[str]:
        return redis_key_subscriptions(self.broker_url, namespace)


class DockerRedisClusterBroker(_ContainerBroker):
    """Three cluster-enabled masters (fixed addresses: they find each other after a
    restart from their ``nodes.conf``); a restart keeps the slots, not the data."""

    kind = "redis-cluster"
    # A cluster client follows CLUSTER SLOTS to the real addresses: no proxy in between.
    proxyable = False

    def _client(self, service: str) -> redis.Redis:
        return redis.Redis(host=service, port=6379, socket_timeout=5)

    def wait_ready(self) -> None:
        def healthy() -> bool:
            for service in self.services:
                with self._client(service) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    state = info.get("cluster_state") if isinstance(info, dict) else None
                    if state != "ok" and b"cluster_state:ok" not in _as_bytes(info):
                        return False
            return True

        wait_until(_quiet(healthy), _START_TIMEOUT, "the Redis Cluster reporting cluster_state:ok")

    def key_subscriptions(self, namespace: str) -> list[str]:
        left: list[str] = []
        for service in self.services:  # SHARDNUMSUB answers for its own shard only
            with self._client(service) as client:
                channels = client.execute_command("PUBSUB", "SHARDCHANNELS", f"{namespace}.k.*")
                if channels:
                    reply = client.execute_command("PUBSUB", "SHARDNUMSUB", *channels)
                    pairs = zip(reply[::2], reply[1::2], strict=True)
                    left += [f"{name.decode()}={count}@{service}" for name, count in pairs if count]
        return left


class DockerNatsBroker(_ContainerBroker):
    """``nats-server -js`` containers, each with its store on a volume (kept across restarts)."""

    kind = "nats"
    restart_keeps_data = True

    def __init__(
        self, url: str, services: Sequence[str], containers: Sequence[Container], monitors: Sequence[str]
    ) -> None:
        super().__init__(url, services, containers)
        if len(monitors) != len(services):
            raise ValueError(
                f"SESSIONWS_NATS_MONITOR lists {len(monitors)} URL(s) for {len(services)} NATS "
                "server(s): give one monitoring URL per server, in the same order"
            )
        self.monitors = list(monitors)

    def _running_monitors(self) -> dict[str, str]:
        return {
            service: monitor
            for service, monitor, container in zip(self.services, self.monitors, self.containers, strict=True)
            if container.running
        }

    def wait_ready(self) -> None:
        wait_nats_monitors_ready(self._running_monitors(), _START_TIMEOUT)

    def key_subscriptions(self, namespace: str) -> list[str]:
        return nats_key_subscriptions(list(self._running_monitors().values()), namespace)


class DockerNatsClusterBroker(DockerNatsBroker):
    """Three routed ``nats-server -js`` containers; node ``i`` attaches to server ``i`` first."""

    kind = "nats-cluster"

    def kill_server(self, index: int) -> None:
        self.containers[index].kill()
        self.containers[index].wait_stopped()

    def start_server(self, index: int) -> None:
        self._start([index], keep_data=True)
        self.wait_ready()


def _as_bytes(reply: Any) -> bytes:
    return reply if isinstance(reply, bytes) else str(reply).encode()


def _quiet(condition: Any) -> Any:
    """``condition`` with a broker's connection errors read as "not yet"."""

    def checked() -> bool:
        try:
            return bool(condition())
        except (redis.RedisError, OSError):
            return False

    return checked


def _listed(variable: str) -> list[str]:
    return [part.strip() for part in os.environ.get(variable, "").split(",") if part.strip()]


def docker_parts(node_urls: Sequence[str]) -> tuple[str, Broker, list[ContainerNode], Cuttable | None]:
    """The kind, broker, nodes and (if any) the proxy that cuts node 3 off, of this project."""
    kind = os.environ["SESSIONWS_DOCKER_KIND"]
    engine = DockerEngine()
    if not Path(engine.socket_path).exists():
        raise RuntimeError(
            f"SESSIONWS_DOCKER_KIND={kind} asks for faults through the Docker Engine, but its socket "
            f"{engine.socket_path} is not here: mount it into the runner "
            "(-v /var/run/docker.sock:/var/run/docker.sock), or unset SESSIONWS_DOCKER_KIND "
            "to run without the fault tests"
        )
    project = ComposeProject.of_this_container(engine)
    nodes = [
        ContainerNode(url, index, project.service(str(urllib.parse.urlsplit(url).hostname)))
        for index, url in enumerate(node_urls)
    ]
    services = _listed("SESSIONWS_DOCKER_BROKERS")
    if not services:
        raise ValueError("SESSIONWS_DOCKER_BROKERS is empty: name the broker's services (e.g. redis)")
    containers = [project.service(service) for service in services]
    url = os.environ.get("SESSIONWS_BROKER_URL", "")
    broker: Broker
    if kind == "redis":
        broker = DockerRedisBroker(url, services, containers)
    elif kind == "redis-cluster":
        broker = DockerRedisClusterBroker(url, services, containers)
    elif kind == "nats":
        broker = DockerNatsBroker(url, services, containers, _listed("SESSIONWS_NATS_MONITOR"))
    elif kind == "nats-cluster":
        broker = DockerNatsClusterBroker(url, services, containers, _listed("SESSIONWS_NATS_MONITOR"))
    else:
        raise ValueError(
            f"SESSIONWS_DOCKER_KIND={kind!r} is not a cluster kind; known: redis, redis-cluster, "
            "nats, nats-cluster"
        )
    cut: Cuttable | None = None
    if os.environ.get("SESSIONWS_DOCKER_PROXY"):
        cut = ProxyControl(os.environ["SESSIONWS_DOCKER_PROXY"])
    elif os.environ.get("SESSIONWS_DOCKER_CUT") == "network":
        cut = NetworkCut(engine, nodes[2].container, containers)
    return kind, broker, nodes, cut
