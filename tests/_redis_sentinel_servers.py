"""A Redis Sentinel deployment of our own: a master, a replica and three sentinels.

Every process runs on a free loopback port in a temporary directory, without
persistence. Sentinels are ``redis-server sentinel.conf --sentinel`` with a config
written here; ``down_after_ms`` decides how soon they fail a dead master over (the
contract suite uses a long one, so a killed broker stays killed; the failover tests
a short one). Use :func:`running_sentinel_group` from a fixture.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from tests._ports import free_port
from tests._redis_servers import RedisServer

__all__ = ("SentinelGroup", "SentinelProcess", "running_sentinel_group")

_HOST = "127.0.0.1"
_TIMEOUT = 30.0


def _client(port: int) -> redis.Redis:
    return redis.Redis(host=_HOST, port=port, socket_timeout=1.0, socket_connect_timeout=1.0)


def _wait(condition: Callable[[], bool], what: str, timeout: float = _TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if condition():
                return
        time.sleep(0.02)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


class SentinelProcess:
    """One ``redis-server --sentinel`` watching ``service``."""

    def __init__(self, directory: Path, service: str, master_port: int, *, down_after_ms: int) -> None:
        self.directory = directory
        self.port = free_port()
        self.service = service
        self._master_port = master_port
        self._down_after_ms = down_after_ms
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"
        # Sentinel rewrites this file as it learns; "monitor" must come first.
        config.write_text(
            f"port {self.port}\n"
            f"bind {_HOST}\n"
            "daemonize no\n"
            f"dir {self.directory}\n"
            "logfile sentinel.log\n"
            f"sentinel monitor {self.service} {_HOST} {self._master_port} 2\n"
            f"sentinel down-after-milliseconds {self.service} {self._down_after_ms}\n"
            f"sentinel failover-timeout {self.service} {max(2000, 4 * self._down_after_ms)}\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        self._process = subprocess.Popen(
            ["redis-server", str(config), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(lambda: bool(_client(self.port).ping()), f"sentinel on port {self.port}", 10.0)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def master_state(self) -> dict[str, object]:
        """``SENTINEL MASTER service``, parsed by redis-py."""
        state = _client(self.port).sentinel_master(self.service)
        if not isinstance(state, dict):
            raise RuntimeError(f"sentinel on port {self.port} does not know {self.service!r}")
        return state

    def master_port(self) -> int:
        """The port this sentinel names as the master's now."""
        address = _client(self.port).sentinel_get_master_addr_by_name(self.service)
        if not isinstance(address, tuple | list):
            raise RuntimeError(f"sentinel on port {self.port} names no master for {self.service!r}")
        return int(address[1])

    @property
    def log(self) -> str:
        path = self.directory / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""


class SentinelGroup:
    """A master, a replica and three sentinels on loopback ports."""

    def __init__(self, directory: Path, *, service: str = "mymaster", down_after_ms: int = 60_000) -> None:
        self.directory = directory
        self.service = service
        master = RedisServer(directory / "data0")
        replica = RedisServer(directory / "data1", arguments=self._replica_of(master.port))
        self.servers = [master, replica]
        self.sentinels = [
            SentinelProcess(directory / f"sentinel{index}", service, master.port, down_after_ms=down_after_ms)
            for index in range(3)
        ]

    @staticmethod
    def _replica_of(port: int) -> tuple[str, ...]:
        return ("--replicaof", _HOST, str(port))

    @property
    def url(self) -> str:
        """``redis+sentinel://`` URL of the three sentinels and the service."""
        hosts = ",".join(f"{_HOST}:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self, *, ready_for_failover: bool = True) -> None:
        """Start the data nodes, then the sentinels; with ``ready_for_failover``, wait
        until the sentinels know the replica and each other (a few seconds: they meet
        through hello messages every 2 s), else only until they name the master."""
        master, replica = self.servers
        master.start()
        replica.start()
        self.wait_replicated(master)
        for sentinel in self.sentinels:
            sentinel.start()
        if ready_for_failover:
            self.wait_watched()
        else:
            _wait(
                lambda: all(sentinel.master_port() == master.port for sentinel in self.sentinels),
                "the sentinels to name the master",
            )

    def master(self) -> RedisServer:
        """The server the sentinels name as master now."""
        port = self.sentinels[0].master_port()
        return next(server for server in self.servers if server.port == port)

    def replicas(self) -> list[RedisServer]:
        master = self.master()
        return [server for server in self.servers if server is not master]

    def wait_replicated(self, master: RedisServer | None = None) -> None:
        """Wait until every other live server is a replica of ``master`` with its link up
        (by default of the master the sentinels name, asked again on every poll: on a
        loaded machine they may fail over once more meanwhile)."""

        def synced() -> bool:
            current = master if master is not None else self.master()
            for server in self.servers:
                if server is current or not server.alive:
                    continue
                info = _client(server.port).info("replication")
                if info.get("master_port") != current.port or info.get("master_link_status") != "up":
                    return False
            return True

        try:
            _wait(synced, "the replicas to sync from the master", 60.0)
        except RuntimeError as error:
            tails = "\n".join(
                f"--- data {server.port}\n" + "\n".join(server.log.splitlines()[-15:])
                for server in self.servers
            )
            raise RuntimeError(f"{error}\n{tails}") from None

    def wait_watched(self) -> None:
        """Wait until every sentinel names the same master, sees its replicas and the
        other two sentinels (so it can vote in a failover)."""
        master = self.master()
        replicas = [server for server in self.servers if server is not master and server.alive]

        def watched() -> bool:
            for sentinel in self.sentinels:
                state = sentinel.master_state()
                if int(str(state["port"])) != master.port or not state.get("is_master"):
                    return False
                if int(str(state["num-other-sentinels"])) < len(self.sentinels) - 1:
                    return False
                known = _client(sentinel.port).sentinel_slaves(self.service)
                healthy = {
                    int(entry["port"])
                    for entry in known
                    if not (entry["is_sdown"] or entry["is_odown"])
                    and entry.get("master-link-status") == "ok"
                }
                if not {server.port for server in replicas} <= healthy:
                    return False
            return True

        _wait(watched, "the sentinels to watch the master, its replicas and each other")

    def kill_master_and_wait_failover(self) -> tuple[RedisServer, RedisServer]:
        """SIGKILL the master; return (old, new) once every sentinel names the new one
        and it answers ``ROLE`` as master."""
        old = self.master()
        old.kill()
        return old, self.wait_failover(old)

    def wait_failover(self, old: RedisServer) -> RedisServer:
        """Once ``old`` (the master) was killed: the new master, when every sentinel
        names it and it answers ``ROLE`` as master."""

        def promoted() -> bool:
            ports = {sentinel.master_port() for sentinel in self.sentinels}
            if len(ports) != 1 or old.port in ports:
                return False
            role = _client(ports.pop()).execute_command("ROLE")  # type: ignore[no-untyped-call]
            return bool(role[0] in (b"master", "master"))

        _wait(promoted, f"a failover after killing the master on port {old.port}", 60.0)
        return self.master()

    def rejoin(self, server: RedisServer) -> None:
        """Start a killed server again, empty, as a replica of today's master."""
        server.arguments = self._replica_of(self.master().port)
        server.start()
        self.wait_replicated()
        self.wait_watched()

    def kill_data_nodes(self) -> None:
        """SIGKILL the master and its replicas: the broker is gone."""
        for server in self.servers:
            server.kill()

    def restart_data_nodes(self) -> None:
        """Start the master (where the sentinels expect it) and its replicas, all empty."""
        master = self.master()
        master.arguments = ()
        master.start()
        for server in self.servers:
            if server is not master:
                server.arguments = self._replica_of(master.port)
                server.start()
        self.wait_replicated(master)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop()

    def logs(self) -> str:
        """Every process's log, for failure messages."""
        parts = [f"--- data {server.port}\n{server.log}" for server in self.servers]
        parts += [f"--- sentinel {sentinel.port}\n{sentinel.log}" for sentinel in self.sentinels]
        return "\n".join(parts)


_START_ATTEMPTS = 3


@contextlib.contextmanager
def running_sentinel_group(
    *, down_after_ms: int = 60_000, ready_for_failover: bool = True
) -> Iterator[SentinelGroup]:
    """A master, a replica and three sentinels in a temporary directory; removed on exit."""
    directory = Path(tempfile.mkdtemp(prefix="sessionws-redis-sentinel-"))
    try:
        for attempt in range(_START_ATTEMPTS):
            group = SentinelGroup(directory / str(attempt), down_after_ms=down_after_ms)
            try:
                group.start(ready_for_failover=ready_for_failover)
                break
            except RuntimeError:
                group.stop()
                if attempt == _START_ATTEMPTS - 1:
                    raise
        try:
            yield group
        finally:
            group.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
