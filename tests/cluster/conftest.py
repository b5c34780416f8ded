"""Fixtures of the cluster suite: one cluster per broker kind, and the clients of a test.

Without ``SESSIONWS_NODES`` the suite starts, per broker kind, the broker and three
node processes on loopback ports (once per session; each test starts from a repaired,
fully joined cluster). With ``SESSIONWS_NODES=http://node1:8000,...`` (the Docker
runner) it runs the same tests against those nodes; ``SESSIONWS_BROKER_URL`` (and for
NATS ``SESSIONWS_NATS_MONITOR``) let it inspect the broker. Tests that kill, pause or
cut off processes skip in that mode, saying why.

``SESSIONWS_CLUSTERS=redis,nats`` limits the local run to some of the clusters
(``redis``, ``redis-mixed`` with Starlette nodes, ``nats``, ``nats-cluster``, ``redis-cluster``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.cluster._clients import Clients
from tests.cluster._cluster import CLUSTER_KINDS, Cluster, external_cluster, local_cluster

_EXTERNAL = external_cluster()
#: How long external nodes may take to be healthy and joined at the start (image start,
#: imports, broker connection; a loaded machine).
_EXTERNAL_START = 90.0
# Against external nodes (the Docker runner) only the cluster tests run; the checks of
# the Docker files need the dev tools (hadolint, ruamel.yaml), which the image lacks.
collect_ignore = ["test_docker_files.py"] if _EXTERNAL is not None else []


def _cluster_kinds() -> list[str]:
    if _EXTERNAL is not None:
        return ["external"]
    chosen = [kind.strip() for kind in os.environ.get("SESSIONWS_CLUSTERS", "").split(",") if kind.strip()]
    unknown = set(chosen) - set(CLUSTER_KINDS)
    if unknown:
        raise ValueError(
            f"SESSIONWS_CLUSTERS names unknown kinds {sorted(unknown)}; known: {', '.join(CLUSTER_KINDS)}"
        )
    return chosen or list(CLUSTER_KINDS)


@pytest.fixture(scope="session", params=_cluster_kinds())
def running_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The broker and the three nodes, for every test of one broker kind."""
    if _EXTERNAL is not None:
        # Nodes someone else started may still be starting (containers started with
        # `docker run` just before the runner, say).
        _EXTERNAL.wait_membership(_EXTERNAL_START)
        yield _EXTERNAL
        return
    kind = str(request.param)
    with local_cluster(kind, tmp_path_factory.mktemp(f"cluster-{kind}")) as cluster:
        yield cluster


@pytest.fixture
def cluster(running_cluster: Cluster) -> Cluster:
    """The cluster, repaired after the previous test and fully joined."""
    running_cluster.ensure_ready()
    return running_cluster


@pytest.fixture
async def clients(cluster: Cluster) -> AsyncIterator[Clients]:
    """This test's browsers and sockets; every socket is closed when the test ends."""
    async with Clients(cluster) as opened:
        yield opened
