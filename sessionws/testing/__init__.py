"""Test helpers for apps that use sessionws, and a pytest plugin with fixtures for them.

The helpers run in any event loop (pytest-asyncio's, anyio's plugin on asyncio or trio):

* :func:`memory_cluster` runs N registries on one in-memory broker;
  :class:`MemoryCluster` cuts and restores a node's broker.
* :class:`RecordingConnection` stands in for a websocket and records sends and the close.
* :func:`wait_closed`, :func:`wait_sent`, :func:`wait_until` wait for an outcome with
  a deadline.

The pytest plugin (:mod:`sessionws.testing.plugin`, loaded when sessionws is installed)
offers them as fixtures: ``sessionws_cluster``, ``sessionws_connection`` and
``sessionws_cluster_options``. It adds nothing else: no autouse fixture, no option.
"""

from __future__ import annotations

from sessionws.testing._cluster import TEST_OPTIONS, MemoryCluster, memory_cluster
from sessionws.testing._connection import Frame, RecordingConnection
from sessionws.testing._waiting import DEFAULT_TIMEOUT, wait_closed, wait_sent, wait_until

__all__ = (
    "DEFAULT_TIMEOUT",
    "TEST_OPTIONS",
    "Frame",
    "MemoryCluster",
    "RecordingConnection",
    "memory_cluster",
    "wait_closed",
    "wait_sent",
    "wait_until",
)

# Public names say where to import them from (tracebacks, reprs, pickles), as anyio's do.
for _value in list(globals().values()):
    if getattr(_value, "__module__", "").startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _value
