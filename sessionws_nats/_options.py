"""NATS URLs and options: what goes to the transport, what goes to ``nats.connect``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from nats.aio.client import Client

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


def _parse_boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


# Every transport option can be set in the URL, converted to its type.
_TRANSPORT_URL_OPTIONS: Final[Mapping[str, Callable[[str], Any]]] = {
    "bucket": str,
    "subject_prefix": str,
    "replicas": int,
    "request_timeout": float,
    "open_timeout": float,
    "connect_wait": float,  # open_timeout's old name
    "poll_interval": float,
    "shutdown_timeout": float,
    "interest_grace": float,
    "shared_dispatch": _parse_boolean,
    "max_payload": int,
}
# nats.connect options that make sense as text in a URL.
_CONNECT_URL_OPTIONS: Final[Mapping[str, Callable[[str], Any]]] = {
    "name": str,
    "connect_timeout": float,
    "reconnect_time_wait": float,
    "max_reconnect_attempts": int,
    "ping_interval": float,
    "max_outstanding_pings": int,
    "dont_randomize": _parse_boolean,
    "allow_reconnect": _parse_boolean,
    "tls_hostname": str,
    "tls_handshake_first": _parse_boolean,
    "inbox_prefix": str,
    "drain_timeout": float,
    "flush_timeout": float,
}
_URL_OPTIONS: Final[Mapping[str, Callable[[str], Any]]] = {**_TRANSPORT_URL_OPTIONS, **_CONNECT_URL_OPTIONS}
_TRANSPORT_OPTIONS: Final = frozenset(_TRANSPORT_URL_OPTIONS)
# Accepted (with a DeprecationWarning from the transport), not offered in messages.
_RENAMED_OPTIONS: Final = frozenset({"connect_wait"})
#: What ``nats.connect`` accepts as keywords (``servers`` comes from the URL).
_CONNECT_OPTIONS: Final = frozenset(inspect.signature(Client.connect).parameters) - {"self", "servers"}


def _unknown(name: str, where: str) -> ValueError:
    guess = difflib.get_close_matches(
        name, [*(_TRANSPORT_OPTIONS - _RENAMED_OPTIONS), *_CONNECT_OPTIONS], n=1
    )
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return ValueError(
        f"unknown option {name!r} {where}{hint}; sessionws's options are "
        + ", ".join(sorted(_TRANSPORT_OPTIONS - _RENAMED_OPTIONS))
        + "; other keywords must be nats.connect's (reconnect_time_wait, tls, user_credentials, ...)"
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

    Keywords win over the URL's query string. A name that is neither a transport
    option nor one of ``nats.connect`` raises :class:`ValueError` here, not at open.
    """
    servers, query = parse_url(url)
    connect_options = dict(options)
    transport_options = {key: connect_options.pop(key) for key in options if key in _TRANSPORT_OPTIONS}
    for key in connect_options:
        if key == "servers":
            raise TypeError("give the servers in the URL (nats://a:4222,b:4222), not as a keyword")
        if key not in _CONNECT_OPTIONS:
            raise _unknown(key, "for a NATS transport")
    for key, text in query.items():
        convert = _URL_OPTIONS.get(key)
        if convert is None:
            raise ValueError(
                f"unknown option {key!r} in NATS URL {url!r}; the URL takes "
                + ", ".join(sorted(_URL_OPTIONS.keys() - _RENAMED_OPTIONS))
            )
        try:
            value = convert(text)
        except ValueError:
            raise ValueError(f"option {key}={text!r} in NATS URL {url!r} is not valid") from None
        target = transport_options if key in _TRANSPORT_OPTIONS else connect_options
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
