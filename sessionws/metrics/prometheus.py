"""A Prometheus collector for a registry (``pip install 'sessionws[prometheus]'``).

::

    from prometheus_client import generate_latest
    from sessionws.metrics.prometheus import PrometheusMetrics

    metrics = PrometheusMetrics()  # registers itself in prometheus_client's default registry
    registry = metrics.watch(SessionRegistry(url, on_event=metrics.on_event))
    ...
    body = generate_latest()  # serve it at /metrics (the README shows aiohttp and Starlette)

Names: ``sessionws_`` and the measurement (:data:`sessionws.metrics.METRICS`), ``_total``
on counters, seconds for durations; ``sessionws_commands_dropped_total{reason=...}``,
``sessionws_close_duration_seconds`` (a histogram) and ``sessionws_node_info{node=...}``.
The values are read when Prometheus scrapes, so a scrape costs one ``stats()`` call
(linear in the node's sockets); nothing is done between scrapes but counting closes.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Sequence

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
        Metric,
    )
    from prometheus_client.registry import REGISTRY, CollectorRegistry
except ModuleNotFoundError as error:
    raise ModuleNotFoundError(
        "sessionws.metrics.prometheus needs the 'prometheus' extra: pip install 'sessionws[prometheus]'",
        name=error.name,
    ) from error

from sessionws._registry import SessionRegistry
from sessionws._reports import Event
from sessionws.metrics._spec import CLOSE_DURATION_BUCKETS, METRICS, dropped, numbers
from sessionws.metrics._watch import RegistryWatch

__all__ = ("PrometheusMetrics",)


class PrometheusMetrics(RegistryWatch):
    """A collector of one registry's metrics.

    ``prometheus_registry``: where to register (prometheus_client's default registry;
    ``None`` to register it yourself). ``on_event``: your own event callback, called
    after this one. ``buckets``: the close duration histogram's upper bounds, in seconds.
    """

    def __init__(
        self,
        registry: SessionRegistry | None = None,
        *,
        prometheus_registry: CollectorRegistry | None = REGISTRY,
        on_event: Callable[[Event], object] | None = None,
        buckets: Sequence[float] = CLOSE_DURATION_BUCKETS,
    ) -> None:
        bounds = sorted(float(bound) for bound in buckets)
        if not bounds or bounds[0] <= 0 or len(set(bounds)) != len(bounds):
            raise ValueError("buckets must be distinct positive numbers of seconds")
        self._bounds = bounds
        # One count per bucket (not cumulative) and the +Inf one; the lock makes a
        # scrape from another thread see a consistent histogram.
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()
        super().__init__(registry, on_event=on_event)
        if prometheus_registry is not None:
            prometheus_registry.register(self)

    def _close_observed(self, seconds: float) -> None:
        index = bisect.bisect_left(self._bounds, seconds)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def describe(self) -> Iterable[Metric]:
        """The metric names, without reading the registry (prometheus_client checks
        them for duplicates when the collector is registered)."""
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        """Read the registry now (called on every scrape)."""
        return self._families(self._stats())

    def _families(self, stats: dict[str, object] | None) -> list[Metric]:
        values = numbers(stats) if stats is not None else {}
        families: list[Metric] = []
        for spec in METRICS:
            family: Metric
            if spec.kind == "counter":
                family = CounterMetricFamily(spec.prometheus, spec.description)
            else:
                family = GaugeMetricFamily(spec.prometheus, spec.description)
            if spec.stat in values:
                family.add_metric([], values[spec.stat])
            families.append(family)
        drops = CounterMetricFamily(
            "sessionws_commands_dropped",
            "Broker commands dropped, by reason (forged, replayed, malformed, ...).",
            labels=["reason"],
        )
        if stats is not None:
            for reason, count in sorted(dropped(stats).items()):
                drops.add_metric([reason], count)
        families.append(drops)
        families.append(self._histogram())
        info = InfoMetricFamily("sessionws_node", "This node of the cluster.")
        if stats is not None:
            info.add_metric([], {"node": str(stats.get("node", ""))})
        families.append(info)
        return families

    def _histogram(self) -> HistogramMetricFamily:
        with self._lock:
            counts, total = list(self._counts), self._sum
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip([*self._bounds, float("inf")], counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return HistogramMetricFamily(
            "sessionws_close_duration_seconds",
            "Seconds from a close issued on this node (close_all, revoke, a command from "
            "another node, a reconcile, shutdown) to the socket closed and unregistered.",
            buckets=buckets,
            sum_value=total,
        )
