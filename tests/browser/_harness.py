"""Demo processes and headless Chromium, for the browser tests and ``scripts/screenshot-demo``.

The demo runs as the README runs it, ``python -m sessionws_demo ... --port 0``, one OS
process per node; the URL it prints is read from its output. Chromium is Debian's build
(``/usr/bin/chromium``, or ``SESSIONWS_CHROMIUM``), driven by Playwright for Python: no
browser download. Playwright is imported lazily, so that a machine without it can still
collect (and skip) the browser tests.
"""

from __future__ import annotations

import base64
import contextlib
import html
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Locator, Page, Playwright
    from playwright.async_api._generated import LocatorAssertions

__all__ = (
    "CHROMIUM",
    "REPO_ROOT",
    "SECRET",
    "DemoNode",
    "DemoSpec",
    "Screenshot",
    "Session",
    "Sessions",
    "Tab",
    "expect",
    "launch_chromium",
    "missing_browser",
    "running_demos",
    "side_by_side",
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SESSIONWS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Nodes of one cluster share it, so they read each other's session cookies.
SECRET = "the browser tests' cookie secret, shared by every node"
#: One tab's viewport: narrow enough for two side by side in a screenshot.
TAB_WIDTH, TAB_HEIGHT = 640, 800

_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0
_URL = re.compile(r"http://127\.0\.0\.1:\d+/")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or ``None`` when they can."""
    fix = (
        "install chromium and playwright "
        "(scripts/check does it: apt-get install chromium, pip install -e '.[dev]')"
    )
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM}: {fix}"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return f"Playwright for Python is not importable: {fix}"
    return None


async def launch_chromium(playwright: Playwright) -> Browser:
    """Headless Chromium, Debian's build, with nothing that reaches for the network."""
    return await playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))


def expect(locator: Locator) -> LocatorAssertions:
    """Playwright's ``expect`` (waits up to the configured timeout), imported when used."""
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(locator)


@dataclass(frozen=True)
class DemoSpec:
    """One demo node to start."""

    node: str
    framework: str = "aiohttp"
    transport: str = "memory://"
    secret: str = SECRET

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "sessionws_demo",
            "--framework", self.framework,
            "--transport", self.transport,
            "--host", "127.0.0.1",
            "--port", "0",
            "--node", self.node,
            "--secret", self.secret,
        ]  # fmt: skip


@dataclass
class DemoNode:
    """A running ``python -m sessionws_demo``; its output goes to a file (no pipe to fill)."""

    spec: DemoSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = field(default="")

    @property
    def node(self) -> str:
        return self.spec.node

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_listening(self, timeout: float = _START_TIMEOUT) -> None:
        """Wait for the printed URL (the server listens once it is printed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _URL.search(self.output())
            if found:
                self.url = found.group(0)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(
            f"demo node {self.node} ({self.spec.framework}) did not print its URL "
            f"(exit status {self.process.poll()}):\n{self.output()}"
        )

    def stop(self) -> None:
        """SIGTERM (the demo's graceful stop), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running_demos(*specs: DemoSpec) -> Iterator[list[DemoNode]]:
    """Start every node at once, wait until all listen; stop them all on exit, always."""
    with tempfile.TemporaryDirectory(prefix="sessionws-browser-") as directory:
        nodes: list[DemoNode] = []
        try:
            for spec in specs:
                log_path = Path(directory) / f"{spec.node}.log"
                with log_path.open("wb") as log:
                    process = subprocess.Popen(
                        spec.command(),
                        cwd=REPO_ROOT,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )
                nodes.append(DemoNode(spec, process, log_path))
            for node in nodes:
                node.wait_listening()
            yield nodes
        finally:
            for node in nodes:
                node.stop()


class Tab:
    """One page of the demo, read the way a person reads it (ids and data attributes)."""

    def __init__(self, page: Page, label: str) -> None:
        self.page = page
        self.label = label

    @property
    def state(self) -> Locator:
        """The socket's badge; ``data-kind`` is connecting, open, reconnecting or revoked."""
        return self.page.locator("#socket-state")

    @property
    def session(self) -> Locator:
        """The session id as shown (first 8 characters in ``data-session``)."""
        return self.page.locator("#session-id")

    @property
    def count(self) -> Locator:
        """The session's cluster-wide socket count (``data-count``; empty when unknown)."""
        return self.page.locator("#socket-count")

    @property
    def node(self) -> Locator:
        return self.page.locator("#node")

    @property
    def user(self) -> Locator:
        return self.page.locator("#user")

    @property
    def last_close(self) -> Locator:
        """The last close this tab saw: ``data-code``, ``data-reason``, and who closed it."""
        return self.page.locator("#last-close")

    def events(self, kind: str) -> Locator:
        """Entries of the page's event log of one kind, newest first."""
        return self.page.locator(f'#log li[data-event="{kind}"]')

    async def open(self, url: str) -> None:
        """Load the page and wait until its socket is connected."""
        await self.page.goto(url)
        await self.expect_connected()

    async def expect_connected(self, *, connections: int | None = None) -> None:
        """Connected (the server said hello); after ``connections`` connections, if given."""
        await expect(self.state).to_have_attribute("data-kind", "open")
        await expect(self.state).to_have_text("connected")
        if connections is not None:
            await expect(self.events("connected")).to_have_count(connections)

    async def session_id(self) -> str:
        """The id this tab's newest socket was registered under (its log says so)."""
        session = await self.events("connected").first.get_attribute("data-session")
        assert session, "the page has not connected yet"
        return session

    async def click(self, button: str) -> None:
        """Switch to this tab and press a button (by id), as a person would.

        In a background tab Chromium throttles animation frames, and Playwright waits
        for two of them before it clicks: a second or more.
        """
        await self.page.bring_to_front()
        await self.page.click(f"#{button}")

    async def log_in(self, user: str) -> None:
        await self.page.bring_to_front()
        await self.page.fill("#user-name", user)
        await self.page.click("#login")


class Session:
    """One browser context = one cookie jar = one demo session, however many tabs.

    Uncaught JavaScript errors of its pages are kept in ``page_errors``.
    """

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.tabs: list[Tab] = []
        self.page_errors: list[str] = []

    @classmethod
    async def new(cls, browser: Browser) -> Session:
        return cls(await browser.new_context(viewport={"width": TAB_WIDTH, "height": TAB_HEIGHT}))

    async def open(self, url: str, label: str) -> Tab:
        """A new tab on ``url``, once its socket is connected."""
        page = await self.context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(f"{label}: {error}"))
        tab = Tab(page, label)
        self.tabs.append(tab)
        await tab.open(url)
        return tab

    async def close(self) -> None:
        await self.context.close()


#: ``await screenshot([tab_a, tab_b], "moment")`` (the fixture of that name).
Screenshot = Callable[[list["Tab"], str], Awaitable[list[Path]]]


class Sessions:
    """Opens browser sessions for one test (the ``sessions`` fixture closes them after it)."""

    def __init__(self, browser: Browser, *, default_timeout_ms: float) -> None:
        self.browser = browser
        self.default_timeout_ms = default_timeout_ms
        self.opened: list[Session] = []

    async def new(self) -> Session:
        session = await Session.new(self.browser)
        session.context.set_default_timeout(self.default_timeout_ms)
        self.opened.append(session)
        return session

    @property
    def tabs(self) -> list[Tab]:
        return [tab for session in self.opened for tab in session.tabs]


async def side_by_side(browser: Browser, tabs: list[Tab], path: Path) -> None:
    """One picture of several tabs next to each other (whole pages), each under a bar
    with its label and address, like a browser window's."""
    frames = []
    for tab in tabs:
        await tab.page.bring_to_front()  # Chromium paints background tabs lazily
        data = base64.b64encode(await tab.page.screenshot(full_page=True)).decode("ascii")
        address = urlsplit(tab.page.url).netloc
        frames.append(
            f"<figure><figcaption><b>{html.escape(tab.label)}</b><span>{html.escape(address)}</span>"
            f'</figcaption><img src="data:image/png;base64,{data}"></figure>'
        )
    style = (
        "body{margin:0;padding:16px;background:#c9d1da;display:flex;align-items:flex-start;gap:16px;"
        "font:15px system-ui,sans-serif;color:#1d232b}"
        "figure{margin:0;background:#fff;border-radius:10px;overflow:hidden;"
        "box-shadow:0 2px 8px rgba(0,0,0,.18)}"
        "figcaption{display:flex;gap:12px;align-items:center;padding:7px 12px;background:#e9edf1;"
        "border-bottom:1px solid #d8dee5}"
        "figcaption span{flex:1;padding:2px 10px;border-radius:999px;background:#fff;color:#5f6b7a;"
        "font-size:13px}"
        "img{display:block}"
    )
    width = len(tabs) * (TAB_WIDTH + 16) + 16
    page = await browser.new_page(viewport={"width": width, "height": TAB_HEIGHT})
    try:
        await page.set_content(f"<!doctype html><style>{style}</style>{''.join(frames)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=path, full_page=True)
    finally:
        await page.close()
