"""The registry's options: the keyword arguments of ``SessionRegistry``, checked in one place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sessionws._reports import Event

__all__ = ("DEFAULT_MARKER_TTL", "DEFAULT_REVOKE_TTL", "RegistryOptions")

DEFAULT_MARKER_TTL = 24 * 3600.0
DEFAULT_REVOKE_TTL = 14 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    """Every option of a registry but its transport (see :class:`~sessionws.SessionRegistry`
    for what each means). Bad values raise ``ValueError`` when the options are made."""

    namespace: str = "sessionws"
    name_secret: str | bytes | None = None
    signing_keys: Sequence[str | bytes] = ()
    heartbeat_interval: float = 2.0
    marker_ttl: float = DEFAULT_MARKER_TTL
    revoke_ttl: float = DEFAULT_REVOKE_TTL
    linger: float = 2.0
    close_timeout: float = 5.0
    send_timeout: float = 10.0
    queue_size: int = 256
    outbox_size: int = 10_000
    fail_closed_after: float | None = None
    confirm_timeout: float = 2.0
    on_event: Callable[[Event], object] | None = None
    node_id: str | None = None
    publish_only: bool = False
    interest_grace: float | None = None
    accept_unbound_commands: bool = False

    def __post_init__(self) -> None:
        for name, value in (
            ("heartbeat_interval", self.heartbeat_interval),
            ("marker_ttl", self.marker_ttl),
            ("revoke_ttl", self.revoke_ttl),
            ("close_timeout", self.close_timeout),
            ("send_timeout", self.send_timeout),
            ("confirm_timeout", self.confirm_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if self.linger < 0:
            raise ValueError("linger must be zero or positive")
        if self.queue_size < 1 or self.outbox_size < 0:
            raise ValueError("queue_size must be at least 1 and outbox_size at least 0")
        if self.fail_closed_after is not None and self.fail_closed_after < 0:
            raise ValueError("fail_closed_after must be None or a number of seconds")
        if self.node_id is not None:
            check_node_id(self.node_id)
        if self.interest_grace is not None:
            check_interest_grace(self.interest_grace)

    @property
    def socket_events(self) -> bool:
        """Whether ``on_event`` wants ``registered`` / ``unregistered``: they cost the
        registration's short path, and a callback that does not want them says so
        with ``socket_events = False``."""
        return self.on_event is not None and bool(getattr(self.on_event, "socket_events", True))

    def grace_for(self, transport: object) -> float:
        """``interest_grace``, else the transport's ``interest_grace`` attribute, else 0."""
        if self.interest_grace is not None:
            return float(self.interest_grace)
        return check_interest_grace(getattr(transport, "interest_grace", 0.0))


def check_node_id(node_id: str) -> str:
    if "." in node_id or not node_id.isprintable():
        raise ValueError("node_id must be printable and contain no '.'")
    return node_id


def check_interest_grace(grace: object) -> float:
    if not isinstance(grace, (int, float)) or grace < 0:
        raise ValueError("interest_grace must be zero or a positive number of seconds")
    return float(grace)
