"""What the exporters export: one table, named for Prometheus and for OpenTelemetry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sessionws._wire import DropReason

__all__ = ("CLOSE_DURATION_BUCKETS", "DROP_REASONS", "METRICS", "MetricSpec", "dropped", "numbers")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One measurement read from ``stats()``.

    ``kind``: ``"count"`` is how many of something there are now (a Prometheus gauge,
    an OpenTelemetry UpDownCounter), ``"state"`` a 0/1 flag (a gauge in both),
    ``"counter"`` a total that only grows. ``prometheus`` is the metric's name without
    the ``_total`` that counters get; ``unit`` is OpenTelemetry's (UCUM).
    """

    stat: str
    kind: Literal["count", "state", "counter"]
    prometheus: str
    opentelemetry: str
    unit: str
    description: str


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("sockets", "count", "sessionws_sockets", "sessionws.sockets", "{socket}",
               "Sockets registered on this node."),
    MetricSpec("keys", "count", "sessionws_keys", "sessionws.keys", "{key}",
               "Keys with at least one socket on this node."),
    MetricSpec("subscriptions", "count", "sessionws_subscriptions", "sessionws.subscriptions",
               "{subscription}", "Broker channels this node is subscribed to for its keys."),
    MetricSpec("outbox", "count", "sessionws_outbox_depth", "sessionws.outbox.depth", "{command}",
               "Commands waiting in the outbox for the broker to return."),
    MetricSpec("members", "count", "sessionws_members", "sessionws.members", "{node}",
               "Other nodes of the cluster heard from recently (heartbeats)."),
    MetricSpec("silent_members", "count", "sessionws_silent_members", "sessionws.members.silent", "{node}",
               "Nodes that fell silent without a goodbye and are still expected (paused, cut off or dead)."),
    MetricSpec("broker_connected", "state", "sessionws_broker_connected", "sessionws.broker.connected",
               "1", "1 while the broker is connected, else 0."),
    MetricSpec("healthy", "state", "sessionws_healthy", "sessionws.healthy", "1",
               "1 while the node is `healthy` (the broker connected and reconciled), else 0."),
    MetricSpec("registered", "counter", "sessionws_registrations", "sessionws.registrations", "{socket}",
               "Sockets registered."),
    MetricSpec("unregistered", "counter", "sessionws_unregistrations", "sessionws.unregistrations",
               "{socket}", "Sockets unregistered (closed by the registry or left)."),
    MetricSpec("closed", "counter", "sessionws_closes", "sessionws.closes", "{socket}",
               "Sockets closed by the registry (close_all, revoke, shutdown, overflow, 1012)."),
    MetricSpec("closed_unknown_state", "counter", "sessionws_unknown_state_closes",
               "sessionws.unknown_state.closes", "{socket}",
               "Sockets closed with 1012 because the node could not know what it missed."),
    MetricSpec("sends_delivered", "counter", "sessionws_messages_delivered", "sessionws.messages.delivered",
               "{message}", "Messages of send_all delivered to sockets of this node."),
    MetricSpec("overflows", "counter", "sessionws_queue_overflows", "sessionws.queue.overflows", "{socket}",
               "Sockets closed with 1013 because their outbound queue overflowed."),
    MetricSpec("commands_sent", "counter", "sessionws_commands_sent", "sessionws.commands.sent",
               "{command}", "Commands published to the broker."),
    MetricSpec("commands_received", "counter", "sessionws_commands_received",
               "sessionws.commands.received", "{command}", "Commands received from other nodes."),
    MetricSpec("outbox_sent", "counter", "sessionws_outbox_sent", "sessionws.outbox.sent", "{command}",
               "Commands sent from the outbox after the broker returned."),
    MetricSpec("reconciles", "counter", "sessionws_reconciles", "sessionws.reconciles", "{reconcile}",
               "Reconciles after the broker returned."),
    MetricSpec("broker_losses", "counter", "sessionws_broker_losses", "sessionws.broker.losses", "{loss}",
               "Times the broker connection was lost."),
)  # fmt: skip

#: The reasons a broker command is dropped (``stats()["dropped_by_reason"]``); exported at 0
#: until seen, so that alerts on them have a series to watch.
DROP_REASONS: tuple[str, ...] = tuple(sorted(get_args(DropReason)))

#: Close duration buckets, in seconds: a close is a frame written to a client, bounded
#: by the registry's ``close_timeout`` (5 s by default).
CLOSE_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def numbers(stats: Mapping[str, Any]) -> dict[str, float]:
    """``stats()`` as numbers: the broker's state as 0/1 under ``broker_connected``."""
    values = {spec.stat: stats.get(spec.stat, 0) for spec in METRICS if spec.stat in stats}
    values["broker_connected"] = 1 if stats.get("broker") == "connected" else 0
    values["healthy"] = 1 if stats.get("healthy") else 0
    return {name: float(value) for name, value in values.items()}


def dropped(stats: Mapping[str, Any]) -> dict[str, int]:
    """Dropped commands by reason, every known reason present."""
    by_reason: Mapping[str, int] = stats.get("dropped_by_reason", {})
    return {**dict.fromkeys(DROP_REASONS, 0), **by_reason}
