"""Two demo processes on one Redis with one ``--secret`` share a session, whatever their framework;
a demo whose broker is unreachable says so plainly.

Real processes (``python -m sessionws_demo``), a real ``redis-server``, real HTTP and
websocket clients sharing one cookie jar (one browser: cookies are per host, not port).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from yarl import URL

from sessionws import CLOSE_REVOKED
from tests._nats_servers import NatsServer, NatsServerBinary, server_version
from tests._ports import free_port
from tests._redis_servers import RedisServer, running_redis
from tests.aiohttp.helpers import Browser, closed_with

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SECRET = "one secret for every node of the demo"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


class DemoProcess:
    def __init__(self, process: Process, url: str) -> None:
        self.process = process
        self.url = URL(url)

    def make_url(self, path: str) -> URL:
        return self.url.join(URL(path))


async def _first_line(process: Process) -> str:
    assert process.stdout is not None
    received = b""
    with anyio.fail_after(30):
        while b"\n" not in received:
            received += await process.stdout.receive()
    return received.decode()


@asynccontextmanager
async def demo_process(framework: str, broker: str, node: str) -> AsyncIterator[DemoProcess]:
    command = [
        sys.executable, "-m", "sessionws_demo", "--framework", framework, "--port", "0",
        "--transport", broker, "--secret", SECRET, "--node", node,
    ]  # fmt: skip
    async with await anyio.open_process(command) as process:
        try:
            line = await _first_line(process)
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            assert found, line
            yield DemoProcess(process, found.group(0))
        finally:
            process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(15):
                await process.wait()
            if process.returncode is None:
                process.kill()


async def _hello(browser: Browser, server: DemoProcess) -> tuple[Any, dict[str, Any]]:
    websocket = await browser.websocket(server)
    with anyio.fail_after(10):
        while True:
            message: dict[str, Any] = json.loads(await websocket.receive_str())
            if message["type"] == "hello":
                return websocket, message


@pytest.mark.parametrize(
    ("first", "second"),
    [("aiohttp", "starlette"), ("starlette", "aiohttp"), ("starlette", "starlette")],
)
async def test_a_logout_on_one_node_closes_the_sessions_sockets_on_both(
    redis_server: RedisServer, first: str, second: str
) -> None:
    async with AsyncExitStack() as stack, Browser() as browser:
        one = await stack.enter_async_context(demo_process(first, redis_server.url, "one"))
        two = await stack.enter_async_context(demo_process(second, redis_server.url, "two"))

        status, _ = await browser.get(one, "/")  # the page mints the session's id
        assert status == 200
        async with browser.http.post(one.make_url("/api/login"), json={"user": "ada"}) as response:
            assert response.status == 200
            logged_in = await response.json()
        async with browser.http.get(two.make_url("/api/state")) as response:
            seen_by_two = await response.json()
        assert seen_by_two["user"] == "ada"  # node two reads node one's cookie
        assert seen_by_two["session"] == logged_in["session"]

        socket_one, hello_one = await _hello(browser, one)
        socket_two, hello_two = await _hello(browser, two)
        assert (hello_one["node"], hello_two["node"]) == ("one", "two")
        assert hello_one["session"] == hello_two["session"] == logged_in["session"]

        async with browser.http.post(two.make_url("/api/logout")) as response:
            assert response.status == 200

        assert await closed_with(socket_one, timeout=10) == (CLOSE_REVOKED, "session revoked")
        assert await closed_with(socket_two, timeout=10) == (CLOSE_REVOKED, "session revoked")


@pytest.mark.slow  # the Redis transport keeps trying for its open_timeout (10 s)
async def test_an_unreachable_broker_is_said_in_two_lines_not_a_traceback() -> None:
    broker = f"redis://127.0.0.1:{free_port()}/0"
    results: dict[str, tuple[int | None, str]] = {}

    async def run(framework: str) -> None:
        command = [
            sys.executable, "-m", "sessionws_demo", "--framework", framework, "--port", "0",
            "--transport", broker, "--secret", SECRET,
        ]  # fmt: skip
        completed = await anyio.run_process(command, check=False)
        results[framework] = (completed.returncode, completed.stderr.decode())

    with anyio.fail_after(50):
        async with anyio.create_task_group() as tasks:
            for framework in ("aiohttp", "starlette"):
                tasks.start_soon(run, framework)

    for framework, (code, errors) in results.items():
        assert code == 1, (framework, errors)
        assert "the demo cannot reach its broker at redis://127.0.0.1:" in errors, (framework, errors)
        assert "leave out --transport" in errors
        assert "Traceback" not in errors, (framework, errors)


async def test_a_nats_server_too_old_for_the_markers_is_said_in_one_line_not_a_traceback() -> None:
    """Debian's nats-server (2.9) has no per-message TTL: the demo says so and how to fix it."""
    old = [
        NatsServerBinary(path, version)
        for path in filter(None, [shutil.which("nats-server")])
        if (version := server_version(path)) is not None and version < (2, 11, 0)
    ]
    if not old:
        pytest.skip("no nats-server older than 2.11 on PATH (Debian's package is 2.9)")
    async with NatsServer(old[0]) as server:
        for framework in ("aiohttp", "starlette"):
            command = [
                sys.executable, "-m", "sessionws_demo", "--framework", framework, "--port", "0",
                "--transport", server.url, "--secret", SECRET,
            ]  # fmt: skip
            with anyio.fail_after(30):
                completed = await anyio.run_process(command, check=False)
            errors = completed.stderr.decode()
            assert completed.returncode == 1, (framework, errors)
            assert f"the demo cannot use its broker at {server.url}" in errors, (framework, errors)
            assert "2.11" in errors, (framework, errors)
            assert "Traceback" not in errors, (framework, errors)
