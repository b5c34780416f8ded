"""OpenTelemetry instruments for a registry (``pip install 'sessionws[opentelemetry]'``).

::

    from sessionws.metrics.opentelemetry import OpenTelemetryMetrics

    metrics = OpenTelemetryMetrics()  # on the global MeterProvider, or pass meter_provider=
    registry = metrics.watch(SessionRegistry(url, on_event=metrics.on_event))

The meter is ``sessionws``. Instruments are named ``sessionws.<thing>`` with UCUM units
(``{socket}``, ``{command}``, ``s``): current counts are asynchronous UpDownCounters,
0/1 states asynchronous gauges, totals asynchronous counters, all read from
``registry.stats()`` when the reader collects; ``sessionws.commands.dropped`` carries
the attribute ``sessionws.drop.reason``; ``sessionws.close.duration`` is a histogram
recorded from the registry's ``closed`` events. Only the API is needed here; the app
chooses the SDK, reader and exporter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

try:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter
except ModuleNotFoundError as error:
    raise ModuleNotFoundError(
        "sessionws.metrics.opentelemetry needs the 'opentelemetry' extra: "
        "pip install 'sessionws[opentelemetry]'",
        name=error.name,
    ) from error

from sessionws._registry import SessionRegistry
from sessionws._reports import Event
from sessionws._version import __version__
from sessionws.metrics._spec import CLOSE_DURATION_BUCKETS, METRICS, MetricSpec, dropped, numbers
from sessionws.metrics._watch import RegistryWatch

__all__ = ("OpenTelemetryMetrics",)

#: One collection calls every instrument's callback in a row; they share one read of
#: ``stats()`` (linear in the node's sockets) if it is at most this old, in seconds.
_SNAPSHOT_AGE = 0.05


class OpenTelemetryMetrics(RegistryWatch):
    """Instruments of one registry on a meter.

    ``meter_provider``: where the meter comes from (default: the global one, as set
    by the app's SDK setup). ``on_event``: your own event callback, called after this one.
    """

    def __init__(
        self,
        registry: SessionRegistry | None = None,
        *,
        meter_provider: MeterProvider | None = None,
        on_event: Callable[[Event], object] | None = None,
    ) -> None:
        super().__init__(registry, on_event=on_event)
        self._snapshot: dict[str, Any] | None = None
        self._snapshot_at = 0.0
        meter = get_meter("sessionws", __version__, meter_provider=meter_provider)
        for spec in METRICS:
            callbacks = [self._observer(spec)]
            if spec.kind == "count":
                meter.create_observable_up_down_counter(
                    spec.opentelemetry, callbacks, spec.unit, spec.description
                )
            elif spec.kind == "state":
                meter.create_observable_gauge(spec.opentelemetry, callbacks, spec.unit, spec.description)
            else:
                meter.create_observable_counter(spec.opentelemetry, callbacks, spec.unit, spec.description)
        meter.create_observable_counter(
            "sessionws.commands.dropped",
            [self._observe_dropped],
            "{command}",
            "Broker commands dropped, by reason (sessionws.drop.reason: forged, replayed, malformed, ...).",
        )
        self._durations = meter.create_histogram(
            "sessionws.close.duration",
            unit="s",
            description=(
                "Time from a close issued on this node (close_all, revoke, a command from another "
                "node, a reconcile, shutdown) to the socket closed and unregistered."
            ),
            explicit_bucket_boundaries_advisory=CLOSE_DURATION_BUCKETS,
        )

    def _close_observed(self, seconds: float) -> None:
        self._durations.record(seconds)

    def _read(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if self._snapshot is None or now - self._snapshot_at > _SNAPSHOT_AGE:
            self._snapshot, self._snapshot_at = self._stats(), now
        return self._snapshot

    def _observer(self, spec: MetricSpec) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            stats = self._read()
            if stats is None:
                return []
            value = numbers(stats).get(spec.stat)
            return [] if value is None else [Observation(int(value))]

        return observe

    def _observe_dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        stats = self._read()
        if stats is None:
            return []
        return [
            Observation(count, {"sessionws.drop.reason": reason})
            for reason, count in sorted(dropped(stats).items())
        ]
