"""sessionws: websockets tied to a session, closed or messaged on demand, cluster-wide.

This is the app's API. Writing a transport? See :mod:`sessionws.transport`.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from sessionws._codes import (
    CLOSE_DEFAULT,
    CLOSE_OVERFLOW,
    CLOSE_REVOKED,
    CLOSE_SHUTDOWN,
    CLOSE_UNKNOWN_STATE,
    validate_close,
)
from sessionws._errors import (
    BrokerUnavailableError,
    KeyRevokedError,
    NotConfiguredError,
    SessionWSError,
    TransportError,
)
from sessionws._guard import DEFAULT_MAX_SOCKETS_PER_SESSION, WebSocketGuard, WebSocketRefusedError
from sessionws._handles import Handle
from sessionws._ids import IdFactory, SessionKeyIdProvider, default_id_factory
from sessionws._memory import MemoryHub, MemoryTransport
from sessionws._origins import ANY_ORIGIN, Origin, OriginPolicy, parse_origin, parse_origin_pattern
from sessionws._protocols import Connection, IdProvider, Registry, Transport
from sessionws._registry import SessionRegistry
from sessionws._reports import CloseReport, Count, Delivered, Event, Member, Members, SendReport
from sessionws._urls import known_schemes, transport_from_url
from sessionws._version import __version__

__all__ = (
    "ANY_ORIGIN",
    "CLOSE_DEFAULT",
    "CLOSE_OVERFLOW",
    "CLOSE_REVOKED",
    "CLOSE_SHUTDOWN",
    "CLOSE_UNKNOWN_STATE",
    "DEFAULT_MAX_SOCKETS_PER_SESSION",
    "BrokerUnavailableError",
    "CloseReport",
    "Connection",
    "Count",
    "Delivered",
    "Event",
    "Handle",
    "IdFactory",
    "IdProvider",
    "KeyRevokedError",
    "Member",
    "Members",
    "MemoryHub",
    "MemoryTransport",
    "NotConfiguredError",
    "Origin",
    "OriginPolicy",
    "Registry",
    "SendReport",
    "SessionKeyIdProvider",
    "SessionRegistry",
    "SessionWSError",
    "Transport",
    "TransportError",
    "WebSocketGuard",
    "WebSocketRefusedError",
    "__version__",
    "default_id_factory",
    "known_schemes",
    "parse_origin",
    "parse_origin_pattern",
    "transport_from_url",
    "validate_close",
)

# Public names say where to import them from (tracebacks, reprs, pickles), as anyio's do.
for _value in list(globals().values()):
    if getattr(_value, "__module__", "").startswith("sessionws._"):
        _value.__module__ = __name__
del _value

# Imported here so the names it re-homes read the same whatever was imported first.
from sessionws import transport as transport  # noqa: E402

# Names that left this module's API: still importable, with a warning saying where they went.
_MOVED = {
    "ENTRY_POINT_GROUP": ("sessionws.transport", "import it from sessionws.transport"),
    "Marker": ("sessionws.transport", "import it from sessionws.transport"),
    "TransportHandler": ("sessionws.transport", "import it from sessionws.transport"),
    "normalize_id_factory": ("sessionws._ids", "it is internal; give the registry id_factory= instead"),
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'sessionws' has no attribute {name!r}")
    module, advice = _MOVED[name]
    warnings.warn(
        f"sessionws.{name} is deprecated and will be removed: {advice}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)
