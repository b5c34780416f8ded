"""What the metrics exporters cost: a scrape with many sockets, and events on the register path.

    .venv/bin/python -m bench.metrics [--sockets 10000] [--json bench/results/metrics.json]

A node holds ``--sockets`` sockets (each under its own session key and one of a third as
many user keys). Measured, each beside its floor in the same run:

* a Prometheus scrape (``generate_latest`` of a collector registry holding only
  ``PrometheusMetrics``) against one ``registry.stats()`` call, which every scrape makes;
* an OpenTelemetry collection (the SDK's in-memory reader) against the same floor;
* register + unregister of a second socket of a session with ``on_event`` wired to the
  exporter (what the close duration histogram needs) against the same without it: with
  a callback, every registration takes the registry's general path and emits two events.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from sessionws import Event, SessionRegistry
from sessionws.metrics.opentelemetry import OpenTelemetryMetrics
from sessionws.metrics.prometheus import PrometheusMetrics


class Connection:
    async def close(self, code: int, reason: str) -> None:
        return None

    async def send(self, data: str | bytes) -> None:
        return None


def per_call(function: Callable[[], object], repeats: int, pause: float = 0.0) -> float:
    """The best of ``repeats`` timings of one call, in seconds (``pause`` between calls)."""
    best = float("inf")
    for _ in range(repeats):
        time.sleep(pause)
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


async def fill(registry: SessionRegistry, sockets: int) -> None:
    for index in range(sockets):
        await registry.register(Connection(), [f"session-{index}", f"user:{index % max(1, sockets // 3)}"])


async def scrape_costs(sockets: int, repeats: int) -> dict[str, float]:
    prometheus = CollectorRegistry()
    exporter = PrometheusMetrics(prometheus_registry=prometheus)
    reader = InMemoryMetricReader()
    telemetry = OpenTelemetryMetrics(meter_provider=MeterProvider(metric_readers=[reader]))

    def both(event: Event) -> None:
        exporter.on_event(event)
        telemetry.on_event(event)

    async with SessionRegistry("memory://", on_event=both) as registry:
        exporter.watch(registry)
        telemetry.watch(registry)
        await fill(registry, sockets)
        scrape_size = len(generate_latest(prometheus))
        floor = per_call(registry.stats, repeats)
        scrape = per_call(lambda: generate_latest(prometheus), repeats)
        # Apart by more than the exporter keeps a stats() read for its callbacks, so that
        # each collection reads the registry afresh, as a periodic reader's do.
        collect = per_call(reader.get_metrics_data, repeats, pause=0.1)
    return {
        "stats_ms": floor * 1e3,
        "prometheus_scrape_ms": scrape * 1e3,
        "prometheus_scrape_bytes": scrape_size,
        "opentelemetry_collect_ms": collect * 1e3,
    }


async def register_pairs(on_event: Callable[[Event], object] | None, n: int) -> float:
    async with SessionRegistry("memory://", linger=60.0, on_event=on_event) as registry:
        keeper = await registry.register(Connection(), "session")
        connection = Connection()
        start = time.perf_counter()
        for _ in range(n):
            handle = await registry.register(connection, "session")
            await registry.unregister(handle)
        elapsed = (time.perf_counter() - start) / n
        await registry.unregister(keeper)
    return elapsed


async def register_costs(n: int, repeats: int) -> dict[str, float]:
    exporter = PrometheusMetrics(prometheus_registry=None)
    plain: list[float] = []
    wired: list[float] = []
    for _ in range(repeats):  # alternating, so both see the same machine
        plain.append(await register_pairs(None, n))
        wired.append(await register_pairs(exporter.on_event, n))
    return {
        "register_us": min(plain) * 1e6,
        "register_with_events_us": min(wired) * 1e6,
        "register_ratio_median_of_pairs": statistics.median(w / p for p, w in zip(plain, wired, strict=True)),
    }


async def measure(sockets: int, n: int, repeats: int) -> dict[str, float]:
    return {**await scrape_costs(sockets, repeats), **await register_costs(n, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=100_000, help="register+unregister pairs per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench/results/metrics.json"))
    args = parser.parse_args()
    figures = anyio.run(measure, args.sockets, args.n, args.repeats)
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "sockets": args.sockets,
        **figures,
        "prometheus_ratio": figures["prometheus_scrape_ms"] / figures["stats_ms"],
        "opentelemetry_ratio": figures["opentelemetry_collect_ms"] / figures["stats_ms"],
    }
    print(f"stats() with {args.sockets:,} sockets (floor):   {result['stats_ms']:.2f} ms")
    print(
        f"Prometheus scrape:                       {result['prometheus_scrape_ms']:.2f} ms "
        f"({result['prometheus_ratio']:.2f}x, {result['prometheus_scrape_bytes']:,} bytes)"
    )
    print(
        f"OpenTelemetry collection:                {result['opentelemetry_collect_ms']:.2f} ms "
        f"({result['opentelemetry_ratio']:.2f}x)"
    )
    print(
        f"register+unregister, no callback:        {result['register_us']:.3f} µs; with the "
        f"exporter's on_event {result['register_with_events_us']:.3f} µs "
        f"({result['register_ratio_median_of_pairs']:.2f}x, median of {args.repeats} pairs)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
