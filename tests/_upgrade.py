"""A hand-rolled websocket upgrade: any header lines, as an attacker would send them.

Real clients normalise what they send (one ``Origin``, a ``Host`` that matches the
URL); the attack tests need the raw bytes. Used by both adapters' security tests.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable

import anyio

__all__ = ("upgrade_status",)


async def upgrade_status(
    port: int,
    path: str = "/ws",
    *,
    headers: Iterable[tuple[str, str]] = (),
    host: str | None = None,
    upgrade: bool = True,
) -> int:
    """Send one upgrade request (``Host`` is ``127.0.0.1:port`` unless ``host`` is given;
    ``upgrade=False`` sends a plain GET); return the status code of the answer."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host if host is not None else f'127.0.0.1:{port}'}"]
    if upgrade:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
    lines += [f"{name}: {value}" for name, value in headers]
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = b""
        with anyio.fail_after(5):
            while b"\r\n" not in head:
                try:
                    head += await stream.receive()
                except anyio.EndOfStream:
                    break
    status_line = head.split(b"\r\n", 1)[0]
    if not status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")):
        raise AssertionError(f"no HTTP answer: {head[:200]!r}")
    return int(status_line.split()[1])
