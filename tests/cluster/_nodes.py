"""App nodes as OS processes (``python -m tests.cluster.node``), and nodes run by others.

A :class:`NodeProcess` is started, SIGKILLed, SIGSTOPped and restarted by the tests;
each node is told the test process's pid and dies with it even when that one is
killed (on Linux; see ``tests/cluster/node.py``), so a crashed run leaves no orphans. An
:class:`ExternalNode` is a node someone else runs (the Docker cluster): the suite only
talks to it over HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tests._ports import free_port, pause_process, resume_process
from tests.cluster._app_common import EXIT_WITH_PARENT

__all__ = (
    "ControlledNode",
    "ExternalNode",
    "Node",
    "NodeProcess",
    "get_json",
    "start_nodes",
    "stop_nodes",
    "wait_until",
)

_ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT = 20.0


def get_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    """GET ``url``: the status and the JSON body (``None`` if it is not JSON)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition()`` until it is true; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


class Node:
    """What the suite knows of one node: its name and base URL."""

    name: str
    url: str

    def health(self) -> dict[str, Any]:
        """``/health`` (raises ``OSError`` when the node does not answer)."""
        _, body = get_json(f"{self.url}/health")
        if not isinstance(body, dict):
            raise OSError(f"{self.name} answered /health without JSON")
        return body


def wait_healthy(node: ControlledNode, timeout: float) -> None:
    """Wait until ``node`` answers ``/health`` with ``healthy``; one that exits meanwhile,
    or never gets there, fails with the tail of its log."""

    def ready() -> bool:
        if not node.alive:
            raise RuntimeError(f"{node.name} exited at start:\n{node.log_tail()}")
        return bool(node.health()["healthy"])

    try:
        wait_until(ready, timeout, f"{node.name} becoming healthy")
    except TimeoutError as error:
        raise TimeoutError(f"{error}:\n{node.log_tail()}") from None


@runtime_checkable
class ControlledNode(Protocol):
    """A node the suite may kill, pause and start again: a :class:`NodeProcess`, or a
    node container driven through the Docker Engine (``tests/cluster/_docker.py``)."""

    name: str
    url: str

    @property
    def alive(self) -> bool:
        """Running (paused or not)."""
        ...

    def health(self) -> dict[str, Any]: ...

    def spawn(self) -> None:
        """Start it (see :meth:`wait_ready`)."""
        ...

    def wait_ready(self, timeout: float = ...) -> None:
        """Wait until it answers ``/health`` with ``healthy``."""
        ...

    def kill(self) -> None:
        """SIGKILL: its clients see their connections drop, its peers hear nothing more."""
        ...

    def pause(self) -> None:
        """Alive for TCP, silent for everything else (SIGSTOP, the cgroup freezer)."""
        ...

    def resume(self) -> None: ...

    def log_tail(self, lines: int = ...) -> str: ...


class ExternalNode(Node):
    """A node started by someone else (``SESSIONWS_NODES``)."""

    def __init__(self, url: str, index: int) -> None:
        self.url = url.rstrip("/")
        self.name = f"node{index + 1}"


class NodeProcess(Node):
    """One node process on a free 127.0.0.1 port; its output goes to a log file."""

    def __init__(self, name: str, broker_url: str, directory: Path, *, framework: str = "aiohttp") -> None:
        self.name = name
        self.broker_url = broker_url
        self.framework = framework
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"{name}.log"
        self.environment: dict[str, str] = {}
        #: More ``tests.cluster.node`` flags (e.g. ``--command-timeout 1``).
        self.arguments: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._terminated = False

    @classmethod
    def from_environment(cls, name: str, environment: Mapping[str, str], directory: Path) -> NodeProcess:
        """A node configured only by ``SESSIONWS_*`` variables, as the Docker cluster runs it
        (``environment`` must give ``SESSIONWS_PORT``, on 127.0.0.1)."""
        node = cls(name, environment.get("SESSIONWS_BROKER_URL", ""), directory)
        node.environment = dict(environment)
        node.port = int(environment["SESSIONWS_PORT"])
        node.url = f"http://127.0.0.1:{node.port}"
        return node

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        if self.environment:
            return [sys.executable, "-m", "tests.cluster.node"]
        return [
            sys.executable, "-m", "tests.cluster.node",
            "--port", str(self.port),
            "--transport", self.broker_url,
            "--name", self.name,
            "--framework", self.framework,
            *self.arguments,
        ]  # fmt: skip

    def spawn(self) -> None:
        """Start the process (see :meth:`wait_ready`)."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        self._terminated = False
        environment = {key: value for key, value in os.environ.items() if not key.startswith("SESSIONWS_")}
        environment.update(self.environment)
        environment["PYTHONPATH"] = str(_ROOT)
        environment[EXIT_WITH_PARENT] = str(os.getpid())
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                cwd=_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        """Wait until the node answers ``/health`` with ``healthy``."""
        wait_healthy(self, timeout)

    def kill(self) -> None:
        """SIGKILL: its clients see their connections drop, its peers hear nothing more."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: alive for TCP, silent for everything else."""
        pause_process(self._process)

    def resume(self) -> None:
        resume_process(self._process)

    def terminate(self) -> None:
        """SIGTERM without waiting (see :meth:`stop`); only once per process.

        A second SIGTERM early in aiohttp's shutdown once left a ``sessionws_aiohttp``
        node spinning (seen once; not reproduced in some 150 tries since, with the second
        signal 0-100 ms after the first; the cause is unproven), so it is never sent.
        """
        if self.alive and self._process is not None and not self._terminated:
            self._terminated = True
            self._process.terminate()

    def stop(self) -> None:
        """SIGTERM (graceful: sockets closed with 1001), SIGKILL after 10 s."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self.resume()
            self.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGUSR1)  # its stacks go to the log, for the post-mortem
                time.sleep(0.5)
                process.kill()
                process.wait(timeout=10)
                print(f"\n{self.name} did not stop within 10 s of SIGTERM; killed it:\n{self.log_tail(60)}")
        self._process = None
        self._terminated = False

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(f"  {self.name}| {line}" for line in text.splitlines()[-lines:])


def start_nodes(nodes: Sequence[ControlledNode], timeout: float = _START_TIMEOUT) -> None:
    """Start several nodes at once (they import in parallel) and wait for all."""
    for node in nodes:
        if not node.alive:
            node.spawn()
    for node in nodes:
        node.wait_ready(timeout)


def stop_nodes(nodes: Sequence[NodeProcess]) -> None:
    """Stop several nodes at once (SIGTERM to all, then wait for each)."""
    for node in nodes:
        node.resume()
        node.terminate()
    for node in nodes:
        node.stop()
