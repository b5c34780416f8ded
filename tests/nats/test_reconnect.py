"""Broker outages: lost/restored once each, resubscription, identity after data loss."""

from __future__ import annotations

import anyio
import nats
import pytest
from nats.aio.msg import Msg

from sessionws import TransportError
from sessionws_nats import NatsTransport
from tests._nats_servers import NatsServer, NatsServerBinary
from tests.nats.helpers import RecordingHandler, client_subscriptions, make_transport

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_restart_keeps_identity_and_resubscribes(nats_server: NatsServer) -> None:
    handler, sender = RecordingHandler(), RecordingHandler()
    node, publisher = make_transport(nats_server.url), make_transport(nats_server.url)
    async with node.open(handler), publisher.open(sender):
        await node.subscribe(["ns.k.before"])
        identity = node.identity
        sequence = await node.mark("ns.close.k", b"kept", ttl=60)
        client = node.client
        assert client is not None
        reconnects = client.stats["reconnects"]

        await nats_server.restart(keep_data=True)
        await handler.wait_for(lambda: handler.events == ["lost", "restored"])
        await sender.wait_for(lambda: sender.events == ["lost", "restored"])
        assert node.connected
        assert node.identity == identity
        # The channel came back with nats-py's own replay: no new subscription object.
        assert client.stats["reconnects"] == reconnects + 1
        assert (await client_subscriptions(nats_server)).count("sessionws.ns.k.before") == 1
        await publisher.publish("ns.k.before", b"after restart")
        await handler.wait_for(lambda: handler.messages == [("ns.k.before", b"after restart")])
        marker = (await node.read_markers(["ns.close.k"]))[0]
        assert marker is not None and (marker.sequence, marker.value) == (sequence, b"kept")
        assert await node.next_sequence() > sequence


async def test_restart_without_store_changes_identity(nats_server: NatsServer) -> None:
    handler = RecordingHandler()
    node = make_transport(nats_server.url)
    async with node.open(handler):
        await node.subscribe(["ns.k.1"])
        identity = node.identity
        await node.mark("ns.close.k", b"gone soon", ttl=60)

        await nats_server.restart(keep_data=False)
        await handler.wait_for(lambda: handler.events == ["lost", "restored"])
        assert node.identity != identity
        assert node.identity.startswith("KV_sessionws@")
        assert (await node.read_markers(["ns.close.k"])) == [None]
        assert await node.current_sequence() == 0  # a new stream: sequences start over


async def test_wanted_while_down_is_subscribed_on_reconnect(nats_server: NatsServer) -> None:
    handler, sender = RecordingHandler(), RecordingHandler()
    node = make_transport(nats_server.url)
    async with node.open(handler):
        nats_server.kill()
        await handler.wait_for(lambda: handler.events == ["lost"])
        with pytest.raises(TransportError):
            await node.subscribe(["ns.k.during"])
        await node.unsubscribe(["ns.k.never"])
        await nats_server.start()
        await handler.wait_for(lambda: handler.events == ["lost", "restored"])
        publisher = make_transport(nats_server.url)
        async with publisher.open(sender):
            await publisher.publish("ns.k.during", b"hello")
            await handler.wait_for(lambda: handler.messages == [("ns.k.during", b"hello")])


async def test_unsubscribed_while_down_stays_unsubscribed(nats_server: NatsServer) -> None:
    handler = RecordingHandler()
    node = make_transport(nats_server.url)
    async with node.open(handler):
        await node.subscribe(["ns.k.keep", "ns.k.drop"])
        nats_server.kill()
        await handler.wait_for(lambda: handler.events == ["lost"])
        await node.unsubscribe(["ns.k.drop"])
        await nats_server.start()
        await handler.wait_for(lambda: handler.events == ["lost", "restored"])
        subjects = await client_subscriptions(nats_server)
        assert "sessionws.ns.k.keep" in subjects
        assert "sessionws.ns.k.drop" not in subjects


async def test_publish_while_down_raises_and_is_not_sent_later(nats_server: NatsServer) -> None:
    handler = RecordingHandler()
    node, publisher = make_transport(nats_server.url), make_transport(nats_server.url)
    publisher_handler = RecordingHandler()
    async with node.open(handler), publisher.open(publisher_handler):
        await node.subscribe(["ns.k.1"])
        nats_server.kill()
        await publisher_handler.wait_for(lambda: publisher_handler.events == ["lost"])
        with pytest.raises(TransportError):
            await publisher.publish("ns.k.1", b"while down")
        await nats_server.start()
        await handler.wait_for(lambda: handler.events == ["lost", "restored"])
        await publisher_handler.wait_for(lambda: publisher_handler.events == ["lost", "restored"])
        await publisher.publish("ns.k.1", b"after")
        await handler.wait_for(lambda: len(handler.messages) >= 1)
        await anyio.sleep(0.05)
        assert handler.messages == [("ns.k.1", b"after")]


async def test_broker_down_at_start_then_up(nats_binary: NatsServerBinary) -> None:
    server = NatsServer(nats_binary)
    try:
        handler = RecordingHandler()
        node = make_transport(server.url, open_timeout=0.2)
        async with node.open(handler):
            assert not node.connected
            assert node.identity == ""
            with pytest.raises(TransportError, match="NATS is unreachable"):
                await node.subscribe(["ns.k.1"])
            await server.start()
            await handler.wait_for(lambda: handler.events == ["restored"])
            assert node.identity.startswith("KV_sessionws@")
            assert "sessionws.ns.k.1" in await client_subscriptions(server)
    finally:
        server.close()


async def test_deleted_bucket_is_recreated_with_a_new_identity(nats_server: NatsServer) -> None:
    handler = RecordingHandler()
    node = make_transport(nats_server.url)
    async with node.open(handler):
        identity = node.identity
        admin = await nats.connect(nats_server.url)
        try:
            await admin.jetstream().delete_key_value("sessionws")
        finally:
            await admin.close()
        with pytest.raises(TransportError):
            await node.mark("ns.close.k", b"", ttl=5)
        await handler.wait_for(lambda: handler.events == ["lost", "restored"])
        assert node.identity != identity
        assert await node.mark("ns.close.k", b"", ttl=5) == 1


async def test_adopted_client_reconnect_is_seen_by_polling(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.url, reconnect_time_wait=0.05, max_reconnect_attempts=-1)
    try:
        handler = RecordingHandler()
        node = NatsTransport(client, poll_interval=0.05)
        async with node.open(handler):
            await node.subscribe(["ns.k.1"])
            await nats_server.restart(keep_data=True)
            await handler.wait_for(lambda: handler.events == ["lost", "restored"])
            await node.publish("ns.k.1", b"still subscribed")
            await handler.wait_for(lambda: handler.messages == [("ns.k.1", b"still subscribed")])
    finally:
        await client.close()


async def test_a_raising_handler_does_not_stop_reconnecting(nats_server: NatsServer) -> None:
    class Failing(RecordingHandler):
        def connection_lost(self) -> None:
            super().connection_lost()
            raise RuntimeError("handler bug")

    handler = Failing()
    node = make_transport(nats_server.url)
    async with node.open(handler):
        await node.subscribe(["ns.k.1"])
        await nats_server.restart(keep_data=True)
        await handler.wait_for(lambda: handler.events == ["lost", "restored"])
        await node.publish("ns.k.1", b"fine")
        await handler.wait_for(lambda: handler.messages == [("ns.k.1", b"fine")])


async def test_nats_py_replays_subscriptions_after_a_reconnect(nats_server: NatsServer) -> None:
    """What the transport relies on: nats-py resubscribes by itself (no duplicates)."""
    received: list[bytes] = []
    reconnected = anyio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    async def on_message(message: Msg) -> None:
        received.append(message.data)

    client = await nats.connect(
        nats_server.url, reconnect_time_wait=0.05, max_reconnect_attempts=-1, reconnected_cb=on_reconnect
    )
    try:
        await client.subscribe("raw.subject", cb=on_message)
        await client.flush()
        await nats_server.restart(keep_data=True)
        with anyio.fail_after(10):
            await reconnected.wait()
        assert (await client_subscriptions(nats_server)).count("raw.subject") == 1
        await client.publish("raw.subject", b"after the restart")
        with anyio.fail_after(5):
            while not received:
                await anyio.sleep(0.01)
        assert received == [b"after the restart"]
    finally:
        await client.close()
