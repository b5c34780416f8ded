"""What every server version of the demo is given, and what they share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sessionws import BrokerUnavailableError, SessionWSError

__all__ = (
    "COOKIE_MAX_AGE",
    "COOKIE_NAME",
    "FRAMEWORKS",
    "STATIC_DIR",
    "USER_NAME",
    "DemoOptions",
    "announce",
    "broker_failure",
    "broker_unreachable",
    "public_transport",
    "url_for_humans",
)

#: The framework versions of the demo; each is ``sessionws_demo._<name>_app`` with
#: ``make_app(options)`` and ``run(options) -> int`` (serve until interrupted).
FRAMEWORKS = ("aiohttp", "starlette")

#: The page, its script and its style.
STATIC_DIR = Path(__file__).parent / "static"

#: Accepted user names at login (shown on the page, used in the ``user:<name>`` key).
USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")

#: The session cookie, one name and one format (Starlette's) for both framework versions,
#: so an aiohttp node and a Starlette node given the same ``--secret`` share sessions.
COOKIE_NAME = "sessionws_demo"

#: How long the session cookie lives (Starlette's default: 14 days).
COOKIE_MAX_AGE = 14 * 24 * 3600

#: How long a revoked id stays refused in the demo.
REVOKE_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """The command line, parsed.

    ``secret`` signs the session cookie; ``None`` makes a random one per process
    (cluster nodes must share one to share sessions). ``node`` names this process
    on the page (default: the registry's random node id).
    """

    transport: str = "memory://"
    host: str = "127.0.0.1"
    port: int = 8080
    node: str | None = None
    secret: str | None = None
    namespace: str = "sessionws-demo"


def public_transport(url: str) -> str:
    """The transport URL without credentials, path or query (it is shown on the page)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    name = host or parts.path.strip("/")
    return f"{parts.scheme}://{name}"


def url_for_humans(host: str, port: int) -> str:
    """``http://host:port/`` for a bound address (IPv6 hosts in brackets)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def announce(framework: str, url: str, options: DemoOptions, node: str) -> None:
    """Print where the demo listens (tests and scripts read this line for the URL)."""
    print(
        f"sessionws demo ({framework}) on {url} — "
        f"transport {public_transport(options.transport)}, node {node}",
        flush=True,
    )
    if options.transport.startswith("memory:"):
        print(
            "note: memory:// is a cluster of one; for a cluster, start every node with the same "
            "broker and --secret (e.g. --transport redis://localhost:6379/0 --secret "
            "same-on-every-node) on ports of their own",
            flush=True,
        )
    elif options.secret is None:
        print("note: give every node the same --secret so they share sessions", flush=True)


def broker_failure(error: BaseException | None) -> Exception | None:
    """What kept the demo from its broker at start, in ``error`` (or in its exception
    groups), if anything: the broker unreachable (``BrokerUnavailableError``), the
    transport's extra not installed (``ImportError``), or a server that cannot serve
    sessionws (another ``SessionWSError``, such as a NATS server older than 2.11)."""
    if isinstance(error, BrokerUnavailableError | ImportError | SessionWSError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := broker_failure(inner)) is not None:
                return found
    return None


def broker_unreachable(options: DemoOptions, error: Exception) -> str:
    """What to print, instead of a traceback, when the demo cannot use its broker at start."""
    where = public_transport(options.transport)
    if not isinstance(error, BrokerUnavailableError):
        return f"the demo cannot use its broker at {where}: {error}"
    return (
        f"the demo cannot reach its broker at {where}: {error}\n"
        "start the broker first (redis-server, or nats-server -js), or leave out --transport "
        "to run the demo on memory:// (a cluster of one)"
    )
