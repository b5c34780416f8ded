"""OpenTelemetry instruments, read by the SDK's in-memory reader from a cluster of registries."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint

from sessionws import CLOSE_REVOKED
from sessionws.metrics import CLOSE_DURATION_BUCKETS, DROP_REASONS, METRICS
from sessionws.metrics.opentelemetry import OpenTelemetryMetrics
from sessionws.testing import memory_cluster, wait_closed, wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


class Readings:
    """What the reader collects, by instrument name."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader
        self.metrics: dict[str, Any] = {}

    def read(self) -> Readings:
        data = self.reader.get_metrics_data()
        assert data is not None
        self.metrics = {
            metric.name: metric
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            if scope.scope.name == "sessionws"
            for metric in scope.metrics
        }
        return self

    def points(self, name: str) -> Iterator[Any]:
        return iter(self.metrics[name].data.data_points)

    def value(self, name: str, **attributes: str) -> float:
        for point in self.points(name):
            if dict(point.attributes or {}) == attributes:
                assert isinstance(point, NumberDataPoint)
                return point.value
        raise KeyError((name, attributes))

    def histogram(self, name: str) -> HistogramDataPoint:
        (point,) = self.points(name)
        assert isinstance(point, HistogramDataPoint)
        return point


def exporter() -> tuple[OpenTelemetryMetrics, Readings]:
    reader = InMemoryMetricReader()
    metrics = OpenTelemetryMetrics(meter_provider=MeterProvider(metric_readers=[reader]))
    return metrics, Readings(reader)


async def until(readings: Readings, condition: Any) -> Readings:
    await wait_until(lambda: condition(readings.read()), message=lambda: repr(readings.metrics.keys()))
    return readings


async def test_instruments_follow_sockets_closes_and_the_broker() -> None:
    metrics, readings = exporter()
    async with memory_cluster(2, on_event=metrics.on_event) as cluster:
        metrics.watch(cluster[1])
        readings.read()
        for spec in METRICS:
            assert readings.metrics[spec.opentelemetry].unit == spec.unit
            assert readings.metrics[spec.opentelemetry].description == spec.description
        assert readings.value("sessionws.sockets") == 0
        assert readings.value("sessionws.members") == 1
        assert readings.value("sessionws.broker.connected") == 1
        assert {
            dict(p.attributes)["sessionws.drop.reason"] for p in readings.points("sessionws.commands.dropped")
        } == set(DROP_REASONS)

        tab, _ = await cluster.connect(1, ["session-1", "user:1"])
        await until(readings, lambda r: r.value("sessionws.sockets") == 1 and r.value("sessionws.keys") == 2)
        assert readings.value("sessionws.registrations") == 1

        await cluster[0].revoke("user:1")
        await wait_closed(tab, code=CLOSE_REVOKED)
        await until(
            readings, lambda r: r.value("sessionws.closes") == 1 and r.value("sessionws.sockets") == 0
        )
        assert readings.value("sessionws.commands.received") >= 1
        durations = readings.histogram("sessionws.close.duration")
        assert readings.metrics["sessionws.close.duration"].unit == "s"
        assert durations.count == 1 and durations.sum > 0
        assert tuple(durations.explicit_bounds) == CLOSE_DURATION_BUCKETS

        async with cluster.cut_off(1):
            await until(
                readings,
                lambda r: r.value("sessionws.broker.connected") == 0 and r.value("sessionws.healthy") == 0,
            )
            await cluster[1].close_all("session-2")
            await until(readings, lambda r: r.value("sessionws.outbox.depth") == 1)
        await until(
            readings, lambda r: r.value("sessionws.outbox.depth") == 0 and r.value("sessionws.healthy")
        )
        assert readings.value("sessionws.reconciles") == 1
        assert readings.value("sessionws.broker.losses") == 1
        assert readings.value("sessionws.outbox.sent") == 1

        await cluster.transport(0).publish(cluster[1].names.control, b"\x00 not a command")
        await until(
            readings,
            lambda r: r.value("sessionws.commands.dropped", **{"sessionws.drop.reason": "malformed"}) == 1,
        )


def test_before_watch_nothing_is_observed() -> None:
    metrics, readings = exporter()
    assert metrics.registry is None
    assert readings.reader.get_metrics_data() is None  # no instrument had anything to say


def test_without_the_api_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "sessionws.metrics.opentelemetry")
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'sessionws\[opentelemetry\]'"):
        import sessionws.metrics.opentelemetry  # noqa: F401
