"""What the Redis transport promises beyond the shared contract."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from sessionws._errors import TransportError
from sessionws._protocols import Marker, Transport
from sessionws_redis import RedisClusterTransport, RedisTransport, transport_from_url
from tests._ports import free_port
from tests._redis_servers import RedisServer
from tests.transports._backends import FAST_RECONNECT, Node, Recorder, channel_name

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def test_transport_from_url_picks_the_class_by_scheme(redis_server: RedisServer) -> None:
    assert isinstance(transport_from_url(redis_server.url), RedisTransport)
    assert isinstance(transport_from_url(f"rediss://127.0.0.1:{redis_server.port}"), RedisTransport)
    cluster = transport_from_url(f"redis+cluster://127.0.0.1:{redis_server.port}", prefix="app")
    assert isinstance(cluster, RedisClusterTransport)
    assert isinstance(transport_from_url(redis_server.url), Transport)
    with pytest.raises(ValueError, match=r"redis\+cluster://"):
        transport_from_url("nats://127.0.0.1:4222")
    with pytest.raises(ValueError, match="redis://"):
        RedisTransport.from_url("redis+cluster://127.0.0.1:1")
    with pytest.raises(ValueError, match=r"redis\+cluster://"):
        RedisClusterTransport.from_url("redis://127.0.0.1:1")


@pytest.mark.parametrize(
    "options",
    [
        {"prefix": ""},
        {"prefix": "{tag}"},
        {"prefix": "has space"},
        {"max_payload": 0},
        {"max_payload": 1 << 40},
        {"reconnect_min_delay": 0},
        {"reconnect_min_delay": 2.0, "reconnect_max_delay": 1.0},
        {"command_timeout": -1},
        {"health_check_interval": float("inf")},
    ],
)
def test_bad_options_are_refused(redis_server: RedisServer, options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"prefix|max_payload|delay|timeout|interval"):
        RedisTransport.from_url(redis_server.url, **options)


async def test_a_client_must_return_bytes(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses=False"):
            RedisTransport(client)
    finally:
        await client.aclose()
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        RedisTransport(object())  # type: ignore[arg-type]


async def test_open_raises_transport_error_when_redis_is_unreachable() -> None:
    transport = RedisTransport.from_url(
        f"redis://127.0.0.1:{free_port()}", **{**FAST_RECONNECT, "open_timeout": 0.3}
    )
    with pytest.raises(TransportError, match="cannot connect"):
        async with transport.open(Recorder()):
            raise AssertionError("open() must not succeed without a broker")


async def test_a_ready_client_is_used_and_left_open(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url)
    try:
        transport = RedisTransport(client, prefix="ready")
        channel = channel_name()
        node = Node(transport)
        async with transport.open(node.recorder):
            await transport.subscribe([channel])
            assert await client.publish(channel, b"from the app's client") == 1
            await node.recorder.wait_for_messages(channel, 1)
        assert await client.ping()
    finally:
        await client.aclose()


async def test_keys_carry_the_prefix_as_hash_tag(redis_server: RedisServer) -> None:
    first = RedisTransport.from_url(redis_server.url, prefix="prefix-one")
    second = RedisTransport.from_url(redis_server.url, prefix="prefix-two")
    client = Redis.from_url(redis_server.url)
    try:
        async with first.open(Recorder()), second.open(Recorder()):
            one = await first.mark("shared.key", b"one", 30)
            two = await second.mark("shared.key", b"two", 30)
            assert await first.read_markers(["shared.key"]) == [Marker(one, b"one")]
            assert await second.read_markers(["shared.key"]) == [Marker(two, b"two")]
            assert await client.get("{prefix-one}:marker:shared.key") == f"{one}:one".encode()
            assert int(await client.get("{prefix-two}:sequence") or 0) == two
            assert 0 < await client.pttl("{prefix-one}:marker:shared.key") <= 30_000
    finally:
        await client.aclose()


async def test_subscriptions_are_on_the_server_when_subscribe_returns_and_gone_after(
    redis_server: RedisServer,
) -> None:
    channels = [channel_name("confirm") for _ in range(20)]
    client = Redis.from_url(redis_server.url)
    try:
        transport = RedisTransport.from_url(redis_server.url)
        async with transport.open(Recorder()):
            await transport.subscribe(channels)
            assert dict(await client.pubsub_numsub(*channels)) == {c.encode(): 1 for c in channels}
            await transport.unsubscribe(channels)
            assert dict(await client.pubsub_numsub(*channels)) == {c.encode(): 0 for c in channels}
            await transport.subscribe(channels[:1])
        assert await client.pubsub_channels("test.confirm.*") == []
    finally:
        await client.aclose()


class FailingHandler(Recorder):
    """A handler whose first message and connection events raise."""

    def message_received(self, channel: str, payload: bytes) -> None:
        super().message_received(channel, payload)
        if len(self.messages) == 1:
            raise RuntimeError("handler bug")

    def connection_lost(self) -> None:
        super().connection_lost()
        raise RuntimeError("handler bug")


async def test_a_failing_handler_does_not_silence_the_listener(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    channel = channel_name()
    handler = FailingHandler()
    transport = RedisTransport.from_url(redis_server.url, **FAST_RECONNECT)
    publisher = RedisTransport.from_url(redis_server.url)
    client = Redis.from_url(redis_server.url)
    try:
        with caplog.at_level(logging.ERROR, logger="sessionws.redis"):
            async with transport.open(handler), publisher.open(Recorder()):
                await transport.subscribe([channel])
                for payload in (b"first", b"second"):
                    await publisher.publish(channel, payload)
                assert await handler.wait_for_messages(channel, 2) == [b"first", b"second"]
                await client.client_kill_filter(_type="pubsub")
                await handler.wait_for_event("restored")
                await publisher.publish(channel, b"third")
                assert await handler.wait_for_messages(channel, 3) == [b"first", b"second", b"third"]
    finally:
        await client.aclose()
    assert "the transport handler failed on a message" in caplog.text
    assert "the transport handler failed on a connection event" in caplog.text


async def test_a_connection_killed_by_the_server_is_restored_with_the_same_identity(
    redis_server: RedisServer,
) -> None:
    channel = channel_name()
    client = Redis.from_url(redis_server.url)
    try:
        subscriber = Node(RedisTransport.from_url(redis_server.url, **FAST_RECONNECT))
        async with subscriber.transport.open(subscriber.recorder):
            await subscriber.transport.subscribe([channel])
            identity = subscriber.transport.identity
            assert await client.client_kill_filter(_type="pubsub") >= 1
            await subscriber.recorder.wait_for_event("restored")
            assert subscriber.recorder.events == ["lost", "restored"]
            assert subscriber.transport.identity == identity
            assert await client.publish(channel, b"still here") == 1
            await subscriber.recorder.wait_for_messages(channel, 1)
    finally:
        await client.aclose()


async def test_a_hung_broker_is_noticed_by_the_health_check(redis_server: RedisServer) -> None:
    channel = channel_name()
    options = {**FAST_RECONNECT, "health_check_interval": 0.1, "command_timeout": 0.3}
    subscriber = Node(RedisTransport.from_url(redis_server.url, **options))
    try:
        async with subscriber.transport.open(subscriber.recorder):
            await subscriber.transport.subscribe([channel])
            redis_server.pause()
            await subscriber.recorder.wait_for_event("lost", timeout=5)
            assert not subscriber.transport.connected
            with pytest.raises(TransportError):
                await subscriber.transport.subscribe([channel_name()])
            redis_server.resume()
            await subscriber.recorder.wait_for_event("restored", timeout=5)
            assert subscriber.transport.connected
    finally:
        redis_server.resume()


async def test_commands_to_a_hung_broker_fail_within_the_command_timeout(redis_server: RedisServer) -> None:
    """The transport bounds its commands itself: the client it builds has no socket
    timeout (with one, redis-py sends every command through a task of its own)."""
    transport = RedisTransport.from_url(redis_server.url, **{**FAST_RECONNECT, "command_timeout": 0.3})
    assert transport._client.connection_pool.connection_kwargs["socket_timeout"] is None
    assert (
        RedisTransport.from_url(
            redis_server.url, socket_timeout=2.0
        )._client.connection_pool.connection_kwargs["socket_timeout"]
        == 2.0
    )
    node = Node(transport)
    try:
        async with transport.open(node.recorder):
            assert await transport.publish(channel_name(), b"before") == 0
            redis_server.pause()
            for call in (
                lambda: transport.publish(channel_name(), b"hung"),
                lambda: transport.mark("k", b"v", 5.0),
                lambda: transport.read_markers(["k"]),
                lambda: transport.mark_and_publish_numbered("k", b"v", 5.0, channel_name(), b"h", b"t"),
            ):
                # The transport's own bound ends the call (a TimeoutError behind the
                # TransportError); the fail_after only stops a hang.
                with anyio.fail_after(30), pytest.raises(TransportError, match="unreachable") as raised:
                    await call()
                assert isinstance(raised.value.__cause__, TimeoutError), raised.value.__cause__
            redis_server.resume()
            # The connections cut off mid-command were dropped; the next command works.
            with anyio.fail_after(5):
                while True:
                    try:
                        assert await transport.publish(channel_name(), b"after") == 0
                        break
                    except TransportError:
                        await anyio.sleep(0.05)
    finally:
        redis_server.resume()


async def test_resubscribe_after_restart_covers_channels_added_meanwhile(redis_server: RedisServer) -> None:
    early, late = channel_name(), channel_name()
    subscriber = Node(RedisTransport.from_url(redis_server.url, **FAST_RECONNECT))
    async with subscriber.transport.open(subscriber.recorder):
        await subscriber.transport.subscribe([early])
        await anyio.to_thread.run_sync(redis_server.kill)
        await subscriber.recorder.wait_for_event("lost")
        with pytest.raises(TransportError):
            await subscriber.transport.subscribe([late])
        await anyio.to_thread.run_sync(redis_server.start)
        await subscriber.recorder.wait_for_event("restored")
        client = Redis.from_url(redis_server.url)
        try:
            assert dict(await client.pubsub_numsub(early, late)) == {early.encode(): 1, late.encode(): 1}
        finally:
            await client.aclose()


async def test_cluster_open_raises_transport_error_when_unreachable() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    transport = RedisClusterTransport.from_url(url, **{**FAST_RECONNECT, "open_timeout": 0.3})
    with pytest.raises(TransportError, match=r"cluster discovery|did not answer"):
        async with transport.open(Recorder()):
            raise AssertionError("open() must not succeed without a broker")


async def test_errors_raised_inside_open_come_out_unwrapped(redis_server: RedisServer) -> None:
    transport = RedisTransport.from_url(redis_server.url)
    with pytest.raises(KeyError, match="the app's own error"):
        async with transport.open(Recorder()):
            raise KeyError("the app's own error")
    assert not transport.connected


async def test_a_restart_that_kept_its_data_keeps_the_identity(tmp_path: Path) -> None:
    """A Redis that restarts with its data (AOF) is the same broker: the epoch stays, so
    the registry reconciles from the markers instead of closing everyone with 1012."""
    server = RedisServer(
        tmp_path / "aof",
        arguments=["--appendonly", "yes", "--appendfsync", "always"],
    )
    server.start()
    try:
        node = Node(RedisTransport.from_url(server.url, **FAST_RECONNECT))
        async with node.transport.open(node.recorder):
            identity = node.transport.identity
            sequence = await node.transport.mark("kept", b"before", 60)
            await anyio.to_thread.run_sync(server.restart)
            await node.recorder.wait_for_event("restored")
            assert node.transport.identity == identity
            assert await node.transport.read_markers(["kept"]) == [Marker(sequence, b"before")]
            assert await node.transport.next_sequence() == sequence + 1
    finally:
        server.stop()


async def test_a_restart_that_lost_the_data_gives_every_node_the_same_new_identity(
    redis_server: RedisServer,
) -> None:
    nodes = [Node(RedisTransport.from_url(redis_server.url, **FAST_RECONNECT)) for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node.transport.open(node.recorder))
        identity = nodes[0].transport.identity
        assert {node.transport.identity for node in nodes} == {identity}
        await anyio.to_thread.run_sync(redis_server.restart)
        for node in nodes:
            await node.recorder.wait_for_event("restored")
        assert len({node.transport.identity for node in nodes}) == 1
        assert nodes[0].transport.identity != identity


@pytest.mark.parametrize("own_client", [False, True], ids=["from_url", "callers-client"])
async def test_a_full_connection_pool_is_back_pressure_not_a_lost_broker(
    redis_server: RedisServer, own_client: bool
) -> None:
    """Hundreds of concurrent commands on a pool of 4 connections: every one waits
    for a connection and succeeds; none is reported as an unreachable broker."""
    if own_client:
        client = Redis.from_url(redis_server.url, max_connections=4)  # raises when full
        transport = RedisTransport(client, close_client=True, **FAST_RECONNECT)
    else:
        transport = RedisTransport.from_url(redis_server.url, max_connections=4, **FAST_RECONNECT)
    node = Node(transport)
    failures: list[BaseException] = []
    sequences: list[int] = []

    async def one(index: int) -> None:
        try:
            sequences.append(await transport.mark(f"storm{index % 50}", b"x", 60))
            await transport.publish(channel_name(), b"y")
        except TransportError as error:
            failures.append(error)

    async with transport.open(node.recorder), anyio.create_task_group() as tasks:
        for index in range(600):
            tasks.start_soon(one, index)
    assert failures == []
    assert len(sequences) == 600
    assert sorted(sequences) == list(range(min(sequences), min(sequences) + 600))
