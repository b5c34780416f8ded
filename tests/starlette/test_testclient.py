"""Starlette's own TestClient drives the adapter on trio (and asyncio): the registry runs in
the lifespan, inside the client's event loop thread."""

from __future__ import annotations

import secrets
import warnings
from typing import Literal

import pytest
import starlette.exceptions
from starlette.websockets import WebSocketDisconnect

from sessionws_starlette import MISSING_ID_REASON
from tests.starlette.apps import fast_registry, make_app

# Starlette 1.x would rather its TestClient ran on httpx2; httpx (installed) still works.
# (Before 1.0 there is no such warning; the lowest-versions run tests the oldest Starlette.)
_STARLETTE_DEPRECATION: type[Warning] = getattr(
    starlette.exceptions, "StarletteDeprecationWarning", DeprecationWarning
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", _STARLETTE_DEPRECATION)
    from starlette.testclient import TestClient


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_logout_revoke_and_refusals_through_the_testclient(backend: Literal["trio", "asyncio"]) -> None:
    registry = fast_registry(f"memory://testclient-{secrets.token_hex(6)}", "solo")
    with TestClient(make_app(registry), backend=backend) as client:
        session_id = client.get("/").json()["id"]
        with client.websocket_connect("/ws") as websocket:
            assert websocket.receive_text().startswith("registered")
            assert registry.local_count(session_id) == 1
            assert client.post("/logout").json() == {"logged_out": True}
            with pytest.raises(WebSocketDisconnect) as closed:
                websocket.receive_text()
            assert closed.value.code == 1000

        client.get("/")
        assert client.post("/revoke").json() == {"closed": 0, "complete": True}
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
            pass  # closed before the accept: a server answers 403
        assert refused.value.code == 4401

    with TestClient(make_app(fast_registry("memory://", "solo")), backend=backend) as stranger:
        with stranger.websocket_connect("/ws") as websocket, pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_text()
        assert (closed.value.code, closed.value.reason) == (1008, MISSING_ID_REASON)
    assert not registry.running
