"""The README's picture of the demo (``scripts/screenshot-demo`` runs this).

Two tabs of one browser session side by side, on two nodes of a cluster over Redis (its
own ``redis-server`` on a free port; one node over ``memory://`` when there is none),
after "Reset session" in tab A and "Message my tabs": both tabs were closed by the server
with 1000 and reconnected under the session's new id, and the note reached both nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from tests._redis_servers import running_redis
from tests.browser._harness import (
    REPO_ROOT,
    DemoSpec,
    Session,
    expect,
    launch_chromium,
    missing_browser,
    running_demos,
    side_by_side,
)

DEFAULT_OUTPUT = REPO_ROOT / "docs" / "images" / "demo.png"


async def take(url_a: str, url_b: str, output: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            session = await Session.new(browser)
            tab_a = await session.open(url_a, "Tab A")
            tab_b = await session.open(url_b, "Tab B")
            for tab in (tab_a, tab_b):
                await expect(tab.count).to_have_text("2")
            await tab_a.click("reset")
            for tab in (tab_a, tab_b):
                await tab.expect_connected(connections=2)
                await expect(tab.count).to_have_text("2")
            await tab_a.click("broadcast")
            for tab in (tab_a, tab_b):
                await expect(tab.events("note")).to_have_count(1)
            await side_by_side(browser, [tab_a, tab_b], output)
        finally:
            await browser.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/screenshot-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUTPUT, help="default: docs/images/demo.png")
    args = parser.parse_args(argv)
    reason = missing_browser()
    if reason is not None:
        print(f"screenshot-demo: {reason}", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as stack:
        if shutil.which("redis-server"):
            redis = stack.enter_context(running_redis())
            specs = [DemoSpec(node=f"node-{index}", transport=redis.url) for index in (1, 2)]
        else:
            specs = [DemoSpec(node="node-1")]
        nodes = stack.enter_context(running_demos(*specs))
        anyio.run(take, nodes[0].url, nodes[-1].url, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
