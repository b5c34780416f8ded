"""Bad requests, bad arguments and misbehaving clients: refused cleanly, nothing leaks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

import sessionws_aiohttp as sw
from sessionws import MemoryTransport, NotConfiguredError, SessionRegistry
from tests._helpers import FAST, wait_for
from tests.aiohttp.helpers import (
    Browser,
    client_frame,
    closed_with,
    fast_registry,
    make_app,
    raw_websocket,
    serve,
)

pytestmark = pytest.mark.anyio

OPCODE_TEXT, OPCODE_CLOSE = 0x1, 0x8


async def test_a_plain_get_on_the_websocket_route_is_400_and_registers_nothing() -> None:
    registry = fast_registry()
    async with serve(make_app(registry)) as server, Browser() as browser:
        status, body = await browser.get(server, "/ws")
        assert status == 400 and "websocket upgrade" in body
        assert registry.stats()["registered"] == 0
        # The registry still works: a later close-all has nothing stale to trip on.
        websocket, session_ws_id = await browser.hello(server)
        await sw.close_all_ws(server.app, session_ws_id)
        assert await closed_with(websocket) == (1000, "")


@pytest.mark.parametrize(("code", "reason"), [(1005, ""), (999, ""), (5000, ""), (1000, "x" * 124)])
async def test_an_invalid_close_code_or_reason_is_a_value_error(code: int, reason: str) -> None:
    async with serve(make_app(fast_registry())) as server, Browser() as browser:
        websocket, session_ws_id = await browser.hello(server)
        with pytest.raises(ValueError, match="close"):
            await sw.close_all_ws(server.app, session_ws_id, code=code, reason=reason)
        connection = sw.AiohttpConnection(web.WebSocketResponse())
        with pytest.raises(ValueError, match="close"):
            await connection.close(code, reason)
        assert not websocket.closed


async def test_invalid_arguments_in_a_handler_fail_before_anything_changes() -> None:
    outcomes: list[str] = []

    async def handle_bad_rotate(request: web.Request) -> web.Response:
        before = await sw.get_session_ws_id(request)
        for call in (
            sw.rotate_session_ws_id(request, code=1006),
            sw.schedule_close_all_session_ws(request, web.Response(), code=1004),
        ):
            try:
                await call
            except ValueError:
                outcomes.append("ValueError")
        outcomes.append("kept" if await sw.get_session_ws_id(request) == before else "changed")
        return web.Response()

    app = make_app(fast_registry(), extra_routes=[web.get("/bad", handle_bad_rotate)])
    async with serve(app) as server, Browser() as browser:
        assert (await browser.get(server, "/bad"))[0] == 200
    assert outcomes == ["ValueError", "ValueError", "kept"]


async def test_arguments_are_checked_whether_or_not_the_session_has_an_id() -> None:
    outcomes: list[str] = []

    async def handle_bad_calls(request: web.Request) -> web.Response:
        outcomes.append(f"id: {await sw.get_session_ws_id(request)}")
        for call in (
            sw.close_all_session_ws(request, code=999),
            sw.revoke_session_ws(request, reason="x" * 124),
            sw.revoke_session_ws(request, ttl=0),
            sw.send_session_ws(request, 42),  # type: ignore[arg-type]
            sw.schedule_close_all_session_ws(request, "response"),  # type: ignore[arg-type]
            sw.schedule_close_all_ws(request, web.Response(), ""),
            sw.members_session_ws(request, limit=0),
        ):
            try:
                await call
            except (TypeError, ValueError) as error:
                outcomes.append(type(error).__name__)
        return web.Response()

    app = make_app(fast_registry(), middleware=None, extra_routes=[web.get("/bad", handle_bad_calls)])
    async with serve(app) as server, Browser() as browser:
        assert (await browser.get(server, "/bad"))[0] == 200
    errors = ["ValueError", "ValueError", "ValueError", "TypeError", "TypeError", "ValueError", "ValueError"]
    assert outcomes == ["id: None", *errors]


async def test_garbage_frames_close_only_the_offending_socket() -> None:
    registry = fast_registry()
    async with serve(make_app(registry)) as server, Browser() as browser:
        good, session_ws_id = await browser.hello(server)
        cookies = browser.cookie_header()
        garbage = [
            client_frame(OPCODE_TEXT, b"\xff\xfe not utf-8"),  # invalid text: 1007
            client_frame(0x3, b"reserved opcode"),  # protocol error: 1002
            client_frame(OPCODE_TEXT, b"rsv bits", first_byte=0xF1),  # protocol error: 1002
            b"\x00" * 64,  # not even a frame
        ]
        for junk in garbage:
            async with raw_websocket(server, cookie_header=cookies) as raw:
                opcode, hello = await raw.read_frame()
                assert (opcode, b'"id"' in hello) == (OPCODE_TEXT, True)
                await raw.send(junk)
                opcode, payload = await raw.read_frame()
                assert opcode == OPCODE_CLOSE
                assert int.from_bytes(payload[:2], "big") in (1002, 1007, 1009)
        await wait_for(lambda: registry.local_count(session_ws_id) == 1)
        await good.send_str("still fine")
        assert await good.receive_str(timeout=2) == "echo:still fine"


async def test_a_client_that_vanishes_mid_close_stops_nobody(caplog: pytest.LogCaptureFixture) -> None:
    registry = fast_registry()
    async with serve(make_app(registry)) as server, Browser() as browser:
        good, session_ws_id = await browser.hello(server)
        cookies = browser.cookie_header()
        async with (
            raw_websocket(server, cookie_header=cookies) as vanishing,
            raw_websocket(server, cookie_header=cookies) as silent,
        ):
            await vanishing.read_frame()
            await silent.read_frame()
            await wait_for(lambda: registry.local_count(session_ws_id) == 3)
            closing = asyncio.ensure_future(sw.close_all_ws(server.app, session_ws_id))
            opcode, _ = await vanishing.read_frame()
            assert opcode == OPCODE_CLOSE
            await vanishing.stream.aclose()  # gone, without answering the close
            # `silent` never answers either; the registry bounds its close (close_timeout).
            assert await closed_with(good) == (1000, "")
            await closing
            await wait_for(lambda: registry.stats()["sockets"] == 0, timeout=3)
        assert "Traceback" not in caplog.text


async def test_a_cancelled_handler_is_unregistered() -> None:
    registry = fast_registry()
    started = asyncio.Event()

    async def handle_stuck(request: web.Request) -> web.WebSocketResponse:
        async with sw.session_ws(request) as websocket:
            started.set()
            await asyncio.sleep(3600)  # never reads: only cancellation ends it
        return websocket

    app = make_app(registry, extra_routes=[web.get("/stuck", handle_stuck)])
    # TestServer runs with handler_cancellation=True: a lost client cancels the handler.
    async with serve(app) as server:
        async with raw_websocket(server, "/stuck"):
            await asyncio.wait_for(started.wait(), 3)
            assert registry.stats()["sockets"] == 1
        await wait_for(lambda: registry.stats()["sockets"] == 0)


class SlowMemoryTransport(MemoryTransport):
    """The in-process broker with 300 ms of latency on subscribe (as a remote broker)."""

    async def subscribe(self, channels: Sequence[str]) -> None:
        await anyio.sleep(0.3)
        await super().subscribe(channels)


async def test_a_handler_cancelled_while_registering_leaves_nothing_registered() -> None:
    registry = SessionRegistry(SlowMemoryTransport(), **FAST)
    async with serve(make_app(registry)) as server:
        async with raw_websocket(server):
            pass  # upgraded (the 101 comes before registering), then gone at once
        await anyio.sleep(0.05)
        assert registry.stats()["registered"] == 1  # still registering when cancelled
        await wait_for(lambda: registry.stats()["unregistered"] == 1)
        assert registry.stats()["sockets"] == 0


async def test_setup_forgotten_names_the_fix() -> None:
    with pytest.raises(NotConfiguredError, match=r"sessionws_aiohttp\.setup\(app, registry\)"):
        sw.get_registry(web.Application())

    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        try:
            async with sw.session_ws(request):
                pass
        except NotConfiguredError as error:
            seen.append(str(error))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ws", handle)
    async with serve(app) as server, Browser() as browser:
        await browser.get(server, "/ws")
    assert len(seen) == 1 and "sessionws_aiohttp.setup(app, registry)" in seen[0]


@pytest.mark.parametrize("bad", [None, "", 42])
async def test_an_id_factory_returning_junk_registers_nothing(
    bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = sw.SessionWSRegistry(id_factory=lambda request: bad, transport="memory://")
    async with serve(make_app(registry, middleware=None)) as server, Browser() as browser:
        caplog.set_level(logging.CRITICAL, logger="aiohttp.server")
        with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
            await browser.websocket(server)
        assert failed.value.status == 500
        assert registry.registry.stats()["registered"] == 0


async def test_registering_after_shutdown_is_refused() -> None:
    registry = SessionRegistry("memory://")
    app = make_app(registry)
    async with serve(app):
        pass
    assert not registry.running
    with pytest.raises(NotConfiguredError):
        await registry.register(sw.AiohttpConnection(web.WebSocketResponse()), "key")
