"""The transport contract: every transport passes these tests unchanged.

The contract itself is the docstring of :class:`sessionws.transport.Transport`; the brokers
are listed in ``_backends.py``.
"""

from __future__ import annotations

import os

import anyio
import pytest

from sessionws._errors import TransportError
from sessionws._protocols import Marker, Transport
from tests.transports._backends import Backend, Recorder, channel_name, open_nodes

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def is_connected(transport: Transport) -> bool:
    """``transport.connected``, read afresh (mypy narrows a property after an assert)."""
    return transport.connected


def receivers(backend: Backend, count: int) -> int | None:
    """What ``publish`` should return when ``count`` nodes are subscribed."""
    return count if backend.counts_receivers else None


# --- pub/sub ----------------------------------------------------------------------


async def test_messages_from_one_publisher_arrive_in_order(backend: Backend) -> None:
    channel = channel_name()
    async with open_nodes(backend, 2) as (subscriber, publisher):
        await subscriber.transport.subscribe([channel])
        sent = [f"message {index}".encode() for index in range(300)]
        for payload in sent:
            await publisher.transport.publish(channel, payload)
        assert await subscriber.recorder.wait_for_messages(channel, len(sent)) == sent


async def test_publish_returns_the_number_of_subscribed_nodes(backend: Backend) -> None:
    channel = channel_name()
    async with open_nodes(backend, 3) as (first, second, publisher):
        assert await publisher.transport.publish(channel, b"nobody") == receivers(backend, 0)
        await first.transport.subscribe([channel])
        await second.transport.subscribe([channel])
        assert await publisher.transport.publish(channel, b"both") == receivers(backend, 2)
        await second.transport.unsubscribe([channel])
        assert await publisher.transport.publish(channel, b"first") == receivers(backend, 1)
        assert await first.recorder.wait_for_messages(channel, 2) == [b"both", b"first"]


async def test_subscribe_is_idempotent(backend: Backend) -> None:
    channel, sentinel = channel_name(tag="same"), channel_name(tag="same")
    async with open_nodes(backend, 2) as (subscriber, publisher):
        await subscriber.transport.subscribe([channel, sentinel])
        await subscriber.transport.subscribe([channel])
        await subscriber.transport.subscribe([channel, channel])
        assert await publisher.transport.publish(channel, b"once") == receivers(backend, 1)
        await publisher.transport.publish(sentinel, b"done")
        await subscriber.recorder.wait_for_messages(sentinel, 1)
        assert subscriber.recorder.received(channel) == [b"once"]


async def test_many_channels_subscribe_and_unsubscribe_in_one_call(backend: Backend) -> None:
    channels = [channel_name("batch") for _ in range(1500)]
    async with open_nodes(backend, 2) as (subscriber, publisher):
        await subscriber.transport.subscribe(channels)
        for channel in channels:
            assert await publisher.transport.publish(channel, channel.encode()) == receivers(backend, 1)
        await subscriber.recorder.wait_for(lambda: len(subscriber.recorder.messages) == len(channels))
        assert sorted(subscriber.recorder.messages) == sorted((c, c.encode()) for c in channels)

        await subscriber.transport.unsubscribe(channels)
        for channel in channels[::50]:
            assert await publisher.transport.publish(channel, b"late") == receivers(backend, 0)


async def test_unsubscribe_stops_delivery_and_is_idempotent(backend: Backend) -> None:
    channel, sentinel = channel_name(tag="same"), channel_name(tag="same")
    async with open_nodes(backend, 2) as (subscriber, publisher):
        await subscriber.transport.subscribe([channel, sentinel])
        await subscriber.transport.unsubscribe([channel])
        await subscriber.transport.unsubscribe([channel])
        await subscriber.transport.unsubscribe([channel_name("never-subscribed")])
        assert await publisher.transport.publish(channel, b"after") == receivers(backend, 0)
        await publisher.transport.publish(sentinel, b"done")
        await subscriber.recorder.wait_for_messages(sentinel, 1)
        assert subscriber.recorder.received(channel) == []


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00", bytes(range(256)), b"\xff\xfe\xfd not utf-8", "h\u00e9llo \u2603".encode(), b"a:b:c\r\n"],
    ids=["empty", "nul", "all-bytes", "not-utf8", "utf8", "separators"],
)
async def test_payloads_arrive_unchanged(backend: Backend, payload: bytes) -> None:
    channel = channel_name()
    async with open_nodes(backend, 2) as (subscriber, publisher):
        await subscriber.transport.subscribe([channel])
        await publisher.transport.publish(channel, payload)
        assert await subscriber.recorder.wait_for_messages(channel, 1) == [payload]


async def test_payload_of_max_payload_bytes_is_delivered_and_larger_is_refused(backend: Backend) -> None:
    channel = channel_name()
    async with open_nodes(backend, 2) as (subscriber, publisher):
        assert publisher.transport.max_payload == 1 << 20
        payload = os.urandom(publisher.transport.max_payload)
        await subscriber.transport.subscribe([channel])
        await publisher.transport.publish(channel, payload)
        assert await subscriber.recorder.wait_for_messages(channel, 1) == [payload]
        with pytest.raises(ValueError, match=r"max_payload|limit"):
            await publisher.transport.publish(channel, payload + b"!")


async def test_max_payload_is_configurable(backend: Backend) -> None:
    async with open_nodes(backend, 1, max_payload=16) as (node,):
        assert node.transport.max_payload == 16
        await node.transport.publish(channel_name(), b"x" * 16)
        with pytest.raises(ValueError, match=r"max_payload|limit"):
            await node.transport.publish(channel_name(), b"x" * 17)


# --- markers and the sequence -------------------------------------------------------


async def test_mark_returns_strictly_increasing_sequences_across_nodes(backend: Backend) -> None:
    key = channel_name("marker")
    async with open_nodes(backend, 2) as (first, second):
        sequences = []
        for index in range(10):
            node = (first, second)[index % 2]
            sequences.append(await node.transport.mark(key, f"v{index}".encode(), 30))
        assert sequences == sorted(set(sequences))
        assert await first.transport.read_markers([key]) == [Marker(sequences[-1], b"v9")]


async def test_read_markers_returns_latest_value_and_none_for_missing(backend: Backend) -> None:
    present, missing = channel_name("marker"), channel_name("marker")
    async with open_nodes(backend, 1) as (node,):
        await node.transport.mark(present, b"old", 30)
        sequence = await node.transport.mark(present, b"\xffnew:value", 30)
        assert await node.transport.read_markers([missing, present, missing]) == [
            None,
            Marker(sequence, b"\xffnew:value"),
            None,
        ]
        assert await node.transport.read_markers([]) == []


async def test_read_markers_batches_many_keys(backend: Backend) -> None:
    keys = [channel_name("marker") for _ in range(2500)]
    async with open_nodes(backend, 1) as (node,):
        marked = {
            index: await node.transport.mark(keys[index], str(index).encode(), 30)
            for index in (0, 999, 1000, 2499)
        }
        markers = await node.transport.read_markers(keys)
        assert len(markers) == len(keys)
        for index, marker in enumerate(markers):
            expected = Marker(marked[index], str(index).encode()) if index in marked else None
            assert marker == expected


async def test_markers_expire_after_their_ttl(backend: Backend) -> None:
    key = channel_name("marker")
    async with open_nodes(backend, 1) as (node,):
        sequence = await node.transport.mark(key, b"soon gone", backend.shortest_ttl)
        assert await node.transport.read_markers([key]) == [Marker(sequence, b"soon gone")]
        await anyio.sleep(backend.shortest_ttl * 2 + 0.05)
        assert await node.transport.read_markers([key]) == [None]


async def test_mark_refuses_a_ttl_that_is_not_positive(backend: Backend) -> None:
    async with open_nodes(backend, 1) as (node,):
        for ttl in (0, -1):
            with pytest.raises(ValueError, match="ttl"):
                await node.transport.mark(channel_name("marker"), b"v", ttl)


async def test_sequence_is_monotonic_and_shared(backend: Backend) -> None:
    async with open_nodes(backend, 2) as (first, second):
        start = await first.transport.current_sequence()
        taken = await first.transport.next_sequence()
        assert taken > start
        assert await second.transport.current_sequence() >= taken
        marked = await second.transport.mark(channel_name("marker"), b"v", 30)
        assert marked > taken
        assert await first.transport.current_sequence() >= marked

        results: list[int] = []

        async def take(node_index: int) -> None:
            for _ in range(50):
                results.append(await (first, second)[node_index].transport.next_sequence())

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(take, 0)
            tasks.start_soon(take, 1)
        assert len(set(results)) == 100
        assert min(results) > marked


# --- lifecycle ----------------------------------------------------------------------


async def test_transport_must_be_open_to_be_used(backend: Backend) -> None:
    transport = backend.make_transport()
    with pytest.raises(RuntimeError, match="open"):
        await transport.subscribe([channel_name()])
    with pytest.raises(RuntimeError, match="open"):
        await transport.publish(channel_name(), b"x")
    async with transport.open(Recorder()):
        assert transport.connected
        assert transport.identity
        with pytest.raises(RuntimeError, match="already open"):
            async with transport.open(Recorder()):
                raise AssertionError("a second open() must not be entered")
    assert not transport.connected


# --- broker loss ----------------------------------------------------------------------


async def test_reconnect_after_broker_restart_resubscribes_and_reports_new_identity(backend: Backend) -> None:
    channels = [channel_name(f"kept{index}") for index in range(30)]
    async with open_nodes(backend, 2) as (subscriber, publisher):
        await subscriber.transport.subscribe(channels)
        identity = subscriber.transport.identity
        assert publisher.transport.identity == identity

        await backend.kill()
        await subscriber.recorder.wait_for_event("lost")
        assert not subscriber.transport.connected
        await backend.restart()
        await subscriber.recorder.wait_for_event("restored")
        await publisher.recorder.wait_for_event("restored")

        assert subscriber.recorder.events == ["lost", "restored"]
        assert is_connected(subscriber.transport)
        assert subscriber.transport.identity != identity
        assert publisher.transport.identity == subscriber.transport.identity
        # The marker store works again (a restarted Redis also forgot its scripts).
        key = channel_name("marker")
        sequence = await publisher.transport.mark(key, b"after restart", 30)
        assert await subscriber.transport.read_markers([key]) == [Marker(sequence, b"after restart")]
        # Resubscribed before "restored": no subscribe call, no waiting.
        for channel in channels:
            assert await publisher.transport.publish(channel, b"again") == receivers(backend, 1)
        await subscriber.recorder.wait_for(lambda: len(subscriber.recorder.messages) == len(channels))


async def test_subscribe_while_broker_is_down_raises_and_subscribes_after_reconnect(backend: Backend) -> None:
    channel = channel_name()
    async with open_nodes(backend, 2) as (subscriber, publisher):
        await backend.kill()
        await subscriber.recorder.wait_for_event("lost")
        with pytest.raises(TransportError):
            await subscriber.transport.subscribe([channel])
        await backend.restart()
        await subscriber.recorder.wait_for_event("restored")
        await publisher.recorder.wait_for_event("restored")
        assert await publisher.transport.publish(channel, b"hello") == receivers(backend, 1)
        assert await subscriber.recorder.wait_for_messages(channel, 1) == [b"hello"]


async def test_unsubscribe_while_broker_is_down_is_not_undone_by_reconnect(backend: Backend) -> None:
    channel, sentinel = channel_name(tag="same"), channel_name(tag="same")
    async with open_nodes(backend, 2) as (subscriber, publisher):
        await subscriber.transport.subscribe([channel, sentinel])
        await backend.kill()
        await subscriber.recorder.wait_for_event("lost")
        await subscriber.transport.unsubscribe([channel])
        await backend.restart()
        await subscriber.recorder.wait_for_event("restored")
        await publisher.recorder.wait_for_event("restored")
        assert await publisher.transport.publish(channel, b"gone") == receivers(backend, 0)
        await publisher.transport.publish(sentinel, b"done")
        await subscriber.recorder.wait_for_messages(sentinel, 1)
        assert subscriber.recorder.received(channel) == []


async def test_broker_calls_while_down_raise_transport_error(backend: Backend) -> None:
    async with open_nodes(backend, 1) as (node,):
        await backend.kill()
        await node.recorder.wait_for_event("lost")
        with pytest.raises(TransportError):
            await node.transport.publish(channel_name(), b"x")
        with pytest.raises(TransportError):
            await node.transport.mark(channel_name("marker"), b"v", 30)
        with pytest.raises(TransportError):
            await node.transport.read_markers([channel_name("marker")])
        with pytest.raises(TransportError):
            await node.transport.next_sequence()
        await backend.restart()
        await node.recorder.wait_for_event("restored")
        assert await node.transport.next_sequence() >= 1


async def test_mark_and_publish_sets_the_marker_and_delivers_in_one_step(backend: Backend) -> None:
    """Optional: where the broker allows, the marker and the publish are one atomic step;
    an older sequence never overwrites a newer marker."""
    channel, key = channel_name(), channel_name("marker")
    supported = True
    async with open_nodes(backend, 2) as (subscriber, publisher):
        combined = getattr(publisher.transport, "mark_and_publish", None)
        if combined is None:
            supported = False
        else:
            await subscriber.transport.subscribe([channel])
            newer = await publisher.transport.next_sequence()
            older = newer - 1
            assert await combined(key, b"newer", 60.0, newer, channel, b"command 1") == receivers(backend, 1)
            assert await publisher.transport.read_markers([key]) == [Marker(newer, b"newer")]
            await combined(key, b"older", 60.0, older, channel, b"command 2")
            assert await publisher.transport.read_markers([key]) == [Marker(newer, b"newer")]
            assert await subscriber.recorder.wait_for_messages(channel, 2) == [b"command 1", b"command 2"]
    if not supported:
        pytest.skip(f"{backend.name}: no atomic marker + publish (the registry calls mark, then publish)")


async def test_mark_and_publish_numbered_takes_the_sequence_marks_and_delivers(backend: Backend) -> None:
    """Optional: the broker takes the sequence, writes the marker with it and publishes the
    command with the sequence spliced between its two halves, in one step."""
    channel, key = channel_name(), channel_name("marker")
    supported = True
    async with open_nodes(backend, 2) as (subscriber, publisher):
        numbered = getattr(publisher.transport, "mark_and_publish_numbered", None)
        if numbered is None:
            supported = False
        else:
            await subscriber.transport.subscribe([channel])
            before = await publisher.transport.next_sequence()
            sequence, count = await numbered(key, b"closed", 60.0, channel, b'{"s":', b',"op":"close"}')
            assert sequence > before
            assert count == receivers(backend, 1)
            assert await publisher.transport.read_markers([key]) == [Marker(sequence, b"closed")]
            second, _ = await numbered(key, b"again", 60.0, channel, b"<", b">")
            assert second > sequence
            assert await publisher.transport.read_markers([key]) == [Marker(second, b"again")]
            assert await subscriber.recorder.wait_for_messages(channel, 2) == [
                b'{"s":' + str(sequence).encode() + b',"op":"close"}',
                b"<" + str(second).encode() + b">",
            ]
            assert await publisher.transport.current_sequence() == second
    if not supported:
        pytest.skip(f"{backend.name}: the sequence is taken apart from the publish (two steps)")
