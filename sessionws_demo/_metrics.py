"""The demo's ``GET /metrics``: Prometheus metrics of its registry, when prometheus-client is
installed (``pip install 'sessionws[prometheus]'``; the ``demo`` extra has it)."""

from __future__ import annotations

from collections.abc import Callable

from sessionws import Event, SessionRegistry

__all__ = ("DemoMetrics",)


class DemoMetrics:
    """The registry's metrics in a Prometheus registry of the app's own (two demo apps in
    one process, as in the tests, must not share prometheus_client's global one)."""

    def __init__(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        from sessionws.metrics.prometheus import PrometheusMetrics

        self._prometheus = CollectorRegistry()
        self._exporter = PrometheusMetrics(prometheus_registry=self._prometheus)
        self._generate = generate_latest
        self.content_type: str = CONTENT_TYPE_LATEST

    @classmethod
    def create(cls) -> DemoMetrics | None:
        """The metrics, or ``None`` without prometheus-client (the demo runs without it)."""
        try:
            return cls()
        except ModuleNotFoundError:
            return None

    @property
    def on_event(self) -> Callable[[Event], object]:
        return self._exporter.on_event

    def watch(self, registry: SessionRegistry) -> SessionRegistry:
        return self._exporter.watch(registry)

    @property
    def registry(self) -> SessionRegistry | None:
        """The registry whose metrics these are."""
        return self._exporter.registry

    def render(self) -> bytes:
        """The exposition text of a scrape, now."""
        return self._generate(self._prometheus)
