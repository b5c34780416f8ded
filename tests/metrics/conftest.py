"""Fixtures of the metrics tests."""

from __future__ import annotations

from tests._aiohttp_session_warnings import aiohttp_session_string_keys as aiohttp_session_string_keys
