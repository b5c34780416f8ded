"""Free loopback ports for the servers the tests start, and their processes' pauses.

Ports are drawn at random below the kernel's ephemeral range: a port the kernel
handed out for ``bind(0)`` is also what it hands to the next outgoing connection,
so a server started on it a moment later can find it taken ("address already in
use"). Below the range, only another listener can take it, and the random draw
makes two test runs on one machine unlikely to pick the same one.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ("free_port", "pause_process", "port_is_free", "resume_process", "wait_stopped")

_HOST = "127.0.0.1"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_LOW = 10_000
_HIGH = max(_LOW + 1000, _ephemeral_low())


def port_is_free(port: int) -> bool:
    """Whether nothing listens on (or holds) ``port`` on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((_HOST, port))
        except OSError:
            return False
    return True


def free_port(*, room_above: int = 0) -> int:
    """A loopback port nobody holds; with ``room_above``, ``port + room_above`` is free too
    (a Redis Cluster node's bus port)."""
    for _ in range(500):
        port = random.randrange(_LOW, _HIGH - room_above)
        if port_is_free(port) and (not room_above or port_is_free(port + room_above)):
            return port
    raise RuntimeError("no free loopback port found")


def wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until ``pid`` is really stopped after a SIGSTOP: the signal takes effect a
    moment later, and a process on another core may still answer a request meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return
        if fields and fields[0] in ("T", "t"):
            return
        time.sleep(0.001)
    raise RuntimeError(f"process {pid} did not stop within {timeout} s of SIGSTOP")


def pause_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGSTOP a running server and wait until it is stopped: its connections stay open
    but nothing is answered. Nothing happens to a process that is gone."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGSTOP)
        wait_stopped(process.pid)


def resume_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGCONT a paused server (nothing happens to a running or finished one)."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGCONT)
