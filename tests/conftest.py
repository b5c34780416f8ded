"""Shared pytest setup: async tests run through anyio's pytest plugin."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Broker tests run on asyncio (redis-py and nats-py are asyncio-only).

    Tests that also run on trio override this fixture with a parametrised one.
    """
    return "asyncio"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``slow`` tests unless SESSIONWS_SLOW=1 (CI sets it; the default run stays fast)."""
    import os

    if os.environ.get("SESSIONWS_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow load test: set SESSIONWS_SLOW=1 to run it (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Let pyproject's pytest-asyncio option pass --strict-config where pytest-asyncio is not
    installed (or is disabled with ``-p no:asyncio``); where it is, it reads the option itself."""
    if not pluginmanager.has_plugin("asyncio"):
        parser.addini(
            "asyncio_default_fixture_loop_scope",
            "pytest-asyncio's option, unused without it",
            default="function",
        )
