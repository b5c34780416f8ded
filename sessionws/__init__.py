"""sessionws: websockets tied to a session, closed or messaged on demand, cluster-wide."""

from __future__ import annotations

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
from sessionws._ids import IdFactory, SessionKeyIdProvider, default_id_factory, normalize_id_factory
from sessionws._memory import MemoryHub, MemoryTransport
from sessionws._origins import ANY_ORIGIN, Origin, OriginPolicy, parse_origin, parse_origin_pattern
from sessionws._protocols import Connection, IdProvider, Marker, Registry, Transport, TransportHandler
from sessionws._registry import SessionRegistry
from sessionws._reports import CloseReport, Count, Delivered, Event, Member, Members, SendReport
from sessionws._urls import ENTRY_POINT_GROUP, known_schemes, transport_from_url
from sessionws._version import __version__

__all__ = (
    "ANY_ORIGIN",
    "CLOSE_DEFAULT",
    "CLOSE_OVERFLOW",
    "CLOSE_REVOKED",
    "CLOSE_SHUTDOWN",
    "CLOSE_UNKNOWN_STATE",
    "DEFAULT_MAX_SOCKETS_PER_SESSION",
    "ENTRY_POINT_GROUP",
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
    "Marker",
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
    "TransportHandler",
    "WebSocketGuard",
    "WebSocketRefusedError",
    "__version__",
    "default_id_factory",
    "known_schemes",
    "normalize_id_factory",
    "parse_origin",
    "parse_origin_pattern",
    "transport_from_url",
    "validate_close",
)
