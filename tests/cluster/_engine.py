"""A small Docker Engine API client: HTTP/1.1 over the engine's unix socket.

The Docker runner of the cluster suite injects its faults through the engine it runs
on (the socket is mounted into the runner's container): SIGKILL a container, start
it again, pause and unpause it, read its log. Only the standard library: the calls
are few and plain, and the image carries no Docker SDK.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import urllib.parse
from typing import Any

__all__ = ("Container", "DockerEngine", "EngineError")

#: The engine API version asked for: Docker 20.10 (API 1.41) and every later engine.
_API = "v1.41"


class EngineError(RuntimeError):
    """The engine refused a request (its message says why)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerEngine:
    """The engine behind ``DOCKER_HOST`` (``unix://`` only) or ``/var/run/docker.sock``."""

    def __init__(self, socket_path: str | None = None, *, timeout: float = 30.0) -> None:
        if socket_path is None:
            host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            if not host.startswith("unix://"):
                raise ValueError(
                    f"DOCKER_HOST={host!r}: the suite talks to the engine over its unix socket; "
                    "mount the socket into the runner (/var/run/docker.sock)"
                )
            socket_path = host.removeprefix("unix://")
        self.socket_path = socket_path
        self.timeout = timeout

    def request(
        self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, bytes]:
        """One request (``body`` sent as JSON); the status and the raw body."""
        target = f"/{_API}{path}"
        if query:
            target += "?" + urllib.parse.urlencode(query)
        payload = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if method == "POST":
            headers["Content-Length"] = str(len(payload))
        connection = _UnixConnection(self.socket_path, self.timeout)
        try:
            connection.request(method, target, body=payload or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def call(
        self, method: str, path: str, query: dict[str, str] | None = None, *, ok: int = 204, data: Any = None
    ) -> Any:
        """A request (``data`` sent as JSON) that must answer ``ok`` (or 304, "already so");
        its JSON body, if any."""
        status, body = self.request(method, path, query, data)
        if status not in (ok, 200, 304):
            try:
                message = json.loads(body).get("message", body.decode(errors="replace"))
            except ValueError:
                message = body.decode(errors="replace")
            raise EngineError(f"{method} {path}: HTTP {status}: {message}")
        return json.loads(body) if body.strip() else None

    def containers(self, labels: dict[str, str], *, everything: bool = True) -> list[dict[str, Any]]:
        """The containers carrying every label (stopped ones too, unless told)."""
        filters = json.dumps({"label": [f"{key}={value}" for key, value in labels.items()]})
        query = {"filters": filters, "all": "1" if everything else "0"}
        listed: list[dict[str, Any]] = self.call("GET", "/containers/json", query, ok=200)
        return listed

    def container(self, reference: str) -> Container:
        return Container(self, reference)

    def run(self, config: dict[str, Any]) -> tuple[int, str]:
        """Create a container from ``config`` (the Engine API's create body), run it to
        its end, remove it: its exit status and its output."""
        created = self.call("POST", "/containers/create", ok=201, data=config)
        container = Container(self, str(created["Id"]))
        try:
            container.start()
            waited = self.call("POST", f"/containers/{container.reference}/wait", ok=200)
            return int(waited["StatusCode"]), container.log_tail(50)
        finally:
            self.call("DELETE", f"/containers/{container.reference}", {"force": "1"})


class Container:
    """One container, by id or name."""

    def __init__(self, engine: DockerEngine, reference: str) -> None:
        self.engine = engine
        self.reference = reference

    def inspect(self) -> dict[str, Any]:
        document: dict[str, Any] = self.engine.call("GET", f"/containers/{self.reference}/json", ok=200)
        return document

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.inspect()["State"]
        return state

    @property
    def running(self) -> bool:
        """Running, paused or not (a paused container is alive, as a SIGSTOPped process)."""
        return bool(self.state()["Running"])

    @property
    def paused(self) -> bool:
        return bool(self.state()["Paused"])

    def kill(self, signal: str = "SIGKILL") -> None:
        self.engine.call("POST", f"/containers/{self.reference}/kill", {"signal": signal})

    def start(self) -> None:
        self.engine.call("POST", f"/containers/{self.reference}/start")

    def pause(self) -> None:
        self.engine.call("POST", f"/containers/{self.reference}/pause")

    def unpause(self) -> None:
        self.engine.call("POST", f"/containers/{self.reference}/unpause")

    def wait_stopped(self) -> None:
        """Block until the container is not running (after a kill)."""
        self.engine.call("POST", f"/containers/{self.reference}/wait", {"condition": "not-running"}, ok=200)

    def log_tail(self, lines: int) -> str:
        """The last ``lines`` lines of its stdout and stderr."""
        query = {"stdout": "1", "stderr": "1", "tail": str(lines)}
        status, body = self.engine.request("GET", f"/containers/{self.reference}/logs", query)
        if status != 200:
            return f"(no log: HTTP {status})"
        return _demultiplex(body).decode(errors="replace")


def _demultiplex(body: bytes) -> bytes:
    """A container without a TTY logs in frames: 8-byte header (stream, size), payload."""
    chunks: list[bytes] = []
    offset = 0
    while offset + 8 <= len(body) and body[offset] in (0, 1, 2) and not any(body[offset + 1 : offset + 4]):
        (size,) = struct.unpack(">I", body[offset + 4 : offset + 8])
        chunks.append(body[offset + 8 : offset + 8 + size])
        offset += 8 + size
    return b"".join(chunks) + body[offset:]
