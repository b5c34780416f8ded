"""The pytest plugin of sessionws (entry point ``pytest11``: loaded when sessionws is installed).

Every fixture is a plain (sync) fixture that hands the test a factory; the async part
runs inside the test, in whatever event loop the test runs in. So the fixtures work the
same under pytest-asyncio (any mode, any loop scope) and anyio's plugin (asyncio or
trio), and nothing here starts a loop or a task of its own::

    @pytest.mark.asyncio  # or @pytest.mark.anyio
    async def test_logout_closes_other_nodes(sessionws_cluster, sessionws_connection):
        async with sessionws_cluster(2) as cluster:
            tab = sessionws_connection("tab")
            await cluster[1].register(tab, "session-1")
            await cluster[0].close_all("session-1")
            await wait_closed(tab, code=1000)

Fixture names start with ``sessionws_`` so they do not collide with yours. The plugin
registers no option, marker or autouse fixture: a suite that does not ask for these
fixtures runs exactly as without it. (With ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, add
``pytest_plugins = ["sessionws.testing.plugin"]`` to your ``conftest.py``.)
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from sessionws.testing._cluster import TEST_OPTIONS, MemoryCluster, memory_cluster
from sessionws.testing._connection import RecordingConnection

__all__ = ("sessionws_cluster", "sessionws_cluster_options", "sessionws_connection")


@pytest.fixture
def sessionws_cluster_options() -> dict[str, Any]:
    """Registry options for every node ``sessionws_cluster`` starts (override this
    fixture to change them for a module or a whole suite, e.g. to add ``signing_keys``)."""
    return dict(TEST_OPTIONS)


@pytest.fixture
def sessionws_cluster(
    sessionws_cluster_options: dict[str, Any],
) -> Callable[..., AbstractAsyncContextManager[MemoryCluster]]:
    """``async with sessionws_cluster(size=3, **options) as cluster:`` runs ``size``
    registries on one in-memory broker for the block (see
    :func:`sessionws.testing.memory_cluster`); ``options`` add to
    ``sessionws_cluster_options``."""

    def start(size: int = 3, **options: Any) -> AbstractAsyncContextManager[MemoryCluster]:
        return memory_cluster(size, **{**sessionws_cluster_options, **options})

    return start


@pytest.fixture
def sessionws_connection() -> Callable[..., RecordingConnection]:
    """``sessionws_connection(name="", **faults)`` makes a
    :class:`sessionws.testing.RecordingConnection` (see it for the faults)."""
    return RecordingConnection
