"""Pick a transport by URL: the core's table first, then the entry-point group.

Broker packages are imported only when their scheme is used, so the core depends on
``anyio`` alone. Third-party transports register a factory ``factory(url, **options)``
under the entry-point group ``sessionws.transports`` with their scheme as the name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, cast
from urllib.parse import urlsplit

from sessionws._memory import MemoryTransport
from sessionws._protocols import Transport

__all__ = ("ENTRY_POINT_GROUP", "known_schemes", "transport_from_url")

ENTRY_POINT_GROUP = "sessionws.transports"

# scheme -> ("module:factory", extra to install)
_BUILTIN: dict[str, tuple[str, str]] = {
    "redis": ("sessionws_redis:transport_from_url", "redis"),
    "rediss": ("sessionws_redis:transport_from_url", "redis"),
    "redis+cluster": ("sessionws_redis:transport_from_url", "redis"),
    "rediss+cluster": ("sessionws_redis:transport_from_url", "redis"),
    "redis+sentinel": ("sessionws_redis:transport_from_url", "redis"),
    "rediss+sentinel": ("sessionws_redis:transport_from_url", "redis"),
    "nats": ("sessionws_nats:transport_from_url", "nats"),
    "tls": ("sessionws_nats:transport_from_url", "nats"),
}

TransportFactory = Callable[..., Transport]


def _plugins() -> dict[str, Any]:
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


def known_schemes() -> list[str]:
    """Every scheme a URL may use here (built in and installed plugins)."""
    return sorted({"memory", *_BUILTIN, *_plugins()})


def _load(target: str, scheme: str, extra: str) -> TransportFactory:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"the {scheme}:// transport needs the '{extra}' extra: pip install 'sessionws[{extra}]'"
        ) from error
    return cast(TransportFactory, getattr(module, attribute))


def transport_from_url(url: str, **options: Any) -> Transport:
    """Make the transport a URL names (``memory://``, ``redis://``, ``nats://``, ...)."""
    if not isinstance(url, str):
        raise TypeError(f"a transport URL must be a str, not {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryTransport.from_url(url, **options)
    if scheme in _BUILTIN:
        target, extra = _BUILTIN[scheme]
        return _load(target, scheme, extra)(url, **options)
    plugin = _plugins().get(scheme)
    if plugin is not None:
        return cast(TransportFactory, plugin.load())(url, **options)
    raise ValueError(
        f"unknown transport URL scheme {scheme or '(none)'!r} in {url!r}; known schemes: "
        + ", ".join(f"{name}://" for name in known_schemes())
    )
