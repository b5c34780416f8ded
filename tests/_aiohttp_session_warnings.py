"""A fixture for the suites that run aiohttp-session (the adapter's and the demo's)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from aiohttp import web

__all__ = ("aiohttp_session_string_keys",)


@pytest.fixture(autouse=True)
def aiohttp_session_string_keys() -> Iterator[None]:
    """aiohttp-session stores its storage under a string request key, which aiohttp
    3.14 reports with ``NotAppKeyWarning`` (and the suite turns warnings into errors).
    Ignore exactly that warning, attributed to aiohttp_session; ours stay errors."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, module="aiohttp_session")
        yield
