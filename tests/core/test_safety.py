"""Contract line 8: versioned, signed commands; bad broker messages are dropped and counted."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sessionws import MemoryHub, MemoryTransport, SessionRegistry
from sessionws._wire import Command, Names, WireCodec, WireError
from tests._helpers import FAST, wait_for
from tests.core.helpers import RecordingConnection, cluster, settle

pytestmark = pytest.mark.anyio

KEYS = ["a-signing-key-of-32-bytes-000000", "an-older-key-still-accepted-0000"]


def test_commands_round_trip_with_text_and_binary_data() -> None:
    codec = WireCodec()
    for data in ("héllo\n", b"\x00\xff", None):
        command = Command("send", "node", sequence=7, data=data, exclude="node.1")
        assert codec.decode(codec.encode(command)) == command


def test_an_unnumbered_command_decodes_with_the_sequence_spliced_in() -> None:
    """What a broker that takes the sequence and publishes in one step builds."""
    codec = WireCodec()
    command = Command("close", "node", code=4000, reason='a "quoted"\nreason', exclude="node.3", query="q1")
    halves = codec.encode_unnumbered(command)
    assert halves is not None
    head, tail = halves
    for sequence in (1, 987654321012345678):
        decoded = codec.decode(head + str(sequence).encode() + tail)
        assert decoded == dataclasses.replace(command, sequence=sequence)
    assert WireCodec(KEYS).encode_unnumbered(command) is None  # a signature must cover the sequence


def test_signed_commands_verify_with_every_configured_key() -> None:
    old = WireCodec([KEYS[1]])
    rotated = WireCodec(KEYS)
    command = Command("close", "n", sequence=3, code=1000)
    assert rotated.decode(old.encode(command)) == command
    assert rotated.decode(rotated.encode(command)) == command


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"[1,2]", "malformed"),
        (b'{"op":"close","o":"n"}', "malformed"),
        (b'{"v":2,"op":"close","o":"n"}', "version"),
        (b'{"v":1,"op":"explode","o":"n"}', "op"),
        (b'{"v":1,"op":"close","o":""}', "malformed"),
        (b'{"v":1,"op":"close","o":"n","s":"7"}', "malformed"),
        (b'{"v":1,"op":"send","o":"n","b":"***"}', "malformed"),
    ],
)
def test_bad_payloads_are_rejected_with_their_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError) as raised:
        WireCodec().decode(payload)
    assert raised.value.reason == reason


def test_unsigned_and_forged_commands_are_rejected_when_signing_is_on() -> None:
    codec = WireCodec(KEYS)
    body = WireCodec().encode(Command("close", "n", sequence=1))
    with pytest.raises(WireError, match="unsigned"):
        codec.decode(body)
    forged = WireCodec(["somebody-elses-key-000000000000"]).encode(Command("close", "n", sequence=1))
    with pytest.raises(WireError, match="forged"):
        codec.decode(forged)
    tampered = codec.encode(Command("close", "n", sequence=1, code=1000)).replace(b"1000", b"4000")
    with pytest.raises(WireError, match="forged"):
        codec.decode(tampered)


def test_bad_signing_keys_and_namespaces_are_refused() -> None:
    with pytest.raises(TypeError, match="list of keys"):
        WireCodec("one-key-not-in-a-list-0000000000")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        WireCodec(["short"])
    with pytest.raises(ValueError, match="namespace"):
        Names("my app")


def test_broker_names_never_contain_the_key() -> None:
    names = Names("app")
    key = "user:alice@example.com"
    key_hash = names.key_hash(key)
    for name in (names.channel(key_hash), names.close_marker(key_hash), names.revoke_marker(key_hash)):
        assert "alice" not in name and name.startswith("app.")
    assert Names("app", "secret").key_hash(key) != key_hash
    assert Names("other").key_hash(key) != key_hash


async def test_bad_messages_on_the_broker_are_dropped_counted_and_harmless() -> None:
    """Forged, unsigned, replayed, malformed and unknown-version commands change nothing."""
    hub = MemoryHub()
    async with (
        SessionRegistry(MemoryTransport(hub), node_id="a", signing_keys=KEYS, **FAST) as node_a,
        SessionRegistry(MemoryTransport(hub), node_id="b", signing_keys=KEYS, **FAST) as node_b,
    ):
        victim = RecordingConnection()
        await node_b.register(victim, "session-a")
        key_hash = node_b.names.key_hash("session-a")
        channel = node_b.names.channel(key_hash)
        attacker = MemoryTransport(hub)
        captured: list[bytes] = []

        class Sniffer:
            def message_received(self, channel: str, payload: bytes) -> None:
                captured.append(payload)

            def connection_lost(self) -> None: ...

            def connection_restored(self) -> None: ...

        async with attacker.open(Sniffer()):
            await attacker.subscribe([channel])
            unsigned = WireCodec().encode(Command("close", "evil", sequence=10**6, code=1000))
            forged = WireCodec(["not-the-cluster-key-000000000000"]).encode(
                Command("close", "evil", sequence=10**6, code=1000)
            )
            signed = WireCodec(KEYS)
            for payload in (
                unsigned,
                forged,
                b"\x00unsigned garbage",
                signed.sign(b"\x00signed garbage"),
                signed.encode(
                    Command(
                        "send",
                        "evil",
                        sequence=0,
                        data="no sequence",
                        key=key_hash,
                        epoch=node_b.transport.identity,
                    )
                ),
                signed.sign(json.dumps({"v": 99, "op": "close", "o": "evil"}).encode()),
                signed.sign(json.dumps({"v": 1, "op": "explode", "o": "evil"}).encode()),
            ):
                await attacker.publish(channel, payload)
            await settle()
            assert victim.close_code is None
            dropped = node_b.stats()["dropped_by_reason"]
            assert dropped == {"unsigned": 2, "forged": 1, "malformed": 2, "version": 1, "op": 1}
            assert node_b.stats()["commands_dropped"] == 7

            # A genuine command, recorded and replayed later, is applied once.
            await node_a.send_all("session-a", "hello")
            await wait_for(lambda: victim.sent == ["hello"])
            await wait_for(lambda: len(captured) >= 8)
            await attacker.publish(channel, captured[-1])
            await settle()
            assert victim.sent == ["hello"]
            assert node_b.stats()["dropped_by_reason"]["replayed"] == 1
            assert victim.close_code is None


async def test_a_replay_from_a_node_that_has_left_is_dropped() -> None:
    async with cluster(3) as nodes:
        connection = RecordingConnection()
        await nodes[1].register(connection, "session-a")
        channel = nodes[1].names.channel(nodes[1].names.key_hash("session-a"))
        recorded: list[bytes] = []
        original = nodes[1].message_received

        def recording(channel: str, payload: bytes) -> None:
            recorded.append(payload)
            original(channel, payload)

        nodes[1].message_received = recording  # type: ignore[method-assign]
        await nodes[2].send_all("session-a", "once")
        await wait_for(lambda: connection.sent == ["once"])
        await nodes[2].__aexit__(None, None, None)
        await wait_for(lambda: "node2" not in nodes[1].live_nodes())
        await nodes.transport(0).publish(channel, recorded[-1])
        await settle()
        assert connection.sent == ["once"]


async def test_own_commands_are_ignored_unread_and_only_they() -> None:
    """A node drops its own commands (they come back on the channels it holds) before
    decoding them; a command whose text merely quotes the node's origin is applied."""
    async with cluster(2) as nodes:
        connection = RecordingConnection()
        await nodes[0].register(connection, "session-a")
        channel = nodes[0].names.channel(nodes[0].names.key_hash("session-a"))
        before = nodes[0].stats()
        own = b'{"v":1,"op":"close","o":"node0","s":"not even valid"}'
        await nodes[1].transport.publish(channel, own)
        await settle()
        after = nodes[0].stats()
        assert after["commands_received"] == before["commands_received"]
        assert after["commands_dropped"] == before["commands_dropped"]  # not even counted as malformed
        quoting = '"o":"node0" said goodbye'
        await nodes[1].send_all("session-a", quoting)
        await nodes[1].close_all("session-a", reason=quoting)
        await wait_for(lambda: connection.close_code == 1000)
        assert connection.sent == [quoting]
        assert connection.close_reason == quoting
