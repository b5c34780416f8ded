"""The demo across a cluster, in headless Chromium: two aiohttp demo processes over one
Redis, one browser session with tab A on node 1 and tab B on node 2 (cookies are per host,
not per port, so both nodes see the same session)."""

from __future__ import annotations

import pytest

from tests.browser._harness import DemoNode, Screenshot, Sessions, Tab, expect

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

Cluster = tuple[DemoNode, DemoNode]

#: Three times the page's first reconnect backoff (0.5 s).
STAYS_CLOSED_MS = 1500


async def tabs_on_both_nodes(sessions: Sessions, cluster: Cluster) -> tuple[Tab, Tab]:
    node_1, node_2 = cluster
    session = await sessions.new()
    tab_a = await session.open(node_1.url, "tab A on node-1")
    tab_b = await session.open(node_2.url, "tab B on node-2")
    for tab in (tab_a, tab_b):
        await expect(tab.count).to_have_text("2")  # cluster-wide
    return tab_a, tab_b


async def test_tabs_on_two_nodes_share_the_session_and_count_two_cluster_wide(
    cluster: Cluster, sessions: Sessions, screenshot: Screenshot
) -> None:
    tab_a, tab_b = await tabs_on_both_nodes(sessions, cluster)
    await expect(tab_a.node).to_have_text("node-1")
    await expect(tab_b.node).to_have_text("node-2")
    await expect(tab_a.page.locator("#cluster-note")).to_contain_text("another node of the cluster")
    await expect(tab_b.events("connected").first).to_contain_text("connected to node node-2")
    assert await tab_a.session_id() == await tab_b.session_id()
    stranger = await (await sessions.new()).open(cluster[1].url, "another session on node-2")
    await expect(stranger.count).to_have_text("1")

    # A message sent through node 1 reaches the session's tab on node 2, and no one else.
    await tab_a.click("broadcast")
    for tab in (tab_a, tab_b):
        await expect(tab.events("note")).to_have_count(1)
        await expect(tab.events("note").first).to_contain_text("a tab said hello (via node-1)")
    await expect(stranger.events("note")).to_have_count(0)
    await screenshot([tab_a, tab_b], "connected")


async def test_reset_on_node_1_closes_the_tab_on_node_2_and_both_reconnect_under_a_new_id(
    cluster: Cluster, sessions: Sessions, screenshot: Screenshot
) -> None:
    tab_a, tab_b = await tabs_on_both_nodes(sessions, cluster)
    before = await tab_a.session_id()

    await tab_a.click("reset")
    for tab in (tab_a, tab_b):
        await expect(tab.last_close).to_have_attribute("data-code", "1000")
        await expect(tab.last_close).to_contain_text("closed by server")
        await tab.expect_connected(connections=2)
    after = await tab_b.session_id()
    assert after != before
    assert await tab_a.session_id() == after
    await expect(tab_b.events("connected").first).to_contain_text("connected to node node-2")
    for tab in (tab_a, tab_b):
        await expect(tab.count).to_have_text("2")
    await screenshot([tab_a, tab_b], "reset-and-reconnected")


async def test_log_out_on_node_1_closes_the_tab_on_node_2_with_4401_until_log_in(
    cluster: Cluster, sessions: Sessions, screenshot: Screenshot
) -> None:
    tab_a, tab_b = await tabs_on_both_nodes(sessions, cluster)
    stranger = await (await sessions.new()).open(cluster[1].url, "another session on node-2")
    strangers_id = await stranger.session_id()

    await tab_a.click("logout")
    for tab in (tab_a, tab_b):
        await expect(tab.state).to_have_attribute("data-kind", "revoked")
        await expect(tab.last_close).to_have_attribute("data-code", "4401")
        await expect(tab.last_close).to_contain_text("closed by server")
    await screenshot([tab_a, tab_b], "logged-out")

    await tab_b.page.wait_for_timeout(STAYS_CLOSED_MS)
    for tab in (tab_a, tab_b):
        await expect(tab.state).to_have_attribute("data-kind", "revoked")
        await expect(tab.events("revoked")).to_have_count(1)
        await expect(tab.events("connected")).to_have_count(1)
    # The other session, on node 2 like tab B, saw nothing.
    await stranger.expect_connected(connections=1)
    assert await stranger.session_id() == strangers_id
    await expect(stranger.count).to_have_text("1")
    await expect(stranger.last_close).to_have_text("none yet")

    # Logging in on node 1 lets the tab on node 2 reconnect too, under the new id.
    await tab_a.log_in("bob")
    for tab in (tab_a, tab_b):
        await tab.expect_connected(connections=2)
        await expect(tab.user).to_have_text("bob")
        await expect(tab.count).to_have_text("2")
    assert await tab_a.session_id() == await tab_b.session_id()
