"""NatsTransport against a real nats-server: channels, markers, sequence, lifecycle."""

from __future__ import annotations

import anyio
import nats
import pytest

from sessionws import Transport, TransportError
from sessionws_nats import NatsTransport
from tests._nats_servers import NatsServer, NatsServerBinary
from tests.nats.helpers import (
    RecordingHandler,
    client_subscriptions,
    make_transport,
    wait_for_subscriptions,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_is_a_transport(nats_server: NatsServer) -> None:
    transport = make_transport(nats_server.url)
    assert isinstance(transport, Transport)
    async with transport.open(RecordingHandler()):
        assert transport.connected
        assert transport.identity.startswith("KV_sessionws@")


async def test_subscribe_publish_receive(nats_server: NatsServer) -> None:
    handler = RecordingHandler()
    transport = make_transport(nats_server.url)
    async with transport.open(handler):
        await transport.subscribe(["myapp.k.abc", "myapp.close:odd..name", "myapp.nodes"])
        assert await transport.publish("myapp.k.abc", b"one") is None
        await transport.publish("myapp.close:odd..name", b"two")
        await transport.publish("myapp.other", b"nobody listens")
        await handler.wait_for(lambda: len(handler.messages) == 2)
        assert handler.messages == [("myapp.k.abc", b"one"), ("myapp.close:odd..name", b"two")]


async def test_two_nodes_and_unsubscribe(nats_server: NatsServer) -> None:
    first, second = RecordingHandler(), RecordingHandler()
    a, b = make_transport(nats_server.url), make_transport(nats_server.url)
    async with a.open(first), b.open(second):
        await a.subscribe(["ns.k.1", "ns.k.2"])
        await a.subscribe(["ns.k.1"])  # idempotent
        await b.publish("ns.k.1", b"x")
        await first.wait_for(lambda: len(first.messages) == 1)
        await a.unsubscribe(["ns.k.1", "ns.k.never-subscribed"])
        await a.unsubscribe(["ns.k.1"])  # idempotent
        await b.publish("ns.k.1", b"after unsubscribe")
        await b.publish("ns.k.2", b"still here")
        await first.wait_for(lambda: len(first.messages) == 2)
        assert first.messages == [("ns.k.1", b"x"), ("ns.k.2", b"still here")]
        assert second.messages == []


async def test_order_across_channels_is_kept(nats_server: NatsServer) -> None:
    handler = RecordingHandler()
    publisher, subscriber = make_transport(nats_server.url), make_transport(nats_server.url)
    channels = [f"ns.k.{index}" for index in range(50)]
    async with publisher.open(RecordingHandler()), subscriber.open(handler):
        await subscriber.subscribe(channels)
        for index in range(500):
            await publisher.publish(channels[index % 50], str(index).encode())
        await handler.wait_for(lambda: len(handler.messages) == 500)
        assert [int(payload) for _, payload in handler.messages] == list(range(500))


@pytest.mark.parametrize("shared_dispatch", [True, False], ids=["shared-dispatch", "callback-tasks"])
async def test_many_channels_at_once(nats_server: NatsServer, shared_dispatch: bool) -> None:
    handler = RecordingHandler()
    transport = make_transport(nats_server.url, shared_dispatch=shared_dispatch)
    channels = [f"ns.k.{index:04x}" for index in range(2000)]
    async with transport.open(handler):
        await transport.subscribe(channels)
        # Confirmed means the server holds them all already: no waiting here.
        subjects = await client_subscriptions(nats_server)
        assert {f"sessionws.{channel}" for channel in channels} <= set(subjects)
        for channel in channels[::100]:
            await transport.publish(channel, channel.encode())
        await handler.wait_for(lambda: len(handler.messages) == 20)
        assert sorted(handler.messages) == sorted((c, c.encode()) for c in channels[::100])
        await transport.unsubscribe(channels)
        assert not any(
            subject.startswith("sessionws.") for subject in await client_subscriptions(nats_server)
        )


async def test_a_raising_handler_does_not_deafen_the_connection(nats_server: NatsServer) -> None:
    class Failing(RecordingHandler):
        def message_received(self, channel: str, payload: bytes) -> None:
            super().message_received(channel, payload)
            if payload == b"boom":
                raise RuntimeError("handler bug")

    handler = Failing()
    transport = make_transport(nats_server.url)
    async with transport.open(handler):
        await transport.subscribe(["ns.k.1"])
        await transport.publish("ns.k.1", b"boom")
        await transport.publish("ns.k.1", b"after")
        await handler.wait_for(lambda: len(handler.messages) == 2)


async def test_max_payload_comes_from_the_server(nats_binary: NatsServerBinary) -> None:
    async with NatsServer(nats_binary, max_payload=4096) as server:
        transport = make_transport(server.url)
        async with transport.open(RecordingHandler()):
            assert transport.max_payload == 4096
            await transport.publish("ns.k.1", b"x" * 4096)
            with pytest.raises(ValueError, match="exceeds the broker limit of 4096"):
                await transport.publish("ns.k.1", b"x" * 4097)


async def test_markers_and_the_sequence(nats_server: NatsServer) -> None:
    transport = make_transport(nats_server.url)
    async with transport.open(RecordingHandler()):
        start = await transport.current_sequence()
        first = await transport.next_sequence()
        assert first > start
        marked = await transport.mark("ns.close.abc", b"closed", ttl=60)
        assert marked > first
        assert await transport.current_sequence() == marked
        again = await transport.mark("ns.close.abc", b"closed again", ttl=60)
        assert again > marked
        await transport.mark("ns.revoke:odd..key", b"", ttl=60)
        markers = await transport.read_markers(
            ["ns.close.abc", "ns.close.missing", "ns.close.abc", "ns.revoke:odd..key"]
        )
        assert markers[0] is not None and markers[0] == markers[2]
        assert (markers[0].sequence, markers[0].value) == (again, b"closed again")
        assert markers[1] is None
        assert markers[3] is not None and markers[3].value == b""
        assert await transport.read_markers([]) == []


async def test_reading_many_markers_in_chunks(nats_server: NatsServer) -> None:
    transport = make_transport(nats_server.url)
    names = [f"ns.close.{index:05x}" for index in range(1500)]
    async with transport.open(RecordingHandler()):
        sequences = {}
        for name in names[::3]:
            sequences[name] = await transport.mark(name, name.encode(), ttl=60)
        markers = await transport.read_markers(names)
    assert len(markers) == len(names)
    for name, marker in zip(names, markers, strict=True):
        if name in sequences:
            assert marker is not None and (marker.sequence, marker.value) == (sequences[name], name.encode())
        else:
            assert marker is None


async def test_markers_expire(nats_server: NatsServer) -> None:
    transport = make_transport(nats_server.url)
    async with transport.open(RecordingHandler()):
        await transport.mark("ns.close.short", b"x", ttl=0.2)  # rounded up to NATS' 1 s minimum
        await transport.mark("ns.close.long", b"y", ttl=30)
        assert (await transport.read_markers(["ns.close.short"]))[0] is not None
        with anyio.fail_after(5):
            while (await transport.read_markers(["ns.close.short"]))[0] is not None:
                await anyio.sleep(0.1)
        long_marker = (await transport.read_markers(["ns.close.long"]))[0]
        assert long_marker is not None and long_marker.value == b"y"
        with pytest.raises(ValueError, match="ttl"):
            await transport.mark("ns.close.bad", b"", ttl=0)


async def test_the_sequence_is_shared_by_nodes(nats_server: NatsServer) -> None:
    a, b = make_transport(nats_server.url), make_transport(nats_server.url)
    async with a.open(RecordingHandler()), b.open(RecordingHandler()):
        assert a.identity == b.identity
        taken = [await a.next_sequence(), await b.next_sequence(), await a.mark("ns.close.k", b"", ttl=5)]
        assert taken == sorted(taken) and len(set(taken)) == 3
        assert await b.current_sequence() == taken[-1]
        marker = (await b.read_markers(["ns.close.k"]))[0]
        assert marker is not None and marker.sequence == taken[-1]


async def test_shutdown_drains_and_leaves_no_subscription(nats_server: NatsServer) -> None:
    transport = make_transport(nats_server.url)
    async with transport.open(RecordingHandler()):
        await transport.subscribe([f"ns.k.{index}" for index in range(100)])
        assert len(await client_subscriptions(nats_server)) > 100
        client = transport.client
        assert client is not None
    assert client.is_closed
    assert not transport.connected
    await wait_for_subscriptions(nats_server, lambda subjects: subjects == [])


async def test_a_ready_made_client_is_adopted_and_left_open(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.url)
    try:
        before = await client_subscriptions(nats_server)
        handler = RecordingHandler()
        transport = NatsTransport(client, poll_interval=0.05)
        async with transport.open(handler):
            assert transport.connected
            await transport.subscribe(["ns.k.1"])
            await transport.publish("ns.k.1", b"hi")
            await handler.wait_for(lambda: handler.messages == [("ns.k.1", b"hi")])
            await transport.mark("ns.close.1", b"", ttl=5)
        assert client.is_connected
        # What stays is nats-py's own request inbox (made for the JetStream calls).
        left = await wait_for_subscriptions(nats_server, lambda subjects: len(subjects) <= len(before) + 1)
        assert not any(subject.startswith("sessionws.") for subject in left)
    finally:
        await client.close()


async def test_use_outside_open_is_a_clear_error(nats_server: NatsServer) -> None:
    transport = make_transport(nats_server.url)
    with pytest.raises(RuntimeError, match="inside `async with transport"):
        await transport.subscribe(["ns.k.1"])
    with pytest.raises(RuntimeError, match="inside `async with transport"):
        await transport.publish("ns.k.1", b"")
    async with transport.open(RecordingHandler()):
        with pytest.raises(RuntimeError, match="already open"):
            async with transport.open(RecordingHandler()):
                pass


async def test_operations_fail_fast_while_the_broker_is_down(nats_server: NatsServer) -> None:
    handler = RecordingHandler()
    transport = make_transport(nats_server.url, reconnect_time_wait=0.2)
    async with transport.open(handler):
        nats_server.kill()
        await handler.wait_for(lambda: handler.events == ["lost"])
        assert not transport.connected
        with anyio.fail_after(1):  # every call raises at once: nothing waits for a timeout
            for call in (
                transport.publish("ns.k.1", b"x"),
                transport.subscribe(["ns.k.1"]),
                transport.mark("ns.close.1", b"", 5),
                transport.next_sequence(),
                transport.current_sequence(),
                transport.read_markers(["ns.close.1"]),
            ):
                with pytest.raises(TransportError, match="NATS is unreachable"):
                    await call
        await transport.unsubscribe(["ns.k.2"])  # forgetting a channel needs no broker
