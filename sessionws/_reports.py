"""What the cluster verbs return, and the events the registry reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ("CloseReport", "Count", "Delivered", "Event", "Member", "Members", "SendReport")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Answers:
    """What the other nodes answered to a command sent to all of them (see the reports)."""

    nodes: Mapping[str, int] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()
    confirmed: bool = False
    complete: bool = False
    queued: bool = False

    @property
    def answered(self) -> int:
        """The sockets the other nodes that answered counted."""
        return sum(self.nodes.values())


@dataclass(frozen=True, slots=True)
class CloseReport(_Answers):
    """The outcome of ``close_all`` / ``revoke``.

    ``closed_here`` counts this node's sockets. With ``confirm=True``, ``nodes`` maps
    every other node that answered to the number of sockets it closed (0 is an
    answer), ``missing`` names live nodes that did not answer in time, and
    ``complete`` is true when every live node answered. Without ``confirm``, the
    remote part is fire-and-forget (``confirmed`` and ``complete`` are false);
    ``queued`` is true when the remote part waits in the outbox for the broker.
    """

    closed_here: int

    @property
    def total(self) -> int:
        """Sockets closed cluster-wide, as far as the answers tell."""
        return self.closed_here + self.answered


@dataclass(frozen=True, slots=True)
class SendReport(_Answers):
    """The outcome of ``send_all``: sockets the message was queued for here, and with
    ``confirm=True`` on every other node that answered (``nodes``), as for closes."""

    sent_here: int

    @property
    def total(self) -> int:
        """Sockets the message was queued for cluster-wide, as far as the answers tell."""
        return self.sent_here + self.answered


@dataclass(frozen=True, slots=True)
class Delivered:
    """The outcome of ``send_to`` / ``close_handle``: whether the node holding the
    socket found it. ``complete`` is false when that node did not answer in time (or
    the command waits in the outbox: ``queued``)."""

    found: bool
    node: str
    complete: bool = True
    queued: bool = False


@dataclass(frozen=True, slots=True)
class Member:
    """One socket of a key, somewhere in the cluster."""

    handle_id: str
    node: str
    keys: tuple[str, ...]
    data: Mapping[str, object] | None


@dataclass(frozen=True, slots=True)
class Members:
    """``members(key)``: every socket of the key cluster-wide. ``complete`` as for
    counts; ``truncated`` when a node held more than the limit (or than one broker
    message can carry) and listed only part of them."""

    members: tuple[Member, ...]
    complete: bool
    missing: frozenset[str] = frozenset()
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.members)


class Count(NamedTuple):
    """``count(key)``: the cluster-wide number of sockets, and whether every live node answered."""

    total: int
    complete: bool


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a registry, for metrics (see ``on_event``).

    ``name`` is one of: ``registered``, ``unregistered``, ``closed``, ``overflow``,
    ``command_dropped``, ``broker_lost``, ``broker_restored``, ``reconciled``,
    ``outbox_queued``, ``outbox_sent``, ``revocations_reasserted`` (after a broker data
    loss), ``member_joined``, ``member_left``, ``websocket_refused`` (by an adapter,
    before the upgrade). ``detail`` never holds a key in clear.

    ``closed`` (a socket was closed and unregistered) carries ``handle``, ``code`` and
    ``seconds``: the time from the close being issued on this node (the verb here, a
    command's arrival from another node, a reconcile, shutdown) until the close frame
    was sent (or the close timed out or failed) and the socket unregistered. It is
    what :mod:`sessionws.metrics` reports as the close duration histogram.
    """

    name: str
    detail: Mapping[str, object] = field(default_factory=dict)
