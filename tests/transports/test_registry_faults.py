"""The registry over a real Redis server under faults that never drop the
connection, and restarts that keep the data (issue 11).

* A broker frozen (SIGSTOP) longer than the command timeout: the close times out and
  is queued; once the broker resumes the outbox sends it, with no reconnect at all.
* A Redis restarted with its data (AOF, ``appendfsync always``): same epoch, no 1012,
  and a close issued during the outage is applied on reconnect.
"""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from sessionws import Transport
from sessionws_redis import RedisTransport
from tests._helpers import wait_for
from tests._redis_servers import RedisServer
from tests._registry_faults import frozen_broker_loses_no_close, two_nodes
from tests.core.helpers import RecordingConnection

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_redis_frozen_longer_than_the_command_timeout_loses_no_close(redis_server: RedisServer) -> None:
    def make() -> Transport:
        return RedisTransport.from_url(redis_server.url, command_timeout=0.5, health_check_interval=30)

    async with two_nodes(make) as (first, second):
        await frozen_broker_loses_no_close(first, second, redis_server.pause, redis_server.resume)


async def test_a_redis_restart_that_kept_its_data_closes_nothing_and_loses_no_close(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, arguments=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    try:

        def make() -> Transport:
            return RedisTransport.from_url(server.url, reconnect_min_delay=0.02, reconnect_max_delay=0.1)

        async with two_nodes(make) as (first, second):
            kept = RecordingConnection()
            closed = RecordingConnection()
            await second.register(kept, "session-kept")
            await second.register(closed, "session-closed")
            assert server._process is not None
            server._process.send_signal(signal.SIGKILL)
            server._process.wait()
            await wait_for(lambda: not first.healthy and not second.healthy, timeout=20)
            report = await first.close_all("session-closed")  # during the outage
            assert report.queued
            await anyio.to_thread.run_sync(server.start)
            await wait_for(lambda: closed.close_code == 1000, timeout=20)
            await wait_for(lambda: first.healthy and second.healthy, timeout=20)
            assert kept.close_code is None
            assert second.stats()["closed_unknown_state"] == 0
            assert first.stats()["closed_unknown_state"] == 0
    finally:
        server.stop()


async def test_a_redis_restart_that_lost_its_data_closes_with_1012(redis_server: RedisServer) -> None:
    def make() -> Transport:
        return RedisTransport.from_url(redis_server.url, reconnect_min_delay=0.02, reconnect_max_delay=0.1)

    async with two_nodes(make) as (first, second):
        held = RecordingConnection()
        await second.register(held, "session-a")
        await first.revoke("session-revoked")
        await anyio.to_thread.run_sync(redis_server.restart)
        await wait_for(lambda: held.close_code == 1012, timeout=20)
        await wait_for(lambda: first.healthy and second.healthy, timeout=20)
        assert await second.is_revoked("session-revoked")  # re-asserted by the first node
