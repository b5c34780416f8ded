"""Options where users put them: sessionws's own in a Redis URL's query, the rest to redis-py.

A Redis URL's query may carry the transport's own options (``?prefix=myapp&
command_timeout=2``), converted to their types here, and the redis-py connection
options redis-py itself reads from a URL (``socket_timeout``, ``ssl_cert_reqs``, ...),
left in the URL for redis-py. Any other name, in the query or as a keyword, is
refused when the transport is built, with a message naming the valid ones, rather
than failing inside ``open()`` with redis-py's ``TypeError``.

Keywords win over the query for the transport's options (as on NATS URLs); a
redis-py option given both in the URL and as a keyword is refused, because
redis-py would silently prefer the URL's.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
)

from sessionws_redis._options import RENAMED_OPTIONS, TransportOptions

__all__ = (
    "OWN_OPTIONS",
    "ParsedUrl",
    "parameters",
    "parse_boolean",
    "split_url",
    "standalone_client_options",
    "url_path_segments",
)

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def parse_boolean(text: str) -> bool:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``), any case."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


_CONVERTERS: Final[Mapping[str, Callable[[str], Any]]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": parse_boolean,
}

#: The transport's own options and how a URL's text becomes their value.
_FIELDS: Final[Mapping[str, Callable[[str], Any]]] = {
    field.name: _CONVERTERS.get(str(field.type), str) for field in dataclasses.fields(TransportOptions)
}
OWN_OPTIONS: Final[Mapping[str, Callable[[str], Any]]] = {
    **_FIELDS,
    **{old: _FIELDS[new] for old, new in RENAMED_OPTIONS.items()},
}

# redis-py options that make sense as text in a URL: those redis-py converts itself,
# and the string-valued ones it passes through. ``decode_responses`` is left out on
# purpose (the transport needs bytes), as is anything that takes a Python object.
_REDIS_URL_OPTIONS: Final = frozenset(
    {
        "db",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_read_size",
        "socket_keepalive",
        "retry_on_timeout",
        "max_connections",
        "health_check_interval",
        "timeout",
        "protocol",
        "client_name",
        "username",
        "password",
        "lib_name",
        "lib_version",
        "encoding",
        "encoding_errors",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
        "ssl_password",
        "ssl_include_verify_flags",
        "ssl_exclude_verify_flags",
    }
)


def parameters(*callables: Callable[..., Any]) -> frozenset[str]:
    """The keyword parameters the callables accept (``self`` and ``**kwargs`` aside)."""
    names: set[str] = set()
    for function in callables:
        for name, parameter in inspect.signature(function).parameters.items():
            if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                names.add(name)
    return frozenset(names)


def standalone_client_options(tls: bool, options: Mapping[str, Any]) -> frozenset[str]:
    """What ``redis.asyncio.Redis.from_url`` passes on to something that accepts it."""
    pool_class = options.get("connection_pool_class", ConnectionPool)
    if not (isinstance(pool_class, type) and issubclass(pool_class, ConnectionPool)):
        pool_class = ConnectionPool
    connection_class = options.get("connection_class", SSLConnection if tls else Connection)
    if not (isinstance(connection_class, type) and issubclass(connection_class, AbstractConnection)):
        connection_class = SSLConnection if tls else Connection
    return parameters(
        AbstractConnection.__init__,
        Connection.__init__,
        connection_class.__init__,
        pool_class.__init__,
    ) | {"single_connection_client", "auto_close_connection_pool", "connection_pool_class"}


@dataclass(frozen=True)
class ParsedUrl:
    """A Redis URL split into what goes where."""

    #: The URL for redis-py, with the transport's own options taken out of its query.
    url: str
    #: The transport's own options, typed (keywords already merged in, keywords winning).
    own: dict[str, Any]
    #: Keyword options for redis-py.
    client: dict[str, Any]


def _unknown(
    name: str, where: str, own: Iterable[str], redis_names: Iterable[str], *, query: bool
) -> ValueError:
    own_sorted = sorted(set(own) - set(RENAMED_OPTIONS))
    redis_sorted = sorted(set(redis_names) - set(own))
    guess = difflib.get_close_matches(name, [*own_sorted, *redis_sorted], n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    if name.startswith("ssl") and "rediss" not in where:
        hint = " (TLS options need a rediss:// URL)"
    if query:
        theirs = "redis-py's options allowed in a URL are " + ", ".join(redis_sorted)
    else:
        theirs = "other keywords must be redis-py connection options (socket_timeout, ssl_cert_reqs, ...)"
    return ValueError(
        f"unknown option {name!r} {where}{hint}; sessionws's options are {', '.join(own_sorted)}; {theirs}"
    )


def split_url(
    url: str,
    options: Mapping[str, Any],
    *,
    client_options: frozenset[str],
    url_options: frozenset[str] | None = None,
    extra_own: Mapping[str, Callable[[str], Any]] | None = None,
) -> ParsedUrl:
    """Split ``url``'s query and the keyword ``options`` between the transport and redis-py.

    ``client_options`` are the keywords the redis-py client accepts; ``url_options``
    the redis-py names allowed in the query (default: those of them redis-py can read
    from text). ``extra_own`` adds options of a transport beyond :class:`TransportOptions`.
    Raises :class:`ValueError` naming the valid options for anything else.
    """
    own_converters = {**OWN_OPTIONS, **(extra_own or {})}
    if url_options is None:
        url_options = _REDIS_URL_OPTIONS & client_options
    scheme = url.partition("://")[0].lower()
    where_url = f"in the {scheme}:// URL's query"
    parts = urlsplit(url)
    if parts.query:
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError(
                f"the query of the {scheme}:// URL is malformed; write it as ?name=value&name=value"
            ) from None
    else:
        pairs = []
    own: dict[str, Any] = {}
    kept: list[str] = []
    seen: set[str] = set()
    for segment, (name, text) in zip(parts.query.split("&") if parts.query else [], pairs, strict=True):
        if name in seen:
            raise ValueError(f"option {name!r} appears twice {where_url}; give it once")
        seen.add(name)
        if name in own_converters:
            try:
                own[name] = own_converters[name](text)
            except ValueError:
                raise ValueError(f"option {name}={text!r} {where_url} is not a valid value") from None
        elif name in url_options:
            kept.append(segment)
        else:
            raise _unknown(name, where_url, own_converters, url_options, query=True)
    client: dict[str, Any] = {}
    for name, value in options.items():
        if name in own_converters:
            own[name] = value
        elif name in client_options:
            if name in seen:
                raise ValueError(f"option {name!r} is given both {where_url} and as a keyword; give it once")
            client[name] = value
        else:
            raise _unknown(name, f"for a {scheme}:// transport", own_converters, client_options, query=False)
    bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), parts.fragment))
    return ParsedUrl(bare, own, client)


def url_path_segments(path: str) -> list[str]:
    """The non-empty, unquoted segments of a URL path."""
    return [unquote(segment) for segment in path.split("/") if segment]
