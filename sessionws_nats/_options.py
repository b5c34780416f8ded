"""NATS URLs and options: what goes to the transport, what goes to ``nats.connect``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

__all__ = ("CALLBACKS", "CONNECT_DEFAULTS", "chain_callbacks", "parse_url", "split_options")

SCHEMES: Final = ("nats", "tls")

#: Passed to ``nats.connect`` unless overridden: reconnect forever, every second, and
#: ping every 10 s so a half-open connection is noticed in ~30 s (nats-py's default
#: 120 s interval and 2 outstanding pings take 6 minutes).
CONNECT_DEFAULTS: Final[Mapping[str, Any]] = {
    "name": "sessionws",
    "max_reconnect_attempts": -1,
    "reconnect_time_wait": 1,
    "ping_interval": 10,
    "max_outstanding_pings": 2,
}
#: nats-py callbacks the transport installs (a caller's own are chained after them).
CALLBACKS: Final = ("disconnected_cb", "reconnected_cb", "closed_cb", "error_cb")

_URL_OPTIONS: Final[Mapping[str, Callable[[str], Any]]] = {
    "bucket": str,
    "subject_prefix": str,
    "replicas": int,
    "name": str,
    "interest_grace": float,
}
_TRANSPORT_OPTIONS: Final = frozenset(
    {
        "bucket",
        "subject_prefix",
        "replicas",
        "request_timeout",
        "connect_wait",
        "poll_interval",
        "shutdown_timeout",
        "interest_grace",
        "shared_dispatch",
        "max_payload",
    }
)


def parse_url(url: str) -> tuple[list[str], dict[str, str]]:
    """``nats://a:4222,b:4223?bucket=x`` → (``["nats://a:4222", "nats://b:4223"]``, query)."""
    if not isinstance(url, str):
        raise TypeError(f"a NATS URL must be a str, not {type(url).__name__}")
    base, _, query = url.partition("?")
    scheme, separator, rest = base.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        raise ValueError(f"not a NATS URL: {url!r}; use nats://host:port or tls://host:port")
    scheme = scheme.lower()
    servers = []
    for part in rest.rstrip("/").split(","):
        part = part.strip()
        server_scheme, has_scheme, address = part.partition("://")
        if not has_scheme:
            server_scheme, address = scheme, part
        if not address:
            raise ValueError(f"empty server in NATS URL {url!r}; separate servers with single commas")
        if "/" in address or server_scheme.lower() not in SCHEMES:
            raise ValueError(f"not a NATS server address: {part!r} in {url!r}")
        servers.append(f"{server_scheme.lower()}://{address}")
    return servers, dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))


def split_options(url: str, options: Mapping[str, Any]) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """(servers, transport options, ``nats.connect`` options) from a URL and keywords.

    Keywords win over the URL's query string.
    """
    servers, query = parse_url(url)
    connect_options = dict(options)
    transport_options = {key: connect_options.pop(key) for key in options if key in _TRANSPORT_OPTIONS}
    for key, text in query.items():
        convert = _URL_OPTIONS.get(key)
        if convert is None:
            raise ValueError(
                f"unknown option {key!r} in NATS URL {url!r}; the URL takes "
                + ", ".join(sorted(_URL_OPTIONS))
            )
        try:
            value = convert(text)
        except ValueError:
            raise ValueError(f"option {key}={text!r} in NATS URL {url!r} is not valid") from None
        target = connect_options if key == "name" else transport_options
        target.setdefault(key, value)
    return servers, transport_options, connect_options


def chain_callbacks(
    ours: Callable[..., Awaitable[None]], theirs: Callable[..., Awaitable[None]] | None
) -> Callable[..., Awaitable[None]]:
    """One nats-py callback that runs ours, then the caller's."""
    if theirs is None:
        return ours

    async def both(*args: Any) -> None:
        await ours(*args)
        await theirs(*args)

    return both
