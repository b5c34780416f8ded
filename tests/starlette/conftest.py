"""The Starlette adapter's tests run on asyncio and trio unless a module says otherwise
(modules with a real uvicorn server pin asyncio: uvicorn runs on asyncio only)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
