"""The examples as the README runs them: ``python examples/<name>/app.py`` processes.

Each :class:`ExampleNode` is an OS process on a free loopback port, its output in a
log file (shown when it fails to start); :func:`running_nodes` starts several on one
broker and stops them (SIGTERM, then SIGKILL) however the test ends. The websocket
clients are real aiohttp client sessions with their own cookie jars (one per browser).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from tests._ports import free_port

__all__ = ("MESSAGE_TIMEOUT", "ROOT", "Browser", "ExampleNode", "Inbox", "next_message", "running_nodes")

ROOT = Path(__file__).resolve().parents[2]
_START_TIMEOUT = 30.0
#: How long a test waits for a message it expects (generous: the machine is shared).
MESSAGE_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before the example starts: SIGTERM when the test process dies (Linux),
    so a killed test run leaves no example running."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ExampleNode:
    """One ``python examples/<name>/app.py --port P --broker URL --secret S`` process."""

    def __init__(self, script: str, name: str, broker: str, secret: str, directory: Path) -> None:
        self.script = script
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.node_id = ""
        self.log_path = directory / f"{name}.log"
        self._command = [
            sys.executable, str(ROOT / script),
            "--port", str(self.port),
            "--broker", broker,
            "--secret", secret,
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self) -> None:
        """Wait until ``/health`` says the registry is healthy; learn the node's id."""
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"{self.script} ({self.name}) exited at start:\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    health: dict[str, Any] = json.loads(response.read())
                if health.get("healthy"):
                    self.node_id = str(health["node"])
                    return
            time.sleep(0.05)
        raise TimeoutError(
            f"{self.script} ({self.name}) not healthy in {_START_TIMEOUT} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._process = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def running_nodes(
    script: str, broker: str, secret: str, directory: Path, count: int = 2
) -> Iterator[list[ExampleNode]]:
    """``count`` processes of ``script`` on ``broker``, all healthy; stopped on exit."""
    nodes = [ExampleNode(script, f"node{index + 1}", broker, secret, directory) for index in range(count)]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


class Browser:
    """One browser: a cookie jar shared by its pages and sockets, on every node (the
    nodes differ only by port, and cookies are not port-specific)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls) -> AsyncIterator[Browser]:
        # ``unsafe``: keep cookies of an IP address host (127.0.0.1).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            yield cls(session)

    async def load_page(self, node: ExampleNode, path: str = "/") -> None:
        """GET a page: the node sets the session cookie."""
        async with self.session.get(f"{node.url}{path}") as response:
            response.raise_for_status()
        if not any(True for _ in self.session.cookie_jar):
            raise AssertionError(f"{node.name} set no session cookie on {path}")

    async def socket(self, node: ExampleNode, path: str = "/ws") -> aiohttp.ClientWebSocketResponse:
        return await self.session.ws_connect(f"{node.ws_url}{path}", heartbeat=None)


async def next_message(
    websocket: aiohttp.ClientWebSocketResponse, *, ignore: Sequence[str] = ()
) -> dict[str, Any]:
    """The socket's next JSON message whose ``type`` is not in ``ignore``."""
    with anyio.fail_after(MESSAGE_TIMEOUT):
        while True:
            message = await websocket.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"expected a text message, got {message.type!r} {message.data!r}")
            body: dict[str, Any] = json.loads(message.data)
            if body.get("type") not in ignore:
                return body


class Inbox:
    """A socket's JSON messages in arrival order; ``take`` removes the first that matches,
    leaving the others for later (a member list arriving between two chat messages)."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self.websocket = websocket
        self.pending: list[dict[str, Any]] = []

    async def take(
        self, predicate: Callable[[dict[str, Any]], bool], what: str = "a message"
    ) -> dict[str, Any]:
        """The first message (buffered or arriving) for which ``predicate`` is true."""
        for index, message in enumerate(self.pending):
            if predicate(message):
                return self.pending.pop(index)
        try:
            with anyio.fail_after(MESSAGE_TIMEOUT):
                while True:
                    message = await next_message(self.websocket)
                    if predicate(message):
                        return message
                    self.pending.append(message)
        except TimeoutError:
            raise AssertionError(f"no {what} arrived; received meanwhile: {self.pending}") from None

    async def next_of(self, *types: str) -> dict[str, Any]:
        """The first message of one of ``types``: what arrived first among them."""
        return await self.take(lambda message: message.get("type") in types, f"message of type {types}")
