"""Metrics of a registry for Prometheus and OpenTelemetry, over ``stats()`` and ``on_event``.

* :mod:`sessionws.metrics.prometheus` — ``PrometheusMetrics``, a collector
  (``pip install 'sessionws[prometheus]'``).
* :mod:`sessionws.metrics.opentelemetry` — ``OpenTelemetryMetrics``, instruments on a
  meter (``pip install 'sessionws[opentelemetry]'``).

Both export the same measurements (:data:`METRICS`, the commands dropped by reason, and
the close duration histogram), each named by its system's conventions. Gauges and
counters are read from ``registry.stats()`` when collected; the close durations come
from the registry's ``closed`` events, so give the registry the exporter's
``on_event``::

    metrics = PrometheusMetrics()
    registry = metrics.watch(SessionRegistry(url, on_event=metrics.on_event))

This module needs neither library.
"""

from __future__ import annotations

from sessionws.metrics._spec import CLOSE_DURATION_BUCKETS, DROP_REASONS, METRICS, MetricSpec

__all__ = ("CLOSE_DURATION_BUCKETS", "DROP_REASONS", "METRICS", "MetricSpec")

# Public names say where to import them from (tracebacks, reprs, pickles), as anyio's do.
for _value in list(globals().values()):
    if getattr(_value, "__module__", "").startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _value
