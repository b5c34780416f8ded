"""sessionws.testing's helpers, used as an app's tests would (through the plugin's fixtures)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from sessionws import CLOSE_REVOKED, CLOSE_UNKNOWN_STATE, MemoryHub, SessionRegistry
from sessionws.testing import (
    MemoryCluster,
    RecordingConnection,
    memory_cluster,
    wait_closed,
    wait_sent,
    wait_until,
)

pytestmark = pytest.mark.anyio

ClusterFactory = Callable[..., AbstractAsyncContextManager[MemoryCluster]]


async def test_a_close_on_one_node_reaches_a_connection_on_another(
    sessionws_cluster: ClusterFactory, sessionws_connection: Callable[..., RecordingConnection]
) -> None:
    async with sessionws_cluster(3) as cluster:
        assert len(cluster) == 3
        assert all(len(node.live_nodes()) == 2 for node in cluster)
        tabs = [sessionws_connection(f"tab{index}") for index in range(3)]
        for index, tab in enumerate(tabs):
            await cluster[index].register(tab, "session-1")
        report = await cluster[0].close_all("session-1", code=4000, reason="bye", confirm=True)
        assert report.complete
        assert report.total == 3
        for tab in tabs:
            assert await wait_closed(tab, code=4000, reason="bye") == 4000


async def test_sends_are_recorded_in_order_with_the_close(sessionws_cluster: ClusterFactory) -> None:
    async with sessionws_cluster(2) as cluster:
        tab, handle = await cluster.connect(1, ["session-1", "room:a"], name="tab")
        await cluster[0].send_all("room:a", "one")
        await cluster[0].send_all("room:a", b"two")
        assert await wait_sent(tab, count=2) == ["one", b"two"]
        await cluster[0].close_all("session-1")
        await wait_closed(tab)
        assert [frame.kind for frame in tab.frames] == ["send", "send", "close"]
        assert cluster[1].local_count("session-1") == 0
        assert handle.closing


async def test_a_node_cut_off_misses_a_close_and_reconciles_it_on_return(
    sessionws_cluster: ClusterFactory,
) -> None:
    async with sessionws_cluster(2) as cluster:
        tab, _ = await cluster.connect(1, "session-1")
        async with cluster.cut_off(1):
            assert not cluster[1].healthy
            await cluster[0].close_all("session-1")
            with pytest.raises(AssertionError, match="was not closed"):
                await wait_closed(tab, timeout=0.3)
        # cut_off waited for the node to reconcile: the close it missed reached the tab.
        assert cluster[1].stats()["healthy"]
        await wait_closed(tab, code=1000)


async def test_closes_issued_while_cut_off_wait_in_the_outbox(sessionws_cluster: ClusterFactory) -> None:
    async with sessionws_cluster(2) as cluster:
        remote, _ = await cluster.connect(1, "user:7")
        cluster.cut(0)
        await wait_until(lambda: not cluster[0].healthy)
        report = await cluster[0].revoke("user:7")
        assert report.queued
        assert cluster[0].stats()["outbox"] == 1
        cluster.restore(0)
        await cluster.wait_healthy()
        await wait_closed(remote, code=CLOSE_REVOKED)


async def test_a_broker_that_lost_its_data_closes_with_1012(sessionws_cluster: ClusterFactory) -> None:
    async with sessionws_cluster(2) as cluster:
        tabs = [(await cluster.connect(index, "session-1"))[0] for index in range(2)]
        cluster.hub.lose_data()
        for tab in tabs:
            await wait_closed(tab, code=CLOSE_UNKNOWN_STATE)


async def test_a_wrong_close_code_fails_with_what_was_seen() -> None:
    async with memory_cluster(1) as cluster:
        tab, _ = await cluster.connect(0, "session-1", name="tab")
        await cluster[0].close_all("session-1", code=4001, reason="why")
        with pytest.raises(AssertionError, match=r"'tab' closed 4001.*closed with 4001 \('why'\), not 1000"):
            await wait_closed(tab, code=1000)
        with pytest.raises(AssertionError, match="reason 'why', not 'because'"):
            await wait_closed(tab, reason="because")


async def test_a_wait_that_times_out_says_what_was_sent() -> None:
    async with memory_cluster(1) as cluster:
        tab, _ = await cluster.connect(0, "session-1", name="tab")
        await cluster[0].send_all("session-1", "hello")
        await wait_sent(tab, "hello")
        with pytest.raises(AssertionError, match=r"was not sent 'bye' \(sent: \['hello'\]\)"):
            await wait_sent(tab, "bye", timeout=0.2)


async def test_faulty_connections_are_closed_anyway() -> None:
    async with memory_cluster(1, close_timeout=0.2) as cluster:
        hanging = RecordingConnection("hangs", hang_on_close=True)
        failing = RecordingConnection("fails", fail_on_close=True)
        for connection in (hanging, failing):
            await cluster[0].register(connection, "session-1")
        await cluster[0].close_all("session-1")
        await wait_until(lambda: cluster[0].local_count("session-1") == 0 and not cluster[0].local_keys())
        assert not hanging.closed and not failing.closed  # the clients never acknowledged


async def test_a_cluster_can_join_the_apps_hub() -> None:
    """An app's registry on ``memory://NAME`` and a test cluster on the same hub."""
    name = "sessionws-testing-join"
    async with (
        SessionRegistry(f"memory://{name}", node_id="app", heartbeat_interval=0.25) as app,
        memory_cluster(1, hub=MemoryHub.named(name)) as cluster,
    ):
        tab = RecordingConnection()
        await app.register(tab, "session-1")
        await cluster[0].close_all("session-1")
        await wait_closed(tab)


def test_options_fixture_reaches_every_node(sessionws_cluster_options: dict[str, Any]) -> None:
    assert sessionws_cluster_options["heartbeat_interval"] > 0
    sessionws_cluster_options["signing_keys"] = ["k"]  # a copy: the defaults are untouched
    from sessionws.testing import TEST_OPTIONS

    assert "signing_keys" not in TEST_OPTIONS


async def test_a_cluster_needs_a_node() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        async with memory_cluster(0):
            pass
