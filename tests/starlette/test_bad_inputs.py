"""Bad inputs to every entry point of the Starlette adapter get clear errors."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message
from starlette.websockets import WebSocket

from sessionws import SessionKeyIdProvider, SessionRegistry
from sessionws_starlette import (
    ID_PROVIDER_STATE_KEY,
    REGISTRY_STATE_KEY,
    SessionWSMiddleware,
    StarletteConnection,
    close_all_ws,
    rotate_session_ws_id,
    schedule_close_all_session_ws,
    schedule_close_all_ws,
    send_ws,
    session_ws,
    sessionws_lifespan,
    starlette_session,
)
from sessionws_starlette._middleware import _route_path
from tests.starlette.apps import fast_registry, make_app, session_of
from tests.starlette.asgi import http_client, running

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def request_with_registry(**session: Any) -> AsyncIterator[Request]:
    """A bare Request whose scope carries a running registry and a session."""
    async with SessionRegistry("memory://") as registry:
        scope = {
            "type": "http",
            "headers": [],
            "state": {REGISTRY_STATE_KEY: registry},
            "session": session_of(session),
        }
        yield Request(scope)


async def test_invalid_close_codes_are_refused_in_the_handler() -> None:
    async with request_with_registry(sessionws_id="abc") as request:
        with pytest.raises(ValueError, match="close code 999 cannot be sent"):
            await schedule_close_all_session_ws(request, Response(), code=999)
        with pytest.raises(ValueError, match="close code 1005"):
            await rotate_session_ws_id(request, code=1005)
        with pytest.raises(ValueError, match="close code 5000"):
            await close_all_ws(request, "abc", code=5000)
        with pytest.raises(ValueError, match="123"):
            await schedule_close_all_ws(request, Response(), "abc", reason="x" * 124)
        with pytest.raises(ValueError, match="ttl"):
            await rotate_session_ws_id(request, ttl=0)
    async with request_with_registry() as request:
        # No id yet: the arguments are still checked.
        with pytest.raises(ValueError, match="close code 999"):
            await schedule_close_all_session_ws(request, Response(), code=999)


async def test_bad_targets_keys_and_data() -> None:
    async with request_with_registry(sessionws_id="abc") as request:
        with pytest.raises(TypeError, match="Response or BackgroundTasks"):
            await schedule_close_all_ws(request, "response", "abc")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Response or BackgroundTasks"):
            await rotate_session_ws_id(request, object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty"):
            await schedule_close_all_ws(request, Response(), "")
        with pytest.raises(TypeError, match="str or bytes"):
            await send_ws(request, "abc", 42)  # type: ignore[arg-type]


async def test_session_ws_wants_a_key_or_an_iterable_of_keys_and_small_data() -> None:
    # Checked before anything else (a str is one key: see tests/starlette/test_socket_verbs.py).
    websocket = WebSocket({"type": "websocket", "headers": []}, _never_receive, _never_send)
    with pytest.raises(TypeError, match="iterable of str"):
        async with session_ws(websocket, 42):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="at most 256 keys"):
        async with session_ws(websocket, [f"room:{number}" for number in range(256)]):
            pass
    with pytest.raises(ValueError, match="4096"):
        async with session_ws(websocket, data={"name": "x" * 5000}):
            pass
    with pytest.raises(TypeError, match="JSON"):
        async with session_ws(websocket, data={"when": object()}):
            pass


async def _never_receive() -> Message:
    raise AssertionError("not expected")


async def _never_send(message: Message) -> None:
    raise AssertionError("not expected")


def test_middleware_paths_are_checked() -> None:
    app = Starlette()
    with pytest.raises(TypeError, match="collection of path patterns"):
        SessionWSMiddleware(app, paths="/app")
    with pytest.raises(ValueError, match="starting with '/'"):
        SessionWSMiddleware(app, paths=["app"])
    with pytest.raises(ValueError, match="bad path pattern"):
        SessionWSMiddleware(app, paths=["/app/{rest:nonsense}"])
    middleware = SessionWSMiddleware(app, paths=["/", "/rooms/{room}", "/app/{rest:path}"])
    assert middleware.covers("/") and middleware.covers("/rooms/1") and middleware.covers("/app/x/y")
    assert not middleware.covers("/static/app.css") and not middleware.covers("/rooms/1/x")
    assert not middleware.covers("/app")
    # Mounted apps: patterns match the path below the mount point.
    assert _route_path({"path": "/mounted/rooms/1", "root_path": "/mounted"}) == "/rooms/1"
    assert _route_path({"path": "/mounted", "root_path": "/mounted"}) == "/"
    assert _route_path({"path": "/mountedx", "root_path": "/mounted"}) == "/mountedx"


def test_lifespan_arguments_are_checked() -> None:
    registry = SessionRegistry("memory://")
    with pytest.raises(ValueError, match="either id_provider"):
        sessionws_lifespan(registry, id_provider=SessionKeyIdProvider(starlette_session), session_key="k")
    with pytest.raises(TypeError, match=r"such as sessionws\.SessionRegistry"):
        sessionws_lifespan(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session_key"):
        sessionws_lifespan(registry, session_key="")


async def test_an_id_factory_returning_junk_fails_loudly_and_a_custom_session_key_is_used() -> None:
    registry = fast_registry("memory://", "solo")
    app = make_app(registry)
    app.router.lifespan_context = sessionws_lifespan(registry, id_factory=lambda request: "")
    async with running(app) as served, http_client(served) as client:
        with pytest.raises(ValueError, match="empty id"):
            await client.get("/")

    registry = fast_registry("memory://", "solo")
    app = make_app(registry)
    app.router.lifespan_context = sessionws_lifespan(
        registry, session_key="my_ws_id", id_factory=lambda request: "fixed-id"
    )
    async with running(app) as served, http_client(served) as client:
        assert (await client.get("/")).json() == {"id": "fixed-id"}
        payload = client.cookies["session"].split(".")[0]
        assert json.loads(base64.b64decode(payload)) == {"my_ws_id": "fixed-id"}


async def test_the_connection_wrapper_closes_once_and_survives_a_vanished_client() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    websocket = WebSocket({"type": "websocket", "headers": []}, _never_receive, send)
    await websocket.send({"type": "websocket.accept"})
    connection = StarletteConnection(websocket)
    await connection.send("text")
    await connection.send(b"bytes")
    await connection.close(4000, "bye")
    await connection.close(4000, "again")  # already closed: a no-op
    assert [message["type"] for message in sent] == [
        "websocket.accept",
        "websocket.send",
        "websocket.send",
        "websocket.close",
    ]
    assert sent[1]["text"] == "text" and sent[2]["bytes"] == b"bytes"

    async def vanished(message: Message) -> None:
        if message["type"] == "websocket.close":
            raise OSError("connection reset by peer")

    websocket = WebSocket({"type": "websocket", "headers": []}, _never_receive, vanished)
    await websocket.send({"type": "websocket.accept"})
    await StarletteConnection(websocket).close(1000, "")  # no error
    assert ID_PROVIDER_STATE_KEY == "sessionws_id_provider"
