"""Fixtures of the browser tests: headless Chromium, demo processes, screenshots.

A machine without Chromium or Playwright skips these tests, saying how to get them
(``scripts/check`` installs both); under CI (``CI=true``) a missing browser fails them
instead, so CI cannot pass without running them. One Chromium and one demo process per
framework (and one 2-node cluster over Redis) serve a whole test module: every test opens
its own browser contexts, and a context is a cookie jar, so each test has its own sessions.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Generator, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sessionws_demo import FRAMEWORKS
from tests._redis_servers import running_redis
from tests.browser._harness import (
    REPO_ROOT,
    DemoNode,
    DemoSpec,
    Screenshot,
    Sessions,
    Tab,
    launch_chromium,
    missing_browser,
    running_demos,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser

SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
#: How long an expectation about the page may take: reconnects back off (0.5 s, 1 s, ...)
#: and a revoked tab asks every 2 s whether another tab logged in.
EXPECT_TIMEOUT_MS = 10_000

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser tests, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report, so fixtures can tell whether their test failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module-wide, so that one Chromium (an async fixture) serves a module's tests.

    Not session-wide: anyio's plugin keeps one event loop for as long as a higher-scoped
    async fixture lives, and the rest of the suite (some of it on trio) must not share it.
    """
    return "asyncio"


@pytest.fixture(scope="session")
def browser_available() -> None:
    """Skips (or under CI fails) before any demo process starts when there is no browser."""
    reason = missing_browser()
    if reason is not None:
        _unavailable(reason)


@pytest.fixture(scope="module")
async def chromium(browser_available: None) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="module", params=FRAMEWORKS)
def demo(request: pytest.FixtureRequest, browser_available: None) -> Iterator[DemoNode]:
    """One demo process of each framework (memory transport): a cluster of one."""
    framework: str = request.param
    if framework == "starlette" and (find_spec("starlette") is None or find_spec("uvicorn") is None):
        pytest.skip("the Starlette demo needs starlette and uvicorn: pip install -e '.[demo]'")
    with running_demos(DemoSpec(node=f"{framework}-node", framework=framework)) as (node,):
        yield node


@pytest.fixture(scope="module")
def cluster(browser_available: None) -> Iterator[tuple[DemoNode, DemoNode]]:
    """Two aiohttp demo processes over one Redis, with one cookie secret: a 2-node cluster."""
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed (apt-get install redis-server; scripts/check does it)")
    with running_redis() as redis:
        specs = [DemoSpec(node=f"node-{index}", transport=redis.url) for index in (1, 2)]
        with running_demos(*specs) as (node_1, node_2):
            yield node_1, node_2


def _artifact(request: pytest.FixtureRequest, moment: str) -> Path:
    test = request.node.name.removeprefix("test_")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{test}--{moment}").strip("-")
    return SCREENSHOTS / f"{name}.png"


@pytest.fixture
async def sessions(chromium: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Sessions]:
    """New browser sessions; on failure every tab is screenshotted and its event log
    printed, and no tab may have thrown an uncaught JavaScript error."""
    opened = Sessions(chromium, default_timeout_ms=EXPECT_TIMEOUT_MS)
    try:
        yield opened
        call = request.node.stash.get(_REPORTS, {}).get("call")
        if call is not None and call.failed:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            for index, tab in enumerate(opened.tabs):
                # Best effort: the page may be an error page, or gone.
                try:
                    await tab.page.bring_to_front()
                    path = _artifact(request, f"failed-{index}-{tab.label}")
                    await tab.page.screenshot(path=path, timeout=5000)
                    # Shown under the failure: what the page said, newest first.
                    events = await tab.page.locator("#log").inner_text(timeout=1000)
                    print(f"--- {tab.label} ({path.name}): the page's events\n{events}")
                except Exception as error:
                    print(f"--- {tab.label}: no screenshot or events ({error!r:.200})")
        errors = [error for session in opened.opened for error in session.page_errors]
        assert not errors, f"uncaught JavaScript errors on the page: {errors}"
    finally:
        for session in opened.opened:
            await session.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Screenshot:
    """``await screenshot([tab_a, tab_b], "moment")``: one picture per tab, into
    ``test-artifacts/screenshots/<test>--<moment>--<tab>.png`` (cheap: no compositing)."""

    async def take(tabs: list[Tab], moment: str) -> list[Path]:
        paths = [_artifact(request, f"{moment}--{tab.label}") for tab in tabs]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for tab, path in zip(tabs, paths, strict=True):
            await tab.page.bring_to_front()  # Chromium paints background tabs lazily
            await tab.page.screenshot(path=path)
        return paths

    return take
