"""Websocket close codes the registry uses, and the validation of caller-chosen ones."""

from __future__ import annotations

__all__ = (
    "CLOSE_DEFAULT",
    "CLOSE_OVERFLOW",
    "CLOSE_REVOKED",
    "CLOSE_SHUTDOWN",
    "CLOSE_UNKNOWN_STATE",
    "MAX_REASON_BYTES",
    "validate_close",
)

#: ``close_all`` default: a normal closure, as ``aiohttp_session_ws`` used.
CLOSE_DEFAULT = 1000
#: Graceful shutdown of a node ("going away").
CLOSE_SHUTDOWN = 1001
#: The node cannot know whether it missed a close (broker data lost, outage longer
#: than the marker TTL, fail-closed policy): "service restart" — reconnect and
#: re-authorise.
CLOSE_UNKNOWN_STATE = 1012
#: A connection's outbound queue overflowed ("try again later").
CLOSE_OVERFLOW = 1013
#: ``revoke`` default. 4401 mirrors HTTP 401: the session was revoked; a client
#: should not reconnect until it has authenticated again.
CLOSE_REVOKED = 4401
#: A close frame's reason is limited to 123 bytes of UTF-8 (RFC 6455, 5.5).
MAX_REASON_BYTES = 123

_ALLOWED = frozenset({1000, 1001, 1008, 1011, 1012, 1013, 1014})


def validate_close(code: int, reason: str) -> None:
    """Raise ``ValueError`` / ``TypeError`` unless ``code`` and ``reason`` may be sent.

    Allowed codes: 1000, 1001, 1008, 1011-1014 and the application range 3000-4999;
    the others are reserved for the protocol or cannot be sent in a close frame.
    """
    if not isinstance(code, int) or isinstance(code, bool):
        raise TypeError(f"close code must be an int, not {type(code).__name__}")
    if code not in _ALLOWED and not 3000 <= code <= 4999:
        raise ValueError(f"close code {code} cannot be sent; use 1000, 1001, 1008, 1011-1014 or 3000-4999")
    if not isinstance(reason, str):
        raise TypeError(f"close reason must be a str, not {type(reason).__name__}")
    size = len(reason.encode("utf-8"))
    if size > MAX_REASON_BYTES:
        raise ValueError(f"close reason is {size} bytes of UTF-8; a close frame allows {MAX_REASON_BYTES}")
