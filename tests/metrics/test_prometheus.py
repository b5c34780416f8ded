"""Prometheus metrics scraped over HTTP from a running app's ``/metrics`` (the demo's, on
aiohttp and on Starlette/uvicorn), while real websocket clients come and go and the
app's broker is cut and restored."""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aiohttp
import anyio
import pytest
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import Response

import sessionws_aiohttp
from sessionws import Event, MemoryHub, MemoryTransport, SessionRegistry
from sessionws.metrics import DROP_REASONS, METRICS
from sessionws.metrics.prometheus import PrometheusMetrics
from sessionws.testing import RecordingConnection, memory_cluster, wait_closed
from sessionws_demo import DemoOptions
from sessionws_demo._aiohttp_app import make_app as make_aiohttp_app
from sessionws_demo._starlette_app import make_app as make_starlette_app
from sessionws_starlette import sessionws_lifespan
from tests.aiohttp.helpers import serve
from tests.starlette.servers import uvicorn_server

pytestmark = pytest.mark.anyio

NAMESPACE = "sessionws-demo"
SECRET = "a cookie secret of the metrics tests"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@asynccontextmanager
async def aiohttp_node(transport: str) -> AsyncIterator[tuple[str, SessionRegistry]]:
    app = make_aiohttp_app(DemoOptions(transport=transport, node="web1", secret=SECRET))
    async with serve(app) as server:
        registry = sessionws_aiohttp.get_registry(app)
        assert isinstance(registry, SessionRegistry)
        yield str(server.make_url("/")), registry


@asynccontextmanager
async def starlette_node(transport: str) -> AsyncIterator[tuple[str, SessionRegistry]]:
    app = make_starlette_app(DemoOptions(transport=transport, node="web1", secret=SECRET))
    async with uvicorn_server(app) as base:
        registry = app.state.registry
        assert isinstance(registry, SessionRegistry)
        yield base + "/", registry


Node = Callable[[str], AbstractAsyncContextManager[tuple[str, SessionRegistry]]]


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    async with http.get(base + "metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scraped_until(
    http: aiohttp.ClientSession, base: str, condition: Callable[[Samples], bool]
) -> Samples:
    """Scrape until ``condition`` holds (the values move as the clients and broker do)."""
    last: Samples = {}

    async def check() -> bool:
        nonlocal last
        last = await scrape(http, base)
        return condition(last)

    with anyio.move_on_after(10):
        while not await check():
            await anyio.sleep(0.02)
        return last
    raise AssertionError(f"the scrape never matched; last: {last}")


async def close_code(websocket: aiohttp.ClientWebSocketResponse) -> int:
    """The close code the server sent (skipping the demo's hello and count messages)."""
    with anyio.fail_after(10):
        while True:
            message = await websocket.receive()
            if message.type is aiohttp.WSMsgType.CLOSE:
                code: int = message.data
                return code


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("node", [aiohttp_node, starlette_node], ids=["aiohttp", "starlette"])
async def test_the_scrape_follows_sockets_closes_and_the_broker(node: Node) -> None:
    name = f"metrics-{secrets.token_hex(6)}"
    async with (
        node(f"memory://{name}") as (base, registry),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        before = await scrape(http, base)
        for spec in METRICS:
            suffix = "_total" if spec.kind == "counter" else ""
            assert (spec.prometheus + suffix, ()) in before
        assert value(before, "sessionws_sockets") == 0
        assert value(before, "sessionws_broker_connected") == 1
        assert value(before, "sessionws_healthy") == 1
        assert value(before, "sessionws_members") == 0
        assert value(before, "sessionws_node_info", node=registry.node_id) == 1
        assert {labels for (sample, labels) in before if sample == "sessionws_commands_dropped_total"} == {
            (("reason", reason),) for reason in DROP_REASONS
        }
        closes = value(before, "sessionws_closes_total")
        durations = value(before, "sessionws_close_duration_seconds_count")

        async with await http.get(base) as page:  # the page gives the session its id
            assert page.status == 200
        websocket = await http.ws_connect(base + "ws")
        after = await scraped_until(http, base, lambda s: value(s, "sessionws_sockets") == 1)
        assert value(after, "sessionws_keys") == 1
        assert value(after, "sessionws_subscriptions") >= 1
        assert value(after, "sessionws_registrations_total") >= 1

        # Another node joins the cluster: the members gauge counts it.
        async with memory_cluster(1, hub=MemoryHub.named(name), namespace=NAMESPACE):
            await scraped_until(http, base, lambda s: value(s, "sessionws_members") == 1)

        # A reset closes the session's sockets (1000): the close counters and the histogram move.
        async with http.post(base + "api/reset") as response:
            assert response.status == 200
        assert await close_code(websocket) == 1000
        after = await scraped_until(http, base, lambda s: value(s, "sessionws_closes_total") == closes + 1)
        assert value(after, "sessionws_sockets") == 0
        assert value(after, "sessionws_close_duration_seconds_count") == durations + 1
        assert value(after, "sessionws_close_duration_seconds_sum") > 0
        assert value(after, "sessionws_close_duration_seconds_bucket", le="+Inf") == durations + 1
        assert value(after, "sessionws_unregistrations_total") >= 1

        # The broker away: the state gauges drop, a close waits in the outbox...
        transport = registry.transport
        assert isinstance(transport, MemoryTransport)
        transport.cut()
        await scraped_until(
            http,
            base,
            lambda s: value(s, "sessionws_broker_connected") == 0 and value(s, "sessionws_healthy") == 0,
        )
        async with http.post(base + "api/reset") as response:
            assert response.status == 200
        away = await scraped_until(http, base, lambda s: value(s, "sessionws_outbox_depth") == 1)
        assert value(away, "sessionws_broker_losses_total") == 1
        # ... and is sent when it returns, after a reconcile.
        transport.restore()
        back = await scraped_until(
            http,
            base,
            lambda s: value(s, "sessionws_healthy") == 1 and value(s, "sessionws_outbox_depth") == 0,
        )
        assert value(back, "sessionws_broker_connected") == 1
        assert value(back, "sessionws_reconciles_total") == 1
        assert value(back, "sessionws_outbox_sent_total") == 1

        # A command that is not one: dropped, counted by its reason.
        async with memory_cluster(1, hub=MemoryHub.named(name), namespace=NAMESPACE) as cluster:
            await cluster.transport(0).publish(registry.names.control, b"not a command")
        await scraped_until(
            http, base, lambda s: value(s, "sessionws_commands_dropped_total", reason="malformed") == 1
        )
        await websocket.close()


async def test_an_exporter_watches_one_registry() -> None:
    async with SessionRegistry("memory://") as first, SessionRegistry("memory://") as second:
        metrics = PrometheusMetrics(first, prometheus_registry=None)
        assert metrics.watch(first) is first  # watching it again is fine
        with pytest.raises(ValueError, match="one exporter per registry"):
            metrics.watch(second)
    with pytest.raises(TypeError, match=r"takes a sessionws\.SessionRegistry"):
        PrometheusMetrics(prometheus_registry=None).watch("memory://")  # type: ignore[arg-type]


def test_registering_twice_in_one_prometheus_registry_is_refused() -> None:
    prometheus = CollectorRegistry()
    PrometheusMetrics(prometheus_registry=prometheus)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusMetrics(prometheus_registry=prometheus)


def test_bad_buckets_are_refused() -> None:
    for buckets in ([], [0.0, 1.0], [1.0, 1.0]):
        with pytest.raises(ValueError, match="distinct positive"):
            PrometheusMetrics(prometheus_registry=None, buckets=buckets)


def test_without_prometheus_client_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "sessionws.metrics.prometheus")
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'sessionws\[prometheus\]'"):
        import sessionws.metrics.prometheus  # noqa: F401


def test_your_on_event_still_gets_every_event() -> None:
    seen: list[str] = []
    metrics = PrometheusMetrics(prometheus_registry=None, on_event=lambda event: seen.append(event.name))
    metrics.on_event(Event("closed", {"seconds": 0.5, "code": 1000}))
    metrics.on_event(Event("broker_lost"))
    assert seen == ["closed", "broker_lost"]
    histogram = {sample.name: sample.value for family in metrics.collect() for sample in family.samples}
    assert histogram["sessionws_close_duration_seconds_count"] == 1
    assert histogram["sessionws_close_duration_seconds_sum"] == 0.5


@pytest.mark.parametrize("node", [aiohttp_node, starlette_node], ids=["aiohttp", "starlette"])
async def test_the_demo_runs_without_prometheus_client(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "sessionws.metrics.prometheus")
    async with node(f"memory://metrics-{secrets.token_hex(6)}") as (base, _), aiohttp.ClientSession() as http:
        async with http.get(base) as page:
            assert page.status == 200
        async with http.get(base + "metrics") as response:
            assert response.status == 404


async def test_the_readmes_fastapi_wiring() -> None:
    """The README's Starlette/FastAPI lines (with a Prometheus registry of the test's own)."""
    prometheus = CollectorRegistry()
    metrics = PrometheusMetrics(prometheus_registry=prometheus)
    registry = metrics.watch(SessionRegistry("memory://", on_event=metrics.on_event))
    app = FastAPI(lifespan=sessionws_lifespan(registry))

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(prometheus), media_type=CONTENT_TYPE_LATEST)

    async with uvicorn_server(app) as base, aiohttp.ClientSession() as http:
        before = await scrape(http, base + "/")
        tab = RecordingConnection()
        await registry.register(tab, "session-1")
        await scraped_until(http, base + "/", lambda s: value(s, "sessionws_sockets") == 1)
        await registry.close_all("session-1")
        await wait_closed(tab)
        after = await scraped_until(http, base + "/", lambda s: value(s, "sessionws_sockets") == 0)
        assert value(after, "sessionws_closes_total") == value(before, "sessionws_closes_total") + 1
        assert value(after, "sessionws_close_duration_seconds_count") == 1
