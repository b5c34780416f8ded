"""What both node apps share: the node's configuration, its registry, JSON for reports."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from typing import Any

from sessionws import CloseReport, Delivered, Event, Members, SendReport, SessionRegistry, transport_from_url

__all__ = (
    "EXIT_WITH_PARENT",
    "FRAMEWORKS",
    "USER_KEY",
    "MembershipLog",
    "NodeConfig",
    "delivered_json",
    "exit_with_parent",
    "make_registry",
    "members_json",
    "parse_data",
    "report_json",
    "send_report_json",
)

FRAMEWORKS = ("aiohttp", "starlette")
#: Set by the tests to their pid: the node then dies with the test process (Linux).
EXIT_WITH_PARENT = "SESSIONWS_EXIT_WITH_PARENT"
_PR_SET_PDEATHSIG = 1
#: Where the apps keep the logged-in user in the session (its sockets' second key).
USER_KEY = "user"


@dataclass(frozen=True)
class NodeConfig:
    """What one node runs with (from flags and the environment)."""

    transport: str
    name: str
    host: str = "127.0.0.1"
    port: int = 8000
    framework: str = "aiohttp"
    namespace: str = "cluster"
    heartbeat: float = 0.2
    linger: float = 0.2
    reconnect_delay: float = 0.2
    #: Bound on each broker command (Redis ``command_timeout``, NATS
    #: ``request_timeout``); ``None`` keeps the transport's default.
    command_timeout: float | None = None
    #: Keep the registry's membership events for ``GET /events``.
    record_events: bool = False
    #: ``auto`` (uvloop when installed: ``sessionws[speed]``), ``asyncio`` or ``uvloop``.
    loop: str = "auto"
    #: Timestamps of a close's steps at ``GET /bench/trace`` (the benchmark's diagnosis).
    bench_trace: bool = False
    #: A log line per HTTP request (aiohttp's access log); the benchmarks turn it off.
    access_log: bool = True


class MembershipLog:
    """The ``member_joined`` / ``member_left`` events of this node's registry, in order
    (an ``on_event`` callback that declines per-socket events, so registrations keep
    their fast path)."""

    socket_events = False

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: Event) -> None:
        if event.name in ("member_joined", "member_left"):
            self.events.append({"event": event.name, "node": str(event.detail.get("node", ""))})


def exit_with_parent() -> None:
    """Ask Linux for SIGTERM when the process that started us dies (``PR_SET_PDEATHSIG``),
    if ``SESSIONWS_EXIT_WITH_PARENT`` names that process; exit now if it is gone already."""
    expected = os.environ.get(EXIT_WITH_PARENT)
    if not expected or sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if str(os.getppid()) != expected:  # it died before we asked
        raise SystemExit("the test process that started this node is gone")


def make_registry(config: NodeConfig, events: MembershipLog | None = None) -> SessionRegistry:
    """The node's registry: test-friendly timings, reconnects within ``reconnect_delay``.

    The node id is the name plus a random suffix: a restarted node is a new member.
    """
    scheme = config.transport.partition("://")[0].lower()
    options: dict[str, Any] = {}
    if scheme.startswith("redis"):
        options = {"reconnect_min_delay": 0.02, "reconnect_max_delay": config.reconnect_delay}
    elif scheme in ("nats", "tls"):
        # Attach to the first server listed; fail over to the others in order.
        options = {
            "reconnect_time_wait": config.reconnect_delay,
            "dont_randomize": True,
            "open_timeout": 10.0,
        }
    if config.command_timeout is not None:
        options["command_timeout" if scheme.startswith("redis") else "request_timeout"] = (
            config.command_timeout
        )
    return SessionRegistry(
        transport_from_url(config.transport, **options),
        namespace=config.namespace,
        node_id=f"{config.name}-{secrets.token_hex(3)}",
        heartbeat_interval=config.heartbeat,
        linger=config.linger,
        close_timeout=2.0,
        confirm_timeout=2.0,
        on_event=events,
    )


def _answers_json(report: CloseReport | SendReport) -> dict[str, Any]:
    """What both reports say of the other nodes' answers."""
    return {
        "nodes": dict(report.nodes),
        "missing": sorted(report.missing),
        "confirmed": report.confirmed,
        "complete": report.complete,
        "queued": report.queued,
        "total": report.total,
    }


def report_json(report: CloseReport) -> dict[str, Any]:
    """A ``CloseReport`` as JSON."""
    return {"closed_here": report.closed_here, **_answers_json(report)}


def send_report_json(report: SendReport) -> dict[str, Any]:
    """A ``SendReport`` (``send_all``, ``broadcast``) as JSON."""
    return {"sent_here": report.sent_here, **_answers_json(report)}


def delivered_json(delivered: Delivered) -> dict[str, Any]:
    """A ``Delivered`` (``send_to``, ``close_handle``) as JSON."""
    return {
        "found": delivered.found,
        "node": delivered.node,
        "complete": delivered.complete,
        "queued": delivered.queued,
    }


def members_json(members: Members) -> dict[str, Any]:
    """A ``Members`` listing as JSON: one entry per socket, sorted by handle id."""
    return {
        "members": [
            {"handle": member.handle_id, "node": member.node, "keys": list(member.keys), "data": member.data}
            for member in sorted(members.members, key=lambda member: member.handle_id)
        ],
        "complete": members.complete,
        "missing": sorted(members.missing),
        "truncated": members.truncated,
    }


def parse_data(text: str | None) -> dict[str, Any] | None:
    """A socket's data from a query parameter: a JSON object, or ``None`` when absent."""
    if not text:
        return None
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("data must be a JSON object")
    return data
