"""Real ``redis-server`` processes for the tests: standalone and a 3-master cluster.

Every server is started by the tests themselves on a free loopback port (never the
system Redis on 6379), without persistence (``--save '' --appendonly no``), so a
SIGKILL + restart on the same port loses every key and comes back with a new
``run_id`` — exactly the broker restart the transports must detect. Processes
and their temporary directories are removed when the context managers exit.

Use them from a fixture::

    @pytest.fixture(scope="session")
    def redis_server() -> Iterator[RedisServer]:
        with running_redis() as server:
            yield server
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from redis.crc import key_slot

from tests._ports import free_port, pause_process, resume_process

__all__ = (
    "RedisClusterServers",
    "RedisServer",
    "running_redis",
    "running_redis_cluster",
)

_HOST = "127.0.0.1"
_START_TIMEOUT = 10.0
# The cluster bus listens on port + 10000, so cluster ports must leave room for it.
_CLUSTER_BUS_OFFSET = 10000


def _command(host: str, port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one inline command and return the raw reply (enough for PING and INFO)."""
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(" ".join(args).encode() + b"\r\n")
        reply = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return reply
            reply += chunk
            if reply.startswith((b"+", b"-", b":")) and reply.endswith(b"\r\n"):
                return reply
            if reply.startswith(b"$"):
                header, _, body = reply.partition(b"\r\n")
                if len(body) >= int(header[1:]) + 2:
                    return body[: int(header[1:])]


class RedisServer:
    """One ``redis-server`` process that can be SIGKILLed and restarted on its port."""

    def __init__(self, directory: Path, *, port: int | None = None, arguments: Sequence[str] = ()) -> None:
        self.directory = directory
        self.host = _HOST
        self.port = port if port is not None else free_port()
        self.arguments = tuple(arguments)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def alive(self) -> bool:
        """Whether the process runs (it may still be loading)."""
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> str:
        """The server's log, for failure messages."""
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self.alive:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", self.host,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", "redis.log",
                "--daemonize", "no",
                *self.arguments,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited at start:\n{self.log}")
            with contextlib.suppress(OSError):
                if _command(self.host, self.port, "PING") == b"+PONG\r\n":
                    return
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING in {_START_TIMEOUT} s")

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, no save, clients see the socket drop."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing is answered."""
        pause_process(self._process)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        resume_process(self._process)

    def restart(self) -> None:
        """Kill (if running) and start again on the same port, with no data."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the server for good (SIGTERM, then SIGKILL after 5 s)."""
        if self._process is not None and self._process.poll() is None:
            self.resume()
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None

    def command(self, *arguments: str) -> bytes:
        """Send one command (inline, so no spaces in arguments); the raw reply."""
        return _command(self.host, self.port, *arguments)

    def run_id(self) -> str:
        """The server's current ``run_id`` (new after every restart)."""
        info = _command(self.host, self.port, "INFO", "server").decode()
        for line in info.splitlines():
            if line.startswith("run_id:"):
                return line.partition(":")[2].strip()
        raise RuntimeError("INFO server has no run_id")


class RedisClusterServers:
    """Three cluster-enabled masters (no replicas) covering all 16384 slots."""

    def __init__(self, directory: Path, *, size: int = 3, arguments: Sequence[str] = ()) -> None:
        self.directory = directory
        self.servers = [self._node(directory / f"node{index}", arguments) for index in range(size)]

    @staticmethod
    def _node(directory: Path, extra: Sequence[str] = ()) -> RedisServer:
        port = free_port(room_above=_CLUSTER_BUS_OFFSET)
        arguments = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
        # Well above a kill + restart, so a restarted master is never declared failed.
        arguments += ["--cluster-node-timeout", "5000", *extra]
        return RedisServer(directory, port=port, arguments=arguments)

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL of the first node (the others are discovered)."""
        first = self.servers[0]
        return f"redis+cluster://{first.host}:{first.port}"

    def start(self) -> None:
        """Start the nodes, join them into one cluster and wait until it is healthy."""
        for server in self.servers:
            server.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster", "create",
                *(f"{server.host}:{server.port}" for server in self.servers),
                "--cluster-replicas", "0",
                "--cluster-yes",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=30,
        )  # fmt: skip
        self.wait_healthy()

    def wait_healthy(self, timeout: float = _START_TIMEOUT) -> None:
        """Wait until every node reports ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if all(
                    b"cluster_state:ok" in _command(server.host, server.port, "CLUSTER", "INFO")
                    for server in self.servers
                ):
                    return
            time.sleep(0.01)
        raise RuntimeError(f"the test Redis Cluster did not become healthy in {timeout} s")

    def server_for(self, key: str) -> RedisServer:
        """The master that owns ``key``'s hash slot."""
        slot = key_slot(key.encode())
        first = next(server for server in self.servers if server.alive)
        nodes = _command(first.host, first.port, "CLUSTER", "NODES").decode()
        for line in nodes.splitlines():
            fields = line.split()
            address = fields[1].partition("@")[0]
            for ranges in fields[8:]:
                low, _, high = ranges.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return next(
                        server for server in self.servers if f"{server.host}:{server.port}" == address
                    )
        raise RuntimeError(f"no master owns slot {slot}")

    def restart(self, server: RedisServer) -> None:
        """Restart one (killed) master on its port and wait for the cluster to heal."""
        server.restart()
        self.wait_healthy()

    def stop(self) -> None:
        """Stop every node."""
        for server in self.servers:
            server.stop()


# A free port can be taken between probing it and the server binding it; a few
# attempts with fresh ports make the fixtures immune to that race.
_START_ATTEMPTS = 3


@contextlib.contextmanager
def running_redis(arguments: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A standalone server in a temporary directory, stopped and removed on exit."""
    directory = Path(tempfile.mkdtemp(prefix="sessionws-redis-"))
    try:
        for attempt in range(_START_ATTEMPTS):
            server = RedisServer(directory / str(attempt), arguments=arguments)
            try:
                server.start()
                break
            except RuntimeError:
                server.stop()
                if attempt == _START_ATTEMPTS - 1:
                    raise
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def running_redis_cluster(arguments: Sequence[str] = ()) -> Iterator[RedisClusterServers]:
    """A 3-master cluster in a temporary directory, stopped and removed on exit
    (``arguments`` go to every ``redis-server``)."""
    directory = Path(tempfile.mkdtemp(prefix="sessionws-redis-cluster-"))
    try:
        for attempt in range(_START_ATTEMPTS):
            cluster = RedisClusterServers(directory / str(attempt), arguments=arguments)
            try:
                cluster.start()
                break
            except (RuntimeError, subprocess.CalledProcessError):
                cluster.stop()
                if attempt == _START_ATTEMPTS - 1:
                    raise
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
