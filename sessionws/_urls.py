"""Pick a transport by URL: ``memory://`` here, every other scheme from the entry points.

Transports register a factory ``factory(url, **options)`` under the entry-point group
``sessionws.transports``, named by their scheme; the Redis and NATS transports shipped
with sessionws do so in its own ``pyproject.toml``, exactly as a third-party one does.
A factory is imported only when its scheme is used, so the core depends on ``anyio``
alone. The extra named in the entry point (``module:factory [extra]``) is what
``pip install`` needs when that import fails.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast
from urllib.parse import urlsplit

from sessionws._memory import MemoryTransport
from sessionws._protocols import Transport

__all__ = ("ENTRY_POINT_GROUP", "known_schemes", "transport_from_url")

ENTRY_POINT_GROUP = "sessionws.transports"
_DISTRIBUTION = "sessionws"

TransportFactory = Callable[..., Transport]


def _distribution(entry: EntryPoint) -> str | None:
    return entry.dist.name if entry.dist is not None else None


def _registered() -> dict[str, EntryPoint]:
    """The installed transports by scheme. Where two distributions claim one scheme,
    sessionws's own wins: installing a plugin cannot take ``redis://`` over."""
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        scheme = entry.name.lower()
        if scheme not in found or _distribution(entry) == _DISTRIBUTION:
            found[scheme] = entry
    return found


def known_schemes() -> list[str]:
    """Every scheme a URL may use here (``memory`` and the installed transports)."""
    return sorted({"memory", *_registered()})


def _load(entry: EntryPoint, scheme: str) -> TransportFactory:
    try:
        return cast(TransportFactory, entry.load())
    except ImportError as error:
        if not entry.extras:
            raise ImportError(
                f"the {scheme}:// transport ({entry.value}) cannot be imported: {error}"
            ) from error
        extras = ",".join(entry.extras)
        quoted = ", ".join(f"'{extra}'" for extra in entry.extras)
        noun = "extra" if len(entry.extras) == 1 else "extras"
        raise ImportError(
            f"the {scheme}:// transport needs the {quoted} {noun}: "
            f"pip install '{_distribution(entry) or _DISTRIBUTION}[{extras}]'"
        ) from error


def transport_from_url(url: str, **options: Any) -> Transport:
    """Make the transport a URL names (``memory://``, ``redis://``, ``nats://``, ...)."""
    if not isinstance(url, str):
        raise TypeError(f"a transport URL must be a str, not {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryTransport.from_url(url, **options)
    registered = _registered()
    entry = registered.get(scheme)
    if entry is None:
        ours = any(_distribution(entry) == _DISTRIBUTION for entry in registered.values())
        # An install older than the entry points (a stale editable install) has none of ours.
        hint = "" if ours else "; sessionws's own are missing: reinstall it (pip install sessionws)"
        raise ValueError(
            f"unknown transport URL scheme {scheme or '(none)'!r} in {url!r}; known schemes: "
            + ", ".join(f"{name}://" for name in known_schemes())
            + f" (transports register under the entry-point group {ENTRY_POINT_GROUP!r}{hint})"
        )
    return _load(entry, scheme)(url, **options)
