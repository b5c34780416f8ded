"""The two node apps serve the same endpoints (``tests/cluster/node.py`` lists them), so
the 'redis-mixed' cluster runs every cluster test on both adapters."""

from __future__ import annotations

from starlette.routing import Route, WebSocketRoute

from tests.cluster._aiohttp_app import build_aiohttp_app
from tests.cluster._app_common import NodeConfig, make_registry
from tests.cluster._starlette_app import build_starlette_app

#: The aiohttp node's extras: rotating the id, membership events, the benchmark's hooks.
AIOHTTP_ONLY = {
    ("POST", "/rotate"),
    ("GET", "/events"),
    ("GET", "/raw-ws"),
    ("POST", "/raw-close"),
    ("POST", "/bench/register"),
}


def _aiohttp_routes() -> set[tuple[str, str]]:
    config = NodeConfig(transport="memory://", name="node1")
    app = build_aiohttp_app(config, make_registry(config))
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


def _starlette_routes() -> set[tuple[str, str]]:
    config = NodeConfig(transport="memory://", name="node1", framework="starlette")
    app = build_starlette_app(config, make_registry(config))
    routes: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            routes.add(("GET", route.path))
        elif isinstance(route, Route):
            routes.update((method, route.path) for method in route.methods or () if method != "HEAD")
    return routes


def test_both_node_apps_serve_the_same_endpoints() -> None:
    assert _aiohttp_routes() - AIOHTTP_ONLY == _starlette_routes()
