"""The demo as a person uses it, on one node, in headless Chromium: two tabs of one session
(two pages of one browser context), and a stranger (another context). Every test runs on
the aiohttp and the Starlette versions of the demo."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from tests.browser._harness import DemoNode, Screenshot, Sessions, Tab, expect

if TYPE_CHECKING:
    from playwright.async_api import Route

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

#: Three times the page's first reconnect backoff (0.5 s): a tab that were to reconnect
#: (or try to, and be refused) would have done so.
STAYS_CLOSED_MS = 1500


async def two_tabs(sessions: Sessions, url: str) -> tuple[Tab, Tab]:
    session = await sessions.new()
    return await session.open(url, "tab A"), await session.open(url, "tab B")


async def test_two_tabs_of_one_session_show_its_id_and_a_count_of_two(
    demo: DemoNode, sessions: Sessions, screenshot: Screenshot
) -> None:
    tab_a, tab_b = await two_tabs(sessions, demo.url)
    assert await tab_a.session_id() == await tab_b.session_id()
    for tab in (tab_a, tab_b):
        await expect(tab.session).to_have_attribute("data-session", await tab_a.session_id())
        await expect(tab.count).to_have_text("2")
        await expect(tab.node).to_have_text(demo.node)
        await expect(tab.last_close).to_have_text("none yet")
    await screenshot([tab_a, tab_b], "connected")


async def test_a_node_on_memory_says_how_to_start_a_cluster_instead_of_inviting_to_one(
    demo: DemoNode, sessions: Sessions
) -> None:
    session = await sessions.new()
    tab = await session.open(demo.url, "tab A")
    note = tab.page.locator("#cluster-note")
    await expect(note).to_have_attribute("data-kind", "alone")
    await expect(note).to_contain_text("cluster of one")
    await expect(note).to_contain_text("--transport redis://")
    await expect(note).to_contain_text("--secret")
    await expect(note).not_to_contain_text("another node")


async def test_reset_closes_both_tabs_with_1000_and_they_reconnect_under_a_new_id(
    demo: DemoNode, sessions: Sessions, screenshot: Screenshot
) -> None:
    tab_a, tab_b = await two_tabs(sessions, demo.url)
    before = await tab_a.session_id()
    await expect(tab_a.count).to_have_text("2")

    await tab_a.click("reset")
    for tab in (tab_a, tab_b):
        await expect(tab.last_close).to_have_attribute("data-code", "1000")
        await expect(tab.last_close).to_contain_text("closed by server")
        await expect(tab.events("closed").first).to_contain_text("closed by server: 1000")
        await tab.expect_connected(connections=2)
    after = await tab_a.session_id()
    assert after != before
    assert await tab_b.session_id() == after
    for tab in (tab_a, tab_b):
        await expect(tab.session).to_have_attribute("data-session", after)
        await expect(tab.count).to_have_text("2")
    await screenshot([tab_a, tab_b], "reset-and-reconnected")


async def test_log_out_closes_both_tabs_with_4401_until_log_in_and_spares_another_session(
    demo: DemoNode, sessions: Sessions, screenshot: Screenshot
) -> None:
    tab_a, tab_b = await two_tabs(sessions, demo.url)
    stranger = await (await sessions.new()).open(demo.url, "another session")
    strangers_id = await stranger.session_id()
    assert strangers_id != await tab_a.session_id()
    await expect(tab_a.count).to_have_text("2")

    await tab_a.click("logout")
    for tab in (tab_a, tab_b):
        await expect(tab.state).to_have_attribute("data-kind", "revoked")
        await expect(tab.state).to_have_text("logged out")
        await expect(tab.last_close).to_have_attribute("data-code", "4401")
        await expect(tab.last_close).to_have_attribute("data-reason", "session revoked")
        await expect(tab.last_close).to_contain_text("closed by server")
        await expect(tab.count).to_have_attribute("data-count", "")  # unknown while closed
    await screenshot([tab_a, tab_b], "logged-out")

    # They stay closed: no reconnect, not even an attempt (a refused one would log again).
    await tab_a.page.wait_for_timeout(STAYS_CLOSED_MS)
    for tab in (tab_a, tab_b):
        await expect(tab.state).to_have_attribute("data-kind", "revoked")
        await expect(tab.events("revoked")).to_have_count(1)
        await expect(tab.events("connected")).to_have_count(1)

    # The other session saw nothing: same id, still connected, its count unchanged.
    await stranger.expect_connected(connections=1)
    assert await stranger.session_id() == strangers_id
    await expect(stranger.session).to_have_attribute("data-session", strangers_id)
    await expect(stranger.count).to_have_text("1")
    await expect(stranger.last_close).to_have_text("none yet")

    # Logging in (in tab A) lets both tabs reconnect, under a fresh id, as the user.
    await tab_a.log_in("alice")
    for tab in (tab_a, tab_b):
        await tab.expect_connected(connections=2)
        await expect(tab.user).to_have_text("alice")
        await expect(tab.count).to_have_text("2")
    logged_in = await tab_a.session_id()
    assert await tab_b.session_id() == logged_in
    await screenshot([tab_a, tab_b], "logged-in-again")


async def test_reloading_the_page_keeps_the_id(demo: DemoNode, sessions: Sessions) -> None:
    tab = await (await sessions.new()).open(demo.url, "tab")
    before = await tab.session_id()
    await tab.page.reload()
    await tab.expect_connected(connections=1)  # a fresh page: its log starts over
    assert await tab.session_id() == before
    await expect(tab.session).to_have_attribute("data-session", before)
    await expect(tab.count).to_have_text("1")


@pytest.mark.parametrize("demo", ["aiohttp"], indirect=True)  # the page's logic: one server will do
async def test_a_late_answer_does_not_undo_a_log_in(demo: DemoNode, sessions: Sessions) -> None:
    """A logged-out tab asks for the state every 2 s; an answer that was on its way when
    the user logged in (it says: logged out, the old id) must not be shown over the log-in."""
    tab = await (await sessions.new()).open(demo.url, "tab")
    await tab.click("logout")
    await expect(tab.state).to_have_attribute("data-kind", "revoked")

    delivered = anyio.Event()

    async def answer_late(route: Route) -> None:
        response = await route.fetch()  # the state now: logged out
        await anyio.sleep(1.0)  # meanwhile, the user logs in
        await route.fulfill(response=response)
        delivered.set()

    async with tab.page.expect_request("**/api/state"):
        await tab.page.route("**/api/state", answer_late, times=1)
    await tab.log_in("alice")
    await tab.expect_connected(connections=2)
    logged_in = await tab.session_id()
    with anyio.fail_after(5):
        await delivered.wait()
    await tab.page.wait_for_timeout(200)  # time for the page to (not) act on the late answer
    await tab.expect_connected(connections=2)
    await expect(tab.user).to_have_text("alice")
    await expect(tab.session).to_have_attribute("data-session", logged_in)
