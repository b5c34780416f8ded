"""Socket.IO 4 + ``@socket.io/redis-adapter`` node processes, for ``bench.peers``.

The npm packages are pinned in ``bench/socketio/package.json`` and its lockfile and are
installed by :func:`ensure_installed` (``npm ci``) into ``bench/socketio/node_modules``
(git-ignored) the first time a benchmark needs them.
"""

from __future__ import annotations

import select
import shutil
import subprocess
from pathlib import Path

from tests._ports import free_port

__all__ = ("SOCKETIO_DIR", "PeerUnavailableError", "SocketIONode", "ensure_installed")

SOCKETIO_DIR = Path(__file__).resolve().parent / "socketio"
_INSTALL_TIMEOUT = 300.0
_START_TIMEOUT = 20.0


class PeerUnavailableError(RuntimeError):
    """Node or the npm packages of the peer cannot be had on this machine."""


def ensure_installed() -> str:
    """Install the pinned npm packages on first use; the path of ``node``."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailableError("Socket.IO needs Node.js: install node and npm (Node 18 or newer)")
    marker = SOCKETIO_DIR / "node_modules" / ".package-lock.json"
    lock = SOCKETIO_DIR / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return node
    try:
        completed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=SOCKETIO_DIR,
            capture_output=True,
            text=True,
            timeout=_INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PeerUnavailableError(f"npm ci in {SOCKETIO_DIR} took over {_INSTALL_TIMEOUT:.0f} s") from None
    if completed.returncode != 0:
        raise PeerUnavailableError(
            f"npm ci in {SOCKETIO_DIR} failed (is the npm registry reachable?):\n{completed.stderr[-2000:]}"
        )
    return node


class SocketIONode:
    """One ``bench/socketio/server.js`` process on a free 127.0.0.1 port.

    Its standard input is a pipe: the process exits when the pipe closes, so it dies
    with the benchmark even when the benchmark is killed."""

    def __init__(self, node: str, name: str, redis_url: str, log: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log
        with log.open("ab") as output:
            self._process = subprocess.Popen(
                [node, "server.js", "--port", str(self.port), "--redis", redis_url, "--name", name],
                cwd=SOCKETIO_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=output,
            )

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait_ready(self) -> None:
        """Block until the node prints ``ready`` (listening, its Redis clients connected)."""
        if self._process.stdout is None:
            raise RuntimeError("the Socket.IO node's output is not piped")
        readable, _, _ = select.select([self._process.stdout], [], [], _START_TIMEOUT)
        line = self._process.stdout.readline().decode().strip() if readable else "(nothing)"
        if line != "ready":
            self.stop()
            log = self._log.read_text(errors="replace")[-2000:]
            raise PeerUnavailableError(f"the Socket.IO node {self.name} did not start: {log}")

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()
