"""What both adapters check before they upgrade a websocket: its origin, and how many
sockets its session already holds on this node.

The adapters call :meth:`WebSocketGuard.check_origin` first (403), then hold a
:meth:`WebSocketGuard.socket_slot` from the cap check (429) until the registry counts
the socket, so upgrades of one session racing each other cannot overshoot the cap.
Refusals are counted in the registry's ``stats()["refused_by_reason"]`` and logged at
most once a minute per reason (a cross-site page can send thousands).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sessionws._errors import SessionWSError
from sessionws._origins import HeaderValues, OriginPolicy
from sessionws._protocols import Registry

__all__ = (
    "DEFAULT_MAX_SOCKETS_PER_SESSION",
    "REFUSED_ORIGIN",
    "REFUSED_SOCKET_LIMIT",
    "SocketSlot",
    "WebSocketGuard",
    "WebSocketRefusedError",
)

logger = logging.getLogger(__name__)

#: Sockets one session id may hold on one node. A browser session opens one or two per
#: tab; 100 is far beyond what people keep open, while one cookie can no longer pin
#: thousands of sockets (the quick-start apps grew to 59-75 MB with 1,000 of one cookie).
DEFAULT_MAX_SOCKETS_PER_SESSION = 100

#: ``refused_by_reason`` keys.
REFUSED_ORIGIN = "origin"
REFUSED_SOCKET_LIMIT = "sockets_per_session"

_LOG_INTERVAL = 60.0


class WebSocketRefusedError(SessionWSError):
    """An upgrade refused before it happened: the adapter answers ``status``
    (403 for the origin, 429 for the socket cap) with ``message`` as the body."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class _RefusalLog:
    """One warning per reason and interval, with how many were refused meanwhile."""

    def __init__(self, interval: float = _LOG_INTERVAL) -> None:
        self._interval = interval
        self._next: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def refused(self, reason: str, detail: str) -> None:
        now = time.monotonic()
        if now < self._next.get(reason, 0.0):
            self._quiet[reason] = self._quiet.get(reason, 0) + 1
            return
        self._next[reason] = now + self._interval
        more = self._quiet.pop(reason, 0)
        also = f" ({more} more refused for this reason since the last line)" if more else ""
        logger.warning("refused a websocket before the upgrade: %s%s", detail, also)


class WebSocketGuard:
    """The checks before an upgrade, configured once per app.

    Origins (see :class:`~sessionws.OriginPolicy`): ``allowed_origins=None`` allows the
    request's own origin only; a list of origins (``"https://*.example.com"`` for every
    subdomain) allows those; ``"*"`` turns the check off. ``trust_forwarded=True`` reads
    the own origin from ``Forwarded``/``X-Forwarded-*`` (behind a proxy that sets them).
    ``require_origin=True`` also refuses requests without an ``Origin`` header.

    ``max_sockets_per_session``: sockets one session id may hold on this node (default
    100; ``None`` for no cap). Extra keys (users, rooms) are not capped.
    """

    def __init__(
        self,
        *,
        allowed_origins: str | Iterable[str] | None = None,
        trust_forwarded: bool = False,
        require_origin: bool = False,
        max_sockets_per_session: int | None = DEFAULT_MAX_SOCKETS_PER_SESSION,
    ) -> None:
        if max_sockets_per_session is not None and (
            isinstance(max_sockets_per_session, bool)
            or not isinstance(max_sockets_per_session, int)
            or max_sockets_per_session < 1
        ):
            raise ValueError(
                f"max_sockets_per_session must be a positive int, or None for no cap, "
                f"not {max_sockets_per_session!r}"
            )
        self.origins = OriginPolicy(
            allowed_origins, trust_forwarded=trust_forwarded, require_origin=require_origin
        )
        self.max_sockets_per_session = max_sockets_per_session
        self._upgrading: dict[str, int] = {}
        self._log = _RefusalLog()

    def __repr__(self) -> str:
        return f"<WebSocketGuard {self.origins!r} max_sockets_per_session={self.max_sockets_per_session}>"

    def check_origin(self, registry: Registry, headers: HeaderValues, scheme: str, path: str) -> None:
        """Raise :class:`WebSocketRefusedError` (403) when the upgrade's origin is not allowed."""
        verdict = self.origins.check(headers, scheme)
        if verdict.allowed:
            return
        registry.note_refused(REFUSED_ORIGIN)
        self._log.refused(REFUSED_ORIGIN, f"{verdict.reason}, on {path[:200]!r}")
        raise WebSocketRefusedError(
            403, REFUSED_ORIGIN, "websocket refused: this origin may not open websockets here"
        )

    @contextmanager
    def socket_slot(self, registry: Registry, session_id: str) -> Iterator[SocketSlot]:
        """Hold one of the session's socket slots while the socket upgrades.

        Raises :class:`WebSocketRefusedError` (429) when the session already holds
        ``max_sockets_per_session`` sockets on this node (registered or upgrading).
        Call the slot's ``release()`` right before ``registry.register(...)``: the
        registry counts the socket from its first step, before it first waits, so the
        socket is never counted twice nor missed. Leaving the block releases it too.
        """
        cap = self.max_sockets_per_session
        slot = SocketSlot(self._upgrading, session_id if cap is not None else None)
        if cap is not None:
            upgrading = self._upgrading.get(session_id, 0)
            if registry.local_count(session_id) + upgrading >= cap:
                registry.note_refused(REFUSED_SOCKET_LIMIT)
                self._log.refused(
                    REFUSED_SOCKET_LIMIT,
                    f"a session already holds {cap} websockets on this node (max_sockets_per_session)",
                )
                raise WebSocketRefusedError(
                    429,
                    REFUSED_SOCKET_LIMIT,
                    f"websocket refused: this session already has {cap} websockets open on this server",
                )
            self._upgrading[session_id] = upgrading + 1
        try:
            yield slot
        finally:
            slot.release()


class SocketSlot:
    """A session's socket slot held while its socket upgrades (see ``socket_slot``)."""

    __slots__ = ("_session_id", "_upgrading")

    def __init__(self, upgrading: dict[str, int], session_id: str | None) -> None:
        self._upgrading = upgrading
        self._session_id = session_id

    def release(self) -> None:
        """Give the slot back (idempotent): the registry counts the socket from now on."""
        session_id, self._session_id = self._session_id, None
        if session_id is None:
            return
        left = self._upgrading[session_id] - 1
        if left:
            self._upgrading[session_id] = left
        else:
            del self._upgrading[session_id]
